"""OpenTelemetry tracing: one span per client request, a child span per upstream attempt, with the GenAI
semantic-convention attributes; exported over OTLP (HTTP/protobuf) when configured.

Off by default, and then free: `Tracing.enabled` is False and every method returns at once without
touching OpenTelemetry (which is not even imported). The tracer provider is Lifeline's own, never the
process-wide global one, so an application embedding Lifeline keeps its own tracing set-up.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

from lifeline.attempts import Outcome
from lifeline.config.extras import missing_otel
from lifeline.config.schema import TracingSettings
from lifeline.errors import ConfigError

log = logging.getLogger("lifeline.tracing")

_OFF: AbstractContextManager[None] = contextlib.nullcontext()

#: the GenAI semantic conventions' provider names, by target kind
PROVIDER_NAMES = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini", "llamacpp": "llama_cpp"}


class Tracing:
    def __init__(self, settings: TracingSettings, exporter: Any = None) -> None:
        """`exporter`: a SpanExporter to use instead of OTLP (tests pass an in-memory one)."""
        self.enabled = settings.enabled
        self._provider: Any = None
        self._tracer: Any = None
        if not self.enabled:
            return
        missing = missing_otel()
        if missing is not None:
            raise ConfigError(f"tracing.enabled: {missing}")
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        self._provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=settings.endpoint, headers=dict(settings.headers))
            self._provider.add_span_processor(BatchSpanProcessor(exporter))
        else:
            self._provider.add_span_processor(SimpleSpanProcessor(exporter))
        self._tracer = self._provider.get_tracer("lifeline")

    def start_request(self, operation: str, alias: str, request_id: str, body: dict[str, Any]) -> Any:
        """Open the request's span and make it the parent of what follows in this task (and the tasks it
        starts: the router's attempts, the relay of a stream)."""
        if not self.enabled:
            return None
        from opentelemetry import context, trace

        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.request.model": alias,
            "lifeline.alias": alias,
            "lifeline.request_id": request_id,
        }
        for field, name in (
            ("max_tokens", "gen_ai.request.max_tokens"),
            ("max_completion_tokens", "gen_ai.request.max_tokens"),
            ("temperature", "gen_ai.request.temperature"),
            ("top_p", "gen_ai.request.top_p"),
            ("seed", "gen_ai.request.seed"),
        ):
            value = body.get(field)
            if isinstance(value, int | float) and not isinstance(value, bool):
                attributes[name] = value
        if body.get("stream") is True:
            attributes["lifeline.stream"] = True
        span = self._tracer.start_span(f"{operation} {alias}", kind=trace.SpanKind.SERVER, attributes=attributes)
        context.attach(trace.set_span_in_context(span))
        return span

    def end_request(
        self,
        span: Any,
        *,
        status: int,
        outcome: str,
        target: str | None,
        model: str | None,
        usage: dict[str, Any] | None,
        attempts: int,
    ) -> None:
        if span is None:
            return
        from opentelemetry.trace import Status, StatusCode

        span.set_attribute("http.response.status_code", status)
        span.set_attribute("lifeline.outcome", outcome)
        span.set_attribute("lifeline.attempts", attempts)
        if target:
            span.set_attribute("lifeline.target", target)
        if model:
            span.set_attribute("gen_ai.response.model", model)
        if usage:
            span.set_attribute("gen_ai.usage.input_tokens", int(usage.get("prompt_tokens") or 0))
            span.set_attribute("gen_ai.usage.output_tokens", int(usage.get("completion_tokens") or 0))
        if status >= 400 or outcome not in ("ok",):
            span.set_status(Status(StatusCode.ERROR, outcome))
        span.end()

    def attempt(self, target: str, kind: str, model: str, operation: str = "chat") -> AbstractContextManager[Any]:
        """A child span for one attempt at one target (a shared no-op when tracing is off)."""
        if not self.enabled:
            return _OFF
        return self._attempt(target, kind, model, operation)

    @contextlib.contextmanager
    def _attempt(self, target: str, kind: str, model: str, operation: str) -> Iterator[Any]:
        from opentelemetry import trace

        attributes = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": PROVIDER_NAMES.get(kind, kind),
            "gen_ai.request.model": model,
            "lifeline.target": target,
        }
        with self._tracer.start_as_current_span(
            f"{operation} {model}", kind=trace.SpanKind.CLIENT, attributes=attributes, record_exception=False,
            set_status_on_exception=False,
        ) as span:  # fmt: skip
            yield span

    @staticmethod
    def attempt_outcome(span: Any, outcome: Outcome, status: int | None = None) -> None:
        if span is None:
            return
        span.set_attribute("lifeline.attempt.outcome", outcome.value)
        if status is not None:
            span.set_attribute("lifeline.upstream.status_code", status)
        if not outcome.answered:
            from opentelemetry.trace import Status, StatusCode

            span.set_attribute("error.type", outcome.value)
            span.set_status(Status(StatusCode.ERROR, outcome.value))

    def shutdown(self) -> None:
        if self._provider is not None:
            try:
                self._provider.shutdown()
            except Exception as exc:  # an unreachable collector must not stop the gateway's shutdown
                log.warning("tracing shutdown failed: %s", type(exc).__name__)
