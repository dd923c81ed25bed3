"""The gateway's HTTP API as clients see it: the official openai SDK (sync, async, streaming) and raw httpx
against a real server on loopback, with the fault wall as every upstream. Covers what reaches the upstream,
the response headers, the info and admin endpoints, bad input rendered as OpenAI error envelopes, and the
upstream key never leaking."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai import AsyncOpenAI, OpenAI

from lifeline.testing import FaultWall, wall_text
from lifeline.testing.gateway import RunningGateway
from tests.conftest import UPSTREAM_KEY, GatewayFactory, make_config, wall_target

MESSAGES: Any = [{"role": "user", "content": "hello there"}]
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "lookup_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ENVELOPE_KEYS = {"message", "type", "param", "code"}


def sdk(gw: RunningGateway) -> OpenAI:
    return OpenAI(base_url=gw.base_url, api_key="client-key", max_retries=0, timeout=30)


def post(gw: RunningGateway, body: Any = None, **kwargs: Any) -> httpx.Response:
    if body is not None:
        kwargs["json"] = body
    return httpx.post(f"{gw.base_url}/chat/completions", timeout=30, **kwargs)


def chat(alias: str = "chat", **extra: Any) -> dict[str, Any]:
    return {"model": alias, "messages": MESSAGES, **extra}


def assert_envelope(response: httpx.Response, status: int, **expected: Any) -> dict[str, Any]:
    """An OpenAI error envelope with exactly its four fields, `expected` among them, and no trace."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == ENVELOPE_KEYS
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    for key, value in expected.items():
        assert error[key] == value, (key, error)
    assert "Traceback" not in response.text
    assert 'File "' not in response.text
    return error


def assert_no_key(response: httpx.Response) -> None:
    assert UPSTREAM_KEY not in response.text
    for name, value in response.headers.items():
        assert UPSTREAM_KEY not in name and UPSTREAM_KEY not in value, name


def sse_payloads(lines: Iterator[str]) -> list[bytes]:
    return [line.removeprefix("data: ").encode() for line in lines if line.startswith("data: ")]


# --- the SDK, every way ------------------------------------------------------------------------------


def test_sync_sdk_answer(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config({"primary": wall_target(wall, "ok?t=sync")})
    with gateway(config) as gw:
        raw = sdk(gw).chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)
    answer = raw.parse()
    assert answer.choices[0].message.content == wall_text(12)
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (2, 12)
    assert raw.headers["x-lifeline-target"] == "primary"
    assert raw.headers["x-lifeline-attempts"] == "1"
    attempts = wall.attempts_for("ok?t=sync")
    assert len(attempts) == 1
    assert attempts[0].stream is False
    # the gateway speaks to the upstream with the target's key, never the client's
    assert attempts[0].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_async_sdk_answer_and_stream(wall: FaultWall, gateway: GatewayFactory) -> None:
    async def ask(base_url: str) -> tuple[str, str, int]:
        async with AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=30) as client:
            answers = await asyncio.gather(
                *(client.chat.completions.create(model="chat", messages=MESSAGES) for _ in range(3))
            )
            stream = await client.chat.completions.create(model="chat", messages=MESSAGES, stream=True)
            streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        contents = {a.choices[0].message.content or "" for a in answers}
        assert len(contents) == 1
        return contents.pop(), streamed, len(answers)

    config = make_config({"primary": wall_target(wall, "ok?t=async")})
    with gateway(config) as gw:
        content, streamed, n = asyncio.run(ask(gw.base_url))
    assert content == wall_text(12)
    assert streamed == wall_text(12)
    assert len(wall.attempts_for("ok?t=async")) == n + 1


def test_sdk_stream_with_and_without_usage(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config({"primary": wall_target(wall, "ok?t=stream&served_model=streamer")})
    with gateway(config) as gw:
        client = sdk(gw)
        with_usage = list(
            client.chat.completions.create(
                model="chat", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
        )
        without = list(client.chat.completions.create(model="chat", messages=MESSAGES, stream=True))
    for chunks in (with_usage, without):
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == wall_text(12)
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finishes == ["stop"]
        assert {c.model for c in chunks} == {"streamer"}
    usage = [c.usage for c in with_usage if c.usage is not None]
    assert len(usage) == 1
    assert (usage[0].prompt_tokens, usage[0].completion_tokens) == (2, 12)
    assert with_usage[-1].usage is not None and with_usage[-1].choices == []
    # the gateway asks the upstream for usage in any case, but passes it on only when the client asked
    assert all(c.usage is None for c in without)
    assert all(
        a.body is not None and a.body["stream_options"] == {"include_usage": True}
        for a in wall.attempts_for("ok?t=stream&served_model=streamer")
    )


def test_a_raw_stream_ends_with_done(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config({"primary": wall_target(wall, "ok?tokens=3")})
    with (
        gateway(config) as gw,
        httpx.stream("POST", f"{gw.base_url}/chat/completions", json=chat(stream=True), timeout=30) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-lifeline-target"] == "primary"
        assert response.headers["x-lifeline-attempts"] == "1"
        payloads = sse_payloads(response.iter_lines())
    assert payloads[-1] == b"[DONE]"
    assert payloads.count(b"[DONE]") == 1
    text = "".join(
        (c["choices"][0]["delta"].get("content") or "") for c in map(orjson.loads, payloads[:-1]) if c["choices"]
    )
    assert text == wall_text(3)


def test_missing_upstream_usage_is_estimated_and_marked(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config({"primary": wall_target(wall, "no_usage")})
    with gateway(config) as gw:
        response = post(gw, chat())
        stream = list(
            sdk(gw).chat.completions.create(
                model="chat", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
        )
    body = response.json()
    assert body["choices"][0]["message"]["content"] == wall_text(12)
    assert body["usage"]["completion_tokens"] > 0
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    assert body["x_lifeline"] == {"usage_estimated": True}
    usage_chunks = [c for c in stream if c.usage is not None]
    assert len(usage_chunks) == 1
    assert usage_chunks[0].usage is not None and usage_chunks[0].usage.completion_tokens > 0
    assert (usage_chunks[0].model_extra or {}).get("x_lifeline") == {"usage_estimated": True}


# --- what reaches the upstream ----------------------------------------------------------------------


def test_unknown_fields_and_metadata_pass_through(wall: FaultWall, gateway: GatewayFactory) -> None:
    spec = "ok?t=extra"
    config = make_config({"primary": wall_target(wall, spec)})
    metadata = {"team": "search", "ticket": "LL-7"}
    with gateway(config) as gw:
        answer = sdk(gw).chat.completions.create(
            model="chat",
            messages=MESSAGES,
            extra_body={"some_unknown_field": 1, "metadata": metadata, "x_vendor": {"nested": [1, 2]}},
        )
    assert answer.choices[0].message.content == wall_text(12)
    (attempt,) = wall.attempts_for(spec)
    assert attempt.body is not None
    assert attempt.body["some_unknown_field"] == 1
    assert attempt.body["metadata"] == metadata
    assert attempt.body["x_vendor"] == {"nested": [1, 2]}
    assert attempt.body["messages"] == MESSAGES
    # the alias is swapped for the target's model id
    assert attempt.body["model"] == spec
    assert "stream" not in attempt.body


def test_sampling_parameters_are_forwarded(wall: FaultWall, gateway: GatewayFactory) -> None:
    spec = "ok?t=params"
    config = make_config({"primary": wall_target(wall, spec)})
    schema = {"name": "answer", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}
    with gateway(config) as gw:
        answer = sdk(gw).chat.completions.create(
            model="chat",
            messages=MESSAGES,
            response_format={"type": "json_schema", "json_schema": schema},
            temperature=0.3,
            top_p=0.9,
            max_tokens=5,
            stop=["\n\n", "END"],
            seed=1234,
            presence_penalty=0.5,
            user="user-17",
        )
    (attempt,) = wall.attempts_for(spec)
    body = attempt.body
    assert body is not None
    assert body["response_format"] == {"type": "json_schema", "json_schema": schema}
    assert body["temperature"] == 0.3
    assert body["top_p"] == 0.9
    assert body["max_tokens"] == 5
    assert body["stop"] == ["\n\n", "END"]
    assert body["seed"] == 1234
    assert body["presence_penalty"] == 0.5
    assert body["user"] == "user-17"
    # the wall honoured max_tokens, so the limit really was applied upstream
    assert answer.choices[0].message.content == wall_text(5)
    assert answer.choices[0].finish_reason == "length"


def test_tools_pass_through_and_a_tool_call_comes_back_parsed(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config({"primary": wall_target(wall, "tool_call")})
    tool_choice: Any = {"type": "function", "function": {"name": "lookup_weather"}}
    with gateway(config) as gw:
        answer = sdk(gw).chat.completions.create(
            model="chat", messages=MESSAGES, tools=[WEATHER_TOOL], tool_choice=tool_choice, parallel_tool_calls=False
        )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    (call,) = choice.message.tool_calls
    assert call.type == "function"
    assert call.id.startswith("call_")
    assert call.function.name == "lookup_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    (attempt,) = wall.attempts_for("tool_call")
    assert attempt.body is not None
    assert attempt.body["tools"] == [WEATHER_TOOL]
    assert attempt.body["tool_choice"] == tool_choice
    assert attempt.body["parallel_tool_calls"] is False


def test_a_streamed_tool_call_comes_back_whole(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config({"primary": wall_target(wall, "tool_call")})
    with gateway(config) as gw:
        chunks = list(
            sdk(gw).chat.completions.create(
                model="chat", messages=MESSAGES, tools=[WEATHER_TOOL], tool_choice="required", stream=True
            )
        )
    ids, names, arguments = set(), [], ""
    for chunk in chunks:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or ():
                assert delta.index == 0
                if delta.id:
                    ids.add(delta.id)
                if delta.function and delta.function.name:
                    names.append(delta.function.name)
                if delta.function and delta.function.arguments:
                    arguments += delta.function.arguments
    assert len(ids) == 1
    assert names == ["lookup_weather"]
    assert json.loads(arguments) == {"city": "Paris"}
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]
    (attempt,) = wall.attempts_for("tool_call")
    assert attempt.stream is True
    assert attempt.body is not None and attempt.body["tool_choice"] == "required"


def test_the_answer_names_the_model_that_answered(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config({"primary": wall_target(wall, "ok?served_model=upstream-model-x")})
    with gateway(config) as gw:
        client = sdk(gw)
        answer = client.chat.completions.create(model="chat", messages=MESSAGES)
        chunks = list(client.chat.completions.create(model="chat", messages=MESSAGES, stream=True))
    assert answer.model == "upstream-model-x"
    assert chunks and {c.model for c in chunks} == {"upstream-model-x"}


# --- headers ----------------------------------------------------------------------------------------


def test_request_ids_are_generated_echoed_and_forwarded(wall: FaultWall, gateway: GatewayFactory) -> None:
    spec = "ok?t=ids"
    config = make_config({"primary": wall_target(wall, spec)})
    with gateway(config) as gw:
        generated = [post(gw, chat()) for _ in range(2)]
        echoed = post(gw, chat(), headers={"x-request-id": "client-req.42:A"})
        insane = post(gw, chat(), headers={"x-request-id": "no spaces <allowed>"})
        too_long = post(gw, chat(), headers={"x-request-id": "a" * 129})
        on_error = post(gw, chat("nope"), headers={"x-request-id": "err-1"})
        on_health = httpx.get(f"{gw.url}/healthz", headers={"x-request-id": "hz-1"})
    ids = [r.headers["x-request-id"] for r in generated]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert ids[0] != ids[1]
    assert echoed.headers["x-request-id"] == "client-req.42:A"
    for response in (insane, too_long):
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
    assert on_error.status_code == 404 and on_error.headers["x-request-id"] == "err-1"
    assert on_health.headers["x-request-id"] == "hz-1"
    for response in (*generated, on_error, on_health):  # nothing names the server's software; Date stays
        assert "server" not in response.headers and "date" in response.headers
    # the upstream sees the same id as the client
    upstream_ids = [a.headers.get("x-request-id") for a in wall.attempts_for(spec)]
    assert upstream_ids == [*ids, "client-req.42:A", insane.headers["x-request-id"], too_long.headers["x-request-id"]]


def test_target_and_attempts_headers_follow_failover(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config(
        {"primary": wall_target(wall, "status?code=503&t=hdr"), "backup": wall_target(wall, "ok?t=hdr")}
    )
    with gateway(config) as gw:
        response = post(gw, chat())
    # a fresh gateway: the primary's circuit would open after five failures in a row
    with (
        gateway(config) as gw,
        httpx.stream("POST", f"{gw.base_url}/chat/completions", json=chat(stream=True), timeout=30) as streamed,
    ):
        streamed.read()
    assert len(wall.attempts_for("status?code=503&t=hdr")) == 6
    for r in (response, streamed):
        assert r.status_code == 200
        assert r.headers["x-lifeline-target"] == "backup"
        # max_retries=2: three attempts at the primary, one at the backup
        assert r.headers["x-lifeline-attempts"] == "4"


# --- models, health, readiness ----------------------------------------------------------------------


def test_models_list_and_retrieve(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config(
        {"a": wall_target(wall, "ok"), "b": wall_target(wall, "ok?t=b")},
        {"chat": ["a", "b"], "fast": ["b"], "team/gpt-4o": ["a"]},
    )
    with gateway(config) as gw:
        client = sdk(gw)
        listed = list(client.models.list())
        one = client.models.retrieve("fast")
        slashed = client.models.retrieve("team/gpt-4o")
        with pytest.raises(openai.NotFoundError) as caught:
            client.models.retrieve("gpt-unknown")
        raw_missing = httpx.get(f"{gw.base_url}/models/gpt-unknown")
    assert [m.id for m in listed] == ["chat", "fast", "team/gpt-4o"]
    assert all(m.object == "model" for m in listed)
    assert one.id == "fast"
    assert slashed.id == "team/gpt-4o"
    assert caught.value.status_code == 404
    assert_envelope(raw_missing, 404, code="model_not_found", type="invalid_request_error")
    assert "gpt-unknown" in raw_missing.json()["error"]["message"]
    # listing models asks no upstream
    assert wall.attempts == []


def test_healthz_and_readyz(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config({"primary": wall_target(wall, "ok")})
    with gateway(config) as gw:
        health = httpx.get(f"{gw.url}/healthz")
        ready = httpx.get(f"{gw.url}/readyz")
    assert health.status_code == 200
    assert health.json() == {"status": "alive"}
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}


def test_readyz_is_503_when_every_target_of_an_alias_is_cut_off(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config(
        {"cut": wall_target(wall, "status?code=401"), "fine": wall_target(wall, "ok?t=ready")},
        {"chat": ["cut"], "other": ["fine"]},
    )
    with gateway(config) as gw:
        before = httpx.get(f"{gw.url}/readyz")
        failed = post(gw, chat())
        after = httpx.get(f"{gw.url}/readyz")
        still_served = post(gw, chat("other"))
    assert before.status_code == 200
    assert_envelope(failed, 502, code="all_targets_failed")
    assert_no_key(failed)
    # a cut-off is not retried
    assert len(wall.attempts_for("status?code=401")) == 1
    assert after.status_code == 503
    assert after.json()["aliases"] == ["chat"]
    assert after.json()["status"] == "not ready"
    assert still_served.status_code == 200


# --- admin ------------------------------------------------------------------------------------------


def _failover_config(wall: FaultWall, **sections: Any) -> Any:
    return make_config(
        {"primary": wall_target(wall, "status?code=401&t=admin"), "backup": wall_target(wall, "ok?t=admin")},
        **sections,
    )


def test_admin_targets_is_open_without_a_master_key(wall: FaultWall, gateway: GatewayFactory) -> None:
    with gateway(_failover_config(wall)) as gw:
        before = httpx.get(f"{gw.url}/admin/targets")
        answered = post(gw, chat())
        after = httpx.get(f"{gw.url}/admin/targets")
    assert before.status_code == 200
    assert [t["state"] for t in before.json()["targets"]] == ["closed", "closed"]
    assert before.json()["recent_failovers"] == []
    assert answered.headers["x-lifeline-target"] == "backup"
    assert after.status_code == 200
    rows = {t["target"]: t for t in after.json()["targets"]}
    assert rows["primary"]["state"] == "open"
    assert rows["primary"]["open_for_seconds"] > 500  # the cut-off cooldown
    assert rows["primary"]["kind"] == "openai"
    assert rows["backup"]["state"] == "closed"
    (event,) = after.json()["recent_failovers"]
    assert event["from"] == "primary"
    assert event["alias"] == "chat"
    assert event["outcome"] == "cut_off"
    assert event["status"] == 401
    assert event["remaining"] == ["backup"]
    assert event["request_id"] == answered.headers["x-request-id"]
    for r in (before, after):
        assert_no_key(r)


def test_admin_targets_needs_the_master_key_when_configured(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = _failover_config(wall, admin={"master_key": "mk-123"})
    url_path = "/admin/targets"
    with gateway(config) as gw:
        post(gw, chat())
        missing = httpx.get(gw.url + url_path)
        wrong = httpx.get(gw.url + url_path, headers={"authorization": "Bearer mk-124"})
        upstream_key = httpx.get(gw.url + url_path, headers={"authorization": f"Bearer {UPSTREAM_KEY}"})
        prefix = httpx.get(gw.url + url_path, headers={"authorization": "Bearer mk-12"})
        good = httpx.get(gw.url + url_path, headers={"authorization": "Bearer mk-123"})
    for r in (missing, wrong, upstream_key, prefix):
        assert_envelope(r, 401, type="invalid_request_error")
        assert "primary" not in r.text
        assert "mk-123" not in r.text
        assert_no_key(r)
    assert good.status_code == 200
    rows = {t["target"]: t["state"] for t in good.json()["targets"]}
    assert rows == {"primary": "open", "backup": "closed"}
    assert len(good.json()["recent_failovers"]) == 1
    assert "mk-123" not in good.text
    assert_no_key(good)


def test_admin_accepts_the_bearer_scheme_in_any_case(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config({"primary": wall_target(wall, "ok")}, admin={"master_key": "mk-123"})
    with gateway(config) as gw:
        lower = httpx.get(f"{gw.url}/admin/targets", headers={"authorization": "bearer mk-123"})
    assert lower.status_code == 200


# --- bad input --------------------------------------------------------------------------------------


def test_bad_json_is_400(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config({"primary": wall_target(wall, "ok")})
    with gateway(config) as gw:
        broken = post(gw, content=b'{"model": "chat", "messages": [', headers={"content-type": "application/json"})
        not_utf8 = post(gw, content=b'{"model": "\xff\xfe"}', headers={"content-type": "application/json"})
        empty = post(gw, content=b"")
        array = post(gw, [chat()])
        string = post(gw, "chat")
    for r in (broken, not_utf8, empty, array, string):
        assert_envelope(r, 400, type="invalid_request_error", code="invalid_json")
    assert wall.attempts == []


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"model": "chat"}, "messages", "missing_required_parameter"),
        ({"messages": MESSAGES}, "model", "missing_required_parameter"),
        (chat(messages=[]), "messages", "invalid_value"),
        (chat(temperature="hot"), "temperature", "invalid_type"),
        (chat(temperature=3), "temperature", "invalid_value"),
        (chat(max_tokens=0), "max_tokens", "invalid_value"),
        (chat(max_tokens="10"), "max_tokens", "invalid_type"),
        (chat(stream="yes"), "stream", "invalid_type"),
        (chat(messages=[{"role": "wizard", "content": "hi"}]), "messages[0].role", "invalid_value"),
        (chat(messages=[{"content": "hi"}]), "messages[0].role", "missing_required_parameter"),
        (chat(messages=[{"role": "user", "content": 5}]), "messages[0].content", "invalid_type"),
        (chat(stream_options={"include_usage": "yes"}), "stream_options.include_usage", "invalid_type"),
    ],
)
def test_invalid_requests_name_the_parameter(
    wall: FaultWall, gateway: GatewayFactory, body: dict[str, Any], param: str, code: str
) -> None:
    config = make_config({"primary": wall_target(wall, "ok")})
    with gateway(config) as gw:
        response = post(gw, body)
    assert_envelope(response, 400, type="invalid_request_error", param=param, code=code)
    assert wall.attempts == []


def test_the_sdk_raises_bad_request_with_the_param(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config({"primary": wall_target(wall, "ok")})
    with gateway(config) as gw, pytest.raises(openai.BadRequestError) as caught:
        sdk(gw).chat.completions.create(model="chat", messages=MESSAGES, temperature="hot")  # type: ignore[arg-type]
    assert caught.value.status_code == 400
    assert caught.value.param == "temperature"
    assert caught.value.code == "invalid_type"
    assert wall.attempts == []


def test_an_unknown_alias_is_404_model_not_found(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config({"primary": wall_target(wall, "ok")})
    with gateway(config) as gw:
        plain = post(gw, chat("gpt-5-turbo"))
        streamed = post(gw, chat("gpt-5-turbo", stream=True))
        with pytest.raises(openai.NotFoundError) as caught:
            sdk(gw).chat.completions.create(model="gpt-5-turbo", messages=MESSAGES)
    for r in (plain, streamed):
        assert_envelope(r, 404, code="model_not_found", param="model", type="invalid_request_error")
        assert "gpt-5-turbo" in r.json()["error"]["message"]
    assert caught.value.code == "model_not_found"
    assert wall.attempts == []


def test_an_oversized_body_is_413(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config({"primary": wall_target(wall, "ok")}, server={"max_body_bytes": 1000})
    big = chat(messages=[{"role": "user", "content": "x" * 2000}])
    raw = orjson.dumps(big)

    def pieces() -> Iterator[bytes]:
        for i in range(0, len(raw), 200):
            yield raw[i : i + 200]

    with gateway(config) as gw:
        small = post(gw, chat())
        declared = post(gw, big)
        chunked = post(gw, content=pieces(), headers={"content-type": "application/json"})
    assert small.status_code == 200
    assert "content-length" not in chunked.request.headers
    for r in (declared, chunked):
        assert_envelope(r, 413, type="invalid_request_error", code="payload_too_large")
    assert len(wall.attempts) == 1


@pytest.mark.parametrize("value", ["soon", "0", "-5", "nan", ""])
def test_a_bad_timeout_header_is_400(wall: FaultWall, gateway: GatewayFactory, value: str) -> None:
    config = make_config({"primary": wall_target(wall, "ok")})
    with gateway(config) as gw:
        response = post(gw, chat(), headers={"x-lifeline-timeout": value})
        fine = post(gw, chat(), headers={"x-lifeline-timeout": "2.5"})
    assert_envelope(response, 400, param="x-lifeline-timeout", type="invalid_request_error")
    assert fine.status_code == 200
    assert len(wall.attempts) == 1


def test_unknown_paths_and_wrong_methods(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config({"primary": wall_target(wall, "ok")})
    with gateway(config) as gw:
        unknown = httpx.get(f"{gw.base_url}/engines")
        unknown_post = httpx.post(f"{gw.url}/v2/chat/completions", json=chat())
        wrong_method = httpx.get(f"{gw.base_url}/chat/completions")
        wrong_on_models = httpx.delete(f"{gw.base_url}/models")
    for r in (unknown, unknown_post):
        assert_envelope(r, 404, type="invalid_request_error")
    for r in (wrong_method, wrong_on_models):
        assert_envelope(r, 405, type="invalid_request_error", code="method_not_allowed")
    # RFC 9110 section 15.5.6: a 405 carries Allow
    assert wrong_method.headers.get("allow") == "POST"
    assert "GET" in wrong_on_models.headers.get("allow", "")
    assert wall.attempts == []


# --- the upstream key never leaks -------------------------------------------------------------------


def test_the_upstream_key_never_reaches_the_client(wall: FaultWall, gateway: GatewayFactory) -> None:
    echo_full = f"status?code=400&message=Incorrect API key provided: {UPSTREAM_KEY}."
    echo_masked = f"status?code=400&message=Incorrect API key provided: {UPSTREAM_KEY[:12]}****{UPSTREAM_KEY[-4:]}."
    targets = {
        "cut": wall_target(wall, "status?code=401"),
        # upstreams that echo the key in their error message, picked through the wall's behaviour header
        "echo": wall_target(wall, "echo-full", headers={"x-wall-behaviour": echo_full}),
        "masked": wall_target(wall, "echo-masked", headers={"x-wall-behaviour": echo_masked}),
        "fine": wall_target(wall, "ok?t=key"),
        "broken": wall_target(wall, "error_event"),
    }
    aliases = {"cut": ["cut"], "echo": ["echo"], "masked": ["masked"], "fine": ["fine"], "broken": ["broken"]}
    config = make_config(targets, aliases)
    responses: list[httpx.Response] = []
    with gateway(config) as gw:
        for alias in aliases:
            responses.append(post(gw, chat(alias)))
            with httpx.stream(
                "POST", f"{gw.base_url}/chat/completions", json=chat(alias, stream=True), timeout=30
            ) as streamed:
                streamed.read()
            responses.append(streamed)
        for path in ("/admin/targets", "/readyz", "/healthz", "/v1/models", "/v1/models/cut"):
            responses.append(httpx.get(gw.url + path))
        responses.append(post(gw, chat("unknown")))
    statuses = [r.status_code for r in responses]
    # cut, echo and masked fail in both modes; fine answers; broken breaks mid-stream after a 200
    assert statuses[:10] == [502, 502, 400, 400, 400, 400, 200, 200, 200, 200]
    # the echoing upstreams' messages reach the client, scrubbed
    echoed = responses[2].json()["error"]["message"]
    assert echoed.startswith("Incorrect API key provided:")
    assert "***" in echoed
    assert UPSTREAM_KEY[:12] not in responses[4].json()["error"]["message"]
    # the upstreams really were sent the key
    assert wall.attempts_for("echo-full")[0].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    for response in responses:
        assert_no_key(response)
