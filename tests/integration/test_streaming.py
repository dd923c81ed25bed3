"""The streaming rules, on real sockets: failover is invisible until content was sent; after that a broken
upstream ends the stream with an error event the openai SDK raises — never a truncated answer that looks
complete. Usage is reported exactly when asked for, estimated and marked when the upstream sent none."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import orjson
import pytest
from openai import OpenAI

from lifeline.testing import FaultWall, wall_text
from tests.conftest import GatewayFactory, make_config, wall_target

MESSAGES = [{"role": "user", "content": "hello there"}]


def raw_events(base_url: str, **extra: Any) -> tuple[httpx.Response, list[bytes]]:
    """The SSE data payloads exactly as the gateway sent them."""
    body = {"model": "chat", "messages": MESSAGES, "stream": True, **extra}
    with httpx.stream("POST", f"{base_url}/chat/completions", json=body, timeout=30) as response:
        text = response.read()
    events = [line[6:] for line in text.split(b"\n") if line.startswith(b"data: ")]
    return response, events


def collect(client: OpenAI, **extra: Any) -> tuple[str, list[Any]]:
    chunks = list(client.chat.completions.create(model="chat", messages=MESSAGES, stream=True, **extra))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


@pytest.mark.parametrize("primary", ["status?code=503", "reset", "cut?after=0", "hang"])
def test_failover_before_any_content_is_invisible(wall: FaultWall, gateway: GatewayFactory, primary: str) -> None:
    config = make_config(
        {"primary": wall_target(wall, primary, timeouts={"first_byte": 0.5}), "backup": wall_target(wall, "ok")},
        retry={"max_retries": 0},
    )
    with gateway(config) as gw:
        response, events = raw_events(gw.base_url)
        client = OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        text, _ = collect(client)
    assert response.status_code == 200
    assert response.headers["x-lifeline-target"] == "backup"
    assert text == wall_text(12)
    assert events[-1] == b"[DONE]"
    assert not any(b'"error"' in e for e in events)


def test_a_stream_cut_after_content_ends_with_an_error_the_sdk_raises(wall: FaultWall, gateway: GatewayFactory) -> None:
    # the backup cannot continue, and restarted it answers differently: nothing can finish this answer
    backup = wall_target(wall, "ok?offset=1", capabilities={"prefill": False})
    config = make_config({"primary": wall_target(wall, "cut?after=3"), "backup": backup})
    with gateway(config) as gw:
        response, events = raw_events(gw.base_url)
        client = OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        received: list[str] = []
        with pytest.raises(openai.APIError) as raised:
            for chunk in client.chat.completions.create(model="chat", messages=MESSAGES, stream=True):
                if chunk.choices:
                    received.append(chunk.choices[0].delta.content or "")
                    assert chunk.choices[0].finish_reason is None
    assert response.status_code == 200
    assert "".join(received) == wall_text(3)
    assert "incomplete" in str(raised.value.message)
    # the raw stream: content, then one error event, and no [DONE]
    assert b"[DONE]" not in events
    last = orjson.loads(events[-1])
    assert last["error"]["code"] == "upstream_stream_broken"
    assert not any(b'"finish_reason":"stop"' in e for e in events)
    # the backup's different answer was read (once per request), never spliced into what the client has
    assert [a.outcome for a in wall.attempts_for("ok?offset=1")] == ["ok", "ok"]


def test_a_stream_that_stalls_after_content_ends_with_an_error(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config({"primary": wall_target(wall, "stall?after=2", timeouts={"idle": 0.5})})
    with gateway(config) as gw:
        _, events = raw_events(gw.base_url)
    assert orjson.loads(events[-1])["error"]["code"] == "upstream_stream_broken"
    assert b"[DONE]" not in events
    contents = [orjson.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1]]
    assert "".join(contents) == wall_text(2)


def test_an_error_event_from_the_upstream_after_content_is_passed_on_as_an_error(
    wall: FaultWall, gateway: GatewayFactory
) -> None:
    config = make_config({"primary": wall_target(wall, "error_event?after=2")})
    with gateway(config) as gw:
        client = OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        with pytest.raises(openai.APIError):
            collect(client)


def test_a_malformed_event_is_skipped_and_the_answer_stays_whole(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config({"primary": wall_target(wall, "malformed?after=2")})
    with gateway(config) as gw:
        client = OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        text, chunks = collect(client)
    assert text == wall_text(12)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_a_complete_stream_without_done_is_finalised(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config({"primary": wall_target(wall, "no_done")})
    with gateway(config) as gw:
        response, events = raw_events(gw.base_url, stream_options={"include_usage": True})
    assert response.status_code == 200
    assert events[-1] == b"[DONE]"
    assert orjson.loads(events[-2])["usage"]["completion_tokens"] == 12


def test_usage_is_sent_exactly_when_asked_for(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config({"primary": wall_target(wall, "ok")})
    with gateway(config) as gw:
        _, without = raw_events(gw.base_url)
        _, with_usage = raw_events(gw.base_url, stream_options={"include_usage": True})
    # Lifeline always asks the upstream for usage, but passes it on only when the client asked
    assert all(a.body and a.body["stream_options"]["include_usage"] for a in wall.attempts_for("ok"))
    assert not any(b'"usage":{' in e for e in without)
    usage_chunks = [orjson.loads(e) for e in with_usage[:-1] if orjson.loads(e).get("usage")]
    assert len(usage_chunks) == 1
    assert usage_chunks[0]["usage"]["completion_tokens"] == 12
    assert "x_lifeline" not in usage_chunks[0]


def test_usage_is_estimated_and_marked_when_the_upstream_sends_none(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config({"primary": wall_target(wall, "no_usage")})
    with gateway(config) as gw:
        client = OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        text, chunks = collect(client, stream_options={"include_usage": True})
        plain = httpx.post(f"{gw.base_url}/chat/completions", json={"model": "chat", "messages": MESSAGES}).json()
    assert text == wall_text(12)
    last = chunks[-1]
    assert last.usage is not None and last.usage.completion_tokens > 0
    assert last.model_extra and last.model_extra["x_lifeline"] == {"usage_estimated": True}
    assert plain["usage"]["completion_tokens"] > 0
    assert plain["x_lifeline"] == {"usage_estimated": True}


def test_failed_attempts_are_never_reported_as_the_answers_usage(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config(
        {"primary": wall_target(wall, "cut?after=0&tokens=40"), "backup": wall_target(wall, "ok?tokens=5")},
        retry={"max_retries": 0},
    )
    with gateway(config) as gw:
        client = OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        text, chunks = collect(client, stream_options={"include_usage": True})
    assert text == wall_text(5)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


def test_tool_calls_stream_through(wall: FaultWall, gateway: GatewayFactory) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    config = make_config({"primary": wall_target(wall, "tool_call")})
    with gateway(config) as gw:
        client = OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        _, chunks = collect(client, tools=tools, tool_choice="auto")
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].function.name == "lookup"
    arguments = "".join(tc.function.arguments or "" for tc in calls)
    assert orjson.loads(arguments) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert wall.attempts_for("tool_call")[0].body["tools"] == tools
