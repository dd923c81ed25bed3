"""OpenTelemetry spans through a real gateway: one per request, a child per attempt, GenAI attributes; and
the OTLP export to a collector on loopback."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from openai import OpenAI
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from lifeline.config.schema import TracingSettings
from lifeline.testing import FaultWall
from lifeline.testing.gateway import run_gateway
from lifeline.tracing import Tracing
from tests.conftest import make_config, wall_target

MESSAGES = [{"role": "user", "content": "hello there"}]


def traced_config(wall: FaultWall, tmp_path: Path, **tracing: Any) -> Any:
    return make_config(
        {"primary": wall_target(wall, "status?code=503"), "backup": wall_target(wall, "ok?served_model=m-1")},
        retry={"max_retries": 0},
        tracing={"enabled": True, **tracing},
        accounting={"data_dir": str(tmp_path)},
    )


def test_a_span_per_request_and_a_child_per_attempt(wall: FaultWall, tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    with run_gateway(traced_config(wall, tmp_path), span_exporter=exporter) as gw:
        client = OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=50, temperature=0.5)
        stream = client.chat.completions.create(model="chat", messages=MESSAGES, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        for _ in range(1500):  # the stream's span ends just after its last event: wait for it (a guard)
            if len([s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]) >= 2:
                break
            time.sleep(0.02)
    spans = exporter.get_finished_spans()
    requests = [s for s in spans if s.kind is SpanKind.SERVER]
    attempts = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert len(requests) == 2 and len(attempts) == 4
    first = requests[0]
    assert first.name == "chat chat"
    attrs = dict(first.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "chat"
    assert attrs["gen_ai.request.max_tokens"] == 50 and attrs["gen_ai.request.temperature"] == 0.5
    assert attrs["gen_ai.response.model"] == "m-1"
    assert attrs["gen_ai.usage.output_tokens"] == 12
    assert attrs["lifeline.target"] == "backup" and attrs["lifeline.attempts"] == 2
    assert attrs["http.response.status_code"] == 200
    for request in requests:
        children = [a for a in attempts if a.parent is not None and a.parent.span_id == request.context.span_id]
        assert [dict(c.attributes or {})["lifeline.target"] for c in children] == ["primary", "backup"]
        failed, ok = children
        assert failed.status.status_code is StatusCode.ERROR
        assert dict(failed.attributes or {})["error.type"] == "unavailable"
        assert dict(failed.attributes or {})["gen_ai.provider.name"] == "openai"
        assert dict(ok.attributes or {})["lifeline.attempt.outcome"] == "ok"
        assert request.context.trace_id == failed.context.trace_id


def test_a_failed_request_is_an_error_span(wall: FaultWall, tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    config = make_config(
        {"only": wall_target(wall, "status?code=401")},
        tracing={"enabled": True},
        accounting={"data_dir": str(tmp_path)},
    )
    with run_gateway(config, span_exporter=exporter) as gw:
        assert (
            httpx.post(f"{gw.base_url}/chat/completions", json={"model": "chat", "messages": MESSAGES}).status_code
            == 502
        )
    (request,) = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert request.status.status_code is StatusCode.ERROR
    assert dict(request.attributes or {})["http.response.status_code"] == 502


def test_tracing_off_is_a_shared_no_op() -> None:
    tracing = Tracing(TracingSettings())
    assert tracing.start_request("chat", "a", "r", {}) is None
    assert tracing.attempt("t", "openai", "m") is tracing.attempt("u", "openai", "n")


class _Collector(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        _Collector.received.append((self.path, self.headers.get("content-type", ""), body))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    _Collector.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    server.shutdown()


def test_spans_are_exported_over_otlp(wall: FaultWall, tmp_path: Path, collector: str) -> None:
    config = traced_config(wall, tmp_path, endpoint=collector, service_name="lifeline-test")
    with run_gateway(config) as gw:
        httpx.post(f"{gw.base_url}/chat/completions", json={"model": "chat", "messages": MESSAGES})
    # the batch processor flushes at shutdown
    assert _Collector.received
    path, content_type, body = _Collector.received[0]
    assert path == "/v1/traces" and content_type == "application/x-protobuf"
    assert b"lifeline-test" in body and b"gen_ai.operation.name" in body
