"""POST /v1/messages on real sockets, driven by the official `anthropic` SDK: answers, streams and tool use
translated to and from the fault wall's OpenAI answers; failover as invisible as on chat completions; a stream
broken after content ends with an error, never a message_stop; errors in Anthropic's shape; one ledger row
per request."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import orjson
import pytest

from lifeline.config import Config
from lifeline.testing import FaultWall, wall_text
from lifeline.testing.gateway import RunningGateway
from tests.conftest import GatewayFactory, make_config, wall_target

MASTER = "mk-test-master-key-0123456789"
HELLO = [{"role": "user", "content": "hello there"}]  # the wall counts 2 prompt tokens
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def config(wall: FaultWall, tmp_path: Path, *behaviours: str, **sections: Any) -> Config:
    targets = {f"t{i}-{b.partition('?')[0]}": wall_target(wall, b) for i, b in enumerate(behaviours)}
    return make_config(
        targets,
        retry={"max_retries": 0},
        accounting={"data_dir": str(tmp_path), "ledger": {"commit_interval": 0.05}},
        **sections,
    )


def client(gw: RunningGateway, api_key: str = "unused") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=api_key, max_retries=0)


def post(gw: RunningGateway, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/messages", json=body, headers=headers, timeout=30)


def sse(gw: RunningGateway, **extra: Any) -> tuple[httpx.Response, list[tuple[str, dict[str, Any]]]]:
    """The stream exactly as the gateway sent it: (event name, data) pairs."""
    body = {"model": "chat", "max_tokens": 100, "messages": HELLO, "stream": True, **extra}
    with httpx.stream("POST", f"{gw.url}/v1/messages", json=body, timeout=30) as response:
        raw = response.read().decode()
    events = []
    for block in raw.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if lines:
            events.append((lines["event"], orjson.loads(lines["data"])))
    return response, events


def ledger_rows(gw: RunningGateway, expect: int) -> list[dict[str, Any]]:
    accounting = gw.gateway.accounting
    assert accounting.ledger is not None
    columns = ("request_id", "alias", "target", "outcome", "status", "prompt_tokens", "completion_tokens", "streamed")
    for _ in range(1500):  # a guard against hanging, not a measure of speed
        accounting.ledger.flush(10)
        rows = accounting.db.query(f"SELECT {', '.join(columns)} FROM ledger ORDER BY started_at")
        # a streamed request is recorded just after its last event reached the client
        if len(rows) >= expect:
            break
        time.sleep(0.02)
    return [dict(zip(columns, row, strict=True)) for row in rows]


# --- answers ------------------------------------------------------------------------------------------


def test_a_message_and_its_ledger_row(wall: FaultWall, gateway: GatewayFactory, tmp_path: Path) -> None:
    with gateway(config(wall, tmp_path, "ok")) as gw:
        raw = client(gw).messages.with_raw_response.create(
            model="chat", max_tokens=100, messages=HELLO, system="Be brief.", stop_sequences=["zzz"]
        )
        message = raw.parse()
        rows = ledger_rows(gw, expect=1)
    assert message.type == "message" and message.role == "assistant"
    assert message.id == f"msg_{raw.headers['x-request-id']}"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == wall_text(12)  # type: ignore[union-attr]
    assert message.model == "ok"  # the model that answered
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert (message.usage.input_tokens, message.usage.output_tokens) == (4, 12)  # "Be brief." + "hello there"
    assert raw.headers["x-lifeline-target"] == "t0-ok" and raw.headers["x-lifeline-attempts"] == "1"
    assert message._request_id == raw.headers["x-request-id"]
    # what the upstream was asked: the same question in OpenAI's words
    sent = wall.attempts_for("ok")[0].body
    assert sent is not None
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}]
    assert (sent["max_tokens"], sent["stop"]) == (100, ["zzz"])
    assert rows == [
        {
            "request_id": raw.headers["x-request-id"],
            "alias": "chat",
            "target": "t0-ok",
            "outcome": "ok",
            "status": 200,
            "prompt_tokens": 4,
            "completion_tokens": 12,
            "streamed": 0,
        }
    ]


def test_max_tokens_ends_the_answer_with_max_tokens(wall: FaultWall, gateway: GatewayFactory, tmp_path: Path) -> None:
    with gateway(config(wall, tmp_path, "ok")) as gw:
        message = client(gw).messages.create(model="chat", max_tokens=3, messages=HELLO)
    assert message.content[0].text == wall_text(3)  # type: ignore[union-attr]
    assert message.stop_reason == "max_tokens"


def test_a_streamed_message(wall: FaultWall, gateway: GatewayFactory, tmp_path: Path) -> None:
    with gateway(config(wall, tmp_path, "ok")) as gw:
        with client(gw).messages.stream(model="chat", max_tokens=100, messages=HELLO) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        response, events = sse(gw)
        rows = ledger_rows(gw, expect=2)
    assert text == wall_text(12)
    assert final.content[0].text == wall_text(12)  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (2, 12)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-lifeline-target"] == "t0-ok" and response.headers["x-request-id"]
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names[1:-2] == ["content_block_start"] + ["content_block_delta"] * 12 + ["content_block_stop"]
    assert all(name == data["type"] for name, data in events)
    assert [(r["outcome"], r["streamed"], r["completion_tokens"]) for r in rows] == [("ok", 1, 12)] * 2


def test_usage_is_estimated_and_marked_when_the_upstream_sends_none(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    with gateway(config(wall, tmp_path, "no_usage")) as gw:
        plain = post(gw, {"model": "chat", "max_tokens": 100, "messages": HELLO}).json()
        with client(gw).messages.stream(model="chat", max_tokens=100, messages=HELLO) as stream:
            final = stream.get_final_message()
        rows = ledger_rows(gw, expect=2)
    assert plain["x_lifeline"] == {"usage_estimated": True}
    assert plain["usage"]["input_tokens"] > 0 and plain["usage"]["output_tokens"] > 0
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0
    assert all(r["completion_tokens"] > 0 for r in rows) and len(rows) == 2


# --- tool use -----------------------------------------------------------------------------------------


def test_a_tool_use_round_trip(wall: FaultWall, gateway: GatewayFactory, tmp_path: Path) -> None:
    with gateway(config(wall, tmp_path, "tool_call")) as gw:
        sdk = client(gw)
        question = [{"role": "user", "content": "Weather in Paris?"}]
        first = sdk.messages.create(model="chat", max_tokens=100, messages=question, tools=[WEATHER_TOOL])
        call = first.content[0]
        assert call.type == "tool_use"
        history: list[Any] = [
            *question,
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": call.id, "content": "18°C and sunny"},
                    {"type": "text", "text": "Thanks!"},
                ],
            },
        ]
        sdk.messages.create(
            model="chat", max_tokens=100, messages=history, tools=[WEATHER_TOOL], tool_choice={"type": "any"}
        )
        with sdk.messages.stream(model="chat", max_tokens=100, messages=question, tools=[WEATHER_TOOL]) as stream:
            streamed = stream.get_final_message()
    assert (call.name, call.input) == ("get_weather", {"city": "Paris"})
    assert first.stop_reason == "tool_use"
    sent = wall.attempts_for("tool_call")[1].body
    assert sent is not None
    assert sent["messages"][1]["tool_calls"][0]["id"] == call.id
    assert sent["messages"][2:] == [
        {"role": "tool", "tool_call_id": call.id, "content": "18°C and sunny"},
        {"role": "user", "content": "Thanks!"},
    ]
    assert sent["tools"][0]["function"]["name"] == "get_weather" and sent["tool_choice"] == "required"
    block = streamed.content[0]
    assert block.type == "tool_use" and block.input == {"city": "Paris"} and block.id.startswith("call_wall_")
    assert streamed.stop_reason == "tool_use"


# --- failover and broken streams ----------------------------------------------------------------------


def test_failover_before_content_is_invisible(wall: FaultWall, gateway: GatewayFactory, tmp_path: Path) -> None:
    with gateway(config(wall, tmp_path, "status?code=503", "ok")) as gw:
        raw = client(gw).messages.with_raw_response.create(model="chat", max_tokens=100, messages=HELLO)
        with client(gw).messages.stream(model="chat", max_tokens=100, messages=HELLO) as stream:
            text = "".join(stream.text_stream)
    assert raw.parse().content[0].text == wall_text(12)  # type: ignore[union-attr]
    assert raw.headers["x-lifeline-target"] == "t1-ok" and raw.headers["x-lifeline-attempts"] == "2"
    assert text == wall_text(12)


def test_a_stream_cut_after_content_ends_with_an_error_the_sdk_raises(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    # the second target fails too, asked to continue the answer: nothing can finish it
    with gateway(config(wall, tmp_path, "cut?after=3", "status?code=503")) as gw:
        seen: list[str] = []
        with pytest.raises(anthropic.APIStatusError) as raised:
            for event in client(gw).messages.create(model="chat", max_tokens=100, messages=HELLO, stream=True):
                seen.append(event.type)
        _, events = sse(gw)
        rows = ledger_rows(gw, expect=2)
    assert "content_block_delta" in seen and "message_stop" not in seen and "message_delta" not in seen
    assert "incomplete" in str(raised.value)
    name, data = events[-1]
    assert name == "error" and data["error"]["type"] == "api_error"
    assert not any(n in ("message_delta", "message_stop") for n, _ in events)
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == wall_text(3)
    asked = [a.outcome for a in wall.attempts_for("status?code=503")]
    assert asked == ["status:503", "status:503"]  # one continuation per request, never a restart spliced in
    assert [r["outcome"] for r in rows] == ["broken", "broken"]


def test_a_stream_cut_after_content_is_continued_for_anthropic_clients_too(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    targets = {
        "primary": wall_target(wall, "cut?after=3"),
        "backup": wall_target(wall, "ok?t=prefill", capabilities={"prefill": True}),
    }
    cfg = make_config(targets, accounting={"data_dir": str(tmp_path)})
    with gateway(cfg) as gw, client(gw).messages.stream(model="chat", max_tokens=100, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == wall_text(12)
    assert final.stop_reason == "end_turn"


# --- authentication and errors ------------------------------------------------------------------------


def test_keys_are_read_from_x_api_key(wall: FaultWall, gateway: GatewayFactory, tmp_path: Path) -> None:
    with gateway(config(wall, tmp_path, "ok", admin={"master_key": MASTER}, auth={"enabled": True})) as gw:
        created = httpx.post(
            f"{gw.url}/admin/keys", json={"name": "claude"}, headers={"authorization": f"Bearer {MASTER}"}
        )
        secret = created.json()["secret"]
        message = client(gw, secret).messages.create(model="chat", max_tokens=10, messages=HELLO)
        bearer = post(gw, {"model": "chat", "max_tokens": 10, "messages": HELLO}, authorization=f"Bearer {secret}")
        with pytest.raises(anthropic.AuthenticationError) as wrong:
            client(gw, "ll-nope.nope").messages.create(model="chat", max_tokens=10, messages=HELLO)
        missing = post(gw, {"model": "chat", "max_tokens": 10, "messages": HELLO})
    assert message.content[0].text == wall_text(10)  # type: ignore[union-attr]
    assert bearer.status_code == 200
    assert wrong.value.status_code == 401 and wrong.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert missing.status_code == 401
    assert missing.json()["type"] == "error" and missing.json()["error"]["type"] == "authentication_error"


def anthropic_error(response: httpx.Response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == kind
    assert body["request_id"] == response.headers["x-request-id"] == response.headers["request-id"]
    return str(body["error"]["message"])


def test_errors_come_in_anthropic_s_shape(wall: FaultWall, gateway: GatewayFactory, tmp_path: Path) -> None:
    valid = {"model": "chat", "max_tokens": 10, "messages": HELLO}
    cases: list[tuple[dict[str, Any], int, str, str]] = [
        ({**valid, "model": "nope"}, 404, "not_found_error", "nope"),
        ({**valid, "temperature": "hot"}, 400, "invalid_request_error", "'temperature'"),
        ({"model": "chat", "messages": HELLO}, 400, "invalid_request_error", "'max_tokens'"),
        (
            {**valid, "messages": [{"role": "user", "content": [{"type": "txt"}]}]},
            400,
            "invalid_request_error",
            "'messages[0].content[0].type'",
        ),
    ]
    with gateway(config(wall, tmp_path, "ok", server={"max_body_bytes": 2000})) as gw:
        for body, status, kind, words in cases:
            assert words in anthropic_error(post(gw, body), status, kind)
        too_large = post(gw, {**valid, "system": "x" * 3000})
        bad_deadline = post(gw, valid, **{"x-lifeline-timeout": "soon"})
        not_json = httpx.post(f"{gw.url}/v1/messages", content=b"{", timeout=30)
        sdk = client(gw)
        raising: list[tuple[type[anthropic.APIStatusError], Callable[[], Any]]] = [
            (anthropic.NotFoundError, lambda: sdk.messages.create(model="nope", max_tokens=10, messages=HELLO)),
            (
                anthropic.BadRequestError,
                lambda: sdk.messages.create(model="chat", max_tokens=10, messages=HELLO, extra_body={"temperature": 5}),
            ),
        ]
        for kind_of_error, attempt in raising:
            with pytest.raises(kind_of_error):
                attempt()
        rows = ledger_rows(gw, expect=0)
    anthropic_error(too_large, 413, "request_too_large")
    anthropic_error(not_json, 400, "invalid_request_error")
    assert "x-lifeline-timeout" in anthropic_error(bad_deadline, 400, "invalid_request_error")
    assert rows == []  # requests refused before admission are not requests anyone answered or paid for


def test_every_target_failing_is_an_api_error(wall: FaultWall, gateway: GatewayFactory, tmp_path: Path) -> None:
    with gateway(config(wall, tmp_path, "status?code=503")) as gw:
        with pytest.raises(anthropic.InternalServerError) as raised:
            client(gw).messages.create(model="chat", max_tokens=10, messages=HELLO)
        streamed = post(gw, {"model": "chat", "max_tokens": 10, "messages": HELLO, "stream": True})
        rows = ledger_rows(gw, expect=2)
    assert raised.value.status_code == 502
    assert raised.value.response.headers["x-lifeline-attempts"] == "1"
    assert "failed" in anthropic_error(streamed, 502, "api_error")
    assert [(r["outcome"], r["status"], r["target"], r["streamed"]) for r in rows] == [
        ("error", 502, None, 0),
        ("error", 502, None, 1),
    ]
