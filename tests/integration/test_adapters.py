"""The `anthropic` and `gemini` target kinds on real sockets: the gateway on loopback in front of the fault
wall's Anthropic and Gemini faces, the official openai SDK as the client. Each test asserts what the client
got and what the face received (the translated request, attempt counts)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from openai import OpenAI

from lifeline.testing import AnthropicFace, FaultWall, GeminiFace, wall_text
from tests.conftest import FAST_TIMEOUTS, GatewayFactory, make_config

MESSAGES: list[Any] = [{"role": "user", "content": "hello there"}]
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
KINDS = ["anthropic", "gemini"]


@pytest.fixture(scope="module")
def anthropic_server() -> Iterator[AnthropicFace]:
    with AnthropicFace().running() as face:
        yield face


@pytest.fixture(scope="module")
def gemini_server() -> Iterator[GeminiFace]:
    with GeminiFace().running() as face:
        yield face


@pytest.fixture
def faces(anthropic_server: AnthropicFace, gemini_server: GeminiFace) -> dict[str, FaultWall]:
    anthropic_server.reset()
    gemini_server.reset()
    return {"anthropic": anthropic_server, "gemini": gemini_server}


def target(faces: dict[str, FaultWall], kind: str, model: str, **extra: Any) -> dict[str, Any]:
    """A target of `kind` pointed at its face; `model` picks the face's behaviour."""
    key = "sk-ant-test-0123456789" if kind == "anthropic" else "AIza-test-0123456789"
    timeouts = {**FAST_TIMEOUTS, **extra.pop("timeouts", {})}
    return {"kind": kind, "base_url": faces[kind].url, "api_key": key, "model": model, "timeouts": timeouts, **extra}


def other(kind: str) -> str:
    return "gemini" if kind == "anthropic" else "anthropic"


def client(base_url: str) -> OpenAI:
    return OpenAI(base_url=base_url, api_key="unused", max_retries=0)


# --- answers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_an_answer_through_the_adapter(faces: dict[str, FaultWall], gateway: GatewayFactory, kind: str) -> None:
    config = make_config({"primary": target(faces, kind, "ok")})
    with gateway(config) as gw:
        done = client(gw.base_url).chat.completions.create(
            model="chat", messages=[{"role": "system", "content": "Be brief."}, *MESSAGES]
        )
    assert done.choices[0].message.content == wall_text(12)
    assert done.choices[0].finish_reason == "stop"
    assert done.model == "ok"
    # the face counts words: "Be brief." and "hello there"
    assert done.usage is not None
    assert (done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.total_tokens) == (4, 12, 16)
    [attempt] = faces[kind].attempts
    assert attempt.body is not None
    if kind == "anthropic":
        assert attempt.body["system"] == "Be brief."
        assert attempt.headers["x-api-key"] == "sk-ant-test-0123456789"
    else:
        assert attempt.body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
        assert attempt.headers["x-goog-api-key"] == "AIza-test-0123456789"


@pytest.mark.parametrize("kind", KINDS)
def test_a_stream_through_the_adapter(faces: dict[str, FaultWall], gateway: GatewayFactory, kind: str) -> None:
    config = make_config({"primary": target(faces, kind, "ok")})
    with gateway(config) as gw:
        sdk = client(gw.base_url)
        chunks = list(sdk.chat.completions.create(model="chat", messages=MESSAGES, stream=True))
        with_usage = list(
            sdk.chat.completions.create(
                model="chat", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
        )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == wall_text(12)
    assert chunks[-1].choices[0].finish_reason == "stop"
    # usage reaches the client exactly when it asked for it, and is the upstream's, not an estimate
    assert all(c.usage is None for c in chunks)
    last = with_usage[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (2, 12)
    assert last.model_extra is None or "x_lifeline" not in last.model_extra
    assert all(a.stream for a in faces[kind].attempts)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_tool_call_round_trip(faces: dict[str, FaultWall], gateway: GatewayFactory, kind: str, stream: bool) -> None:
    config = make_config({"primary": target(faces, kind, "tool_call")})
    with gateway(config) as gw:
        sdk = client(gw.base_url)
        if stream:
            chunks = list(sdk.chat.completions.create(model="chat", messages=MESSAGES, tools=TOOLS, stream=True))
            calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or ()]
            call_id, name = calls[0].id, calls[0].function.name  # type: ignore[union-attr]
            arguments = "".join(c.function.arguments or "" for c in calls if c.function)
            assert chunks[-1].choices[0].finish_reason == "tool_calls"
        else:
            first = sdk.chat.completions.create(model="chat", messages=MESSAGES, tools=TOOLS)
            assert first.choices[0].finish_reason == "tool_calls"
            tool_calls = first.choices[0].message.tool_calls or []
            call_id, name, arguments = tool_calls[0].id, tool_calls[0].function.name, tool_calls[0].function.arguments  # type: ignore[union-attr]
        assert name == "get_weather"
        assert orjson.loads(arguments) == {"city": "Paris"}
        assert call_id

        history = [
            *MESSAGES,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}],
            },
            {"role": "tool", "tool_call_id": call_id, "content": "18C and sunny"},
        ]
        second = sdk.chat.completions.create(model="chat", messages=history, tools=TOOLS)  # type: ignore[arg-type]
    assert second.choices[0].message.content == wall_text(12)
    sent = faces[kind].attempts[-1].body
    assert sent is not None
    if kind == "anthropic":
        assert sent["messages"][-2] == {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": call_id, "name": "get_weather", "input": {"city": "Paris"}}],
        }
        assert sent["messages"][-1] == {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call_id, "content": "18C and sunny"}],
        }
    else:
        assert sent["contents"][-2] == {
            "role": "model",
            "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}],
        }
        assert sent["contents"][-1] == {
            "role": "user",
            "parts": [{"functionResponse": {"name": "get_weather", "response": {"result": "18C and sunny"}}}],
        }


def test_a_tool_call_made_by_gemini_can_be_answered_through_anthropic(
    faces: dict[str, FaultWall], gateway: GatewayFactory
) -> None:
    """A conversation that changes provider between the call and its result (a failover, or an alias edit)."""
    config = make_config(
        {"gemini": target(faces, "gemini", "tool_call"), "claude": target(faces, "anthropic", "tool_call")},
        aliases={"g": ["gemini"], "a": ["claude"]},
    )
    with gateway(config) as gw:
        sdk = client(gw.base_url)
        first = sdk.chat.completions.create(model="g", messages=MESSAGES, tools=TOOLS)
        [call] = first.choices[0].message.tool_calls or []
        history = [*MESSAGES, first.choices[0].message.model_dump(exclude_none=True)]
        history.append({"role": "tool", "tool_call_id": call.id, "content": "18C"})
        second = sdk.chat.completions.create(model="a", messages=history, tools=TOOLS)
    assert second.choices[0].message.content == wall_text(12)
    sent = faces["anthropic"].attempts[-1].body
    assert sent is not None
    assert sent["messages"][-2]["content"][0]["id"] == sent["messages"][-1]["content"][0]["tool_use_id"]


# --- failures -----------------------------------------------------------------------------------------


def test_anthropic_overloaded_is_retried_then_fails_over_to_gemini(
    faces: dict[str, FaultWall], gateway: GatewayFactory
) -> None:
    config = make_config(
        {"claude": target(faces, "anthropic", "status?code=529"), "gemini": target(faces, "gemini", "ok")}
    )
    with gateway(config) as gw:
        response = httpx.post(f"{gw.base_url}/chat/completions", json={"model": "chat", "messages": MESSAGES})
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == wall_text(12)
    assert response.headers["x-lifeline-target"] == "gemini"
    # 529 is transient: max_retries=2 gives three attempts at Anthropic, then Gemini answers
    assert [a.outcome for a in faces["anthropic"].attempts] == ["status:529"] * 3
    assert len(faces["gemini"].attempts) == 1
    assert response.headers["x-lifeline-attempts"] == "4"


@pytest.mark.parametrize(
    ("kind", "model"),
    [
        ("anthropic", "status?code=401"),
        ("anthropic", "status?code=403"),
        ("gemini", "status?code=400&status=FAILED_PRECONDITION"),
        ("gemini", "status?code=400&reason=API_KEY_INVALID"),
    ],
)
def test_a_refused_account_is_cut_off(
    faces: dict[str, FaultWall], gateway: GatewayFactory, kind: str, model: str
) -> None:
    backup = other(kind)
    config = make_config({"primary": target(faces, kind, model), "backup": target(faces, backup, "ok")})
    with gateway(config) as gw:
        sdk = client(gw.base_url)
        first = sdk.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)
        second = sdk.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)
    assert first.headers["x-lifeline-target"] == second.headers["x-lifeline-target"] == "backup"
    assert first.parse().choices[0].message.content == wall_text(12)
    # no retry, and the circuit stays open: the second request does not knock again
    assert len(faces[kind].attempts) == 1
    assert len(faces[backup].attempts) == 2


def test_gemini_retry_info_is_waited_out(
    faces: dict[str, FaultWall], gateway: GatewayFactory, router_waits: list[float]
) -> None:
    primary = "rate_limit?retry_after=0.3"
    config = make_config({"primary": target(faces, "gemini", primary), "backup": target(faces, "anthropic", "ok")})
    with gateway(config) as gw:
        response = httpx.post(f"{gw.base_url}/chat/completions", json={"model": "chat", "messages": MESSAGES})
    assert response.status_code == 200
    assert response.headers["x-lifeline-target"] == "backup"
    assert len(faces["gemini"].attempts) == 2
    # the delay came in the body (RetryInfo), not in a Retry-After header, and was waited once
    assert router_waits == [0.3]


def test_an_over_long_prompt_moves_to_a_larger_context_window(
    faces: dict[str, FaultWall], gateway: GatewayFactory
) -> None:
    config = make_config(
        {
            "claude": target(faces, "anthropic", "context_length?limit=1000", context_window=100_000),
            "gemini": target(faces, "gemini", "ok", context_window=1_000_000),
        }
    )
    with gateway(config) as gw:
        response = httpx.post(f"{gw.base_url}/chat/completions", json={"model": "chat", "messages": MESSAGES})
    assert response.status_code == 200
    assert response.headers["x-lifeline-target"] == "gemini"
    assert len(faces["anthropic"].attempts) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_a_stream_cut_after_content_ends_with_an_error_the_sdk_raises(
    faces: dict[str, FaultWall], gateway: GatewayFactory, kind: str
) -> None:
    backup = other(kind)
    # a backup that cannot take a prefix, and no restart: nothing can continue the answer
    no_prefill = {**target(faces, backup, "ok"), "capabilities": {"prefill": False}}
    config = make_config(
        {"primary": target(faces, kind, "cut?after=3"), "backup": no_prefill},
        aliases={"chat": {"targets": ["primary", "backup"], "replay": False}},
    )
    with gateway(config) as gw:
        received: list[str] = []
        with pytest.raises(openai.APIError) as raised:
            for chunk in client(gw.base_url).chat.completions.create(model="chat", messages=MESSAGES, stream=True):
                if chunk.choices:
                    received.append(chunk.choices[0].delta.content or "")
                    assert chunk.choices[0].finish_reason is None
    assert "".join(received) == wall_text(3)
    assert "incomplete" in str(raised.value.message)
    # with `replay: false`, a stream that already reached the client is not restarted elsewhere
    assert faces[backup].attempts == []


# --- the faces themselves -----------------------------------------------------------------------------


def test_the_anthropic_face_speaks_anthropics_wire_format(faces: dict[str, FaultWall]) -> None:
    sdk = anthropic.Anthropic(base_url=faces["anthropic"].url, api_key="sk-ant-test", max_retries=0)
    hello: Any = [{"role": "user", "content": "hello there"}]
    message = sdk.messages.create(model="ok", max_tokens=100, messages=hello)
    assert message.content[0].type == "text"
    assert message.content[0].text == wall_text(12)
    assert (message.usage.input_tokens, message.usage.output_tokens) == (2, 12)
    with sdk.messages.stream(model="ok?tokens=5", max_tokens=100, messages=hello) as stream:
        assert stream.get_final_text() == wall_text(5)
    with pytest.raises(anthropic.APIStatusError) as overloaded:
        sdk.messages.create(model="status?code=529", max_tokens=100, messages=hello)
    assert overloaded.value.status_code == 529
    with pytest.raises(anthropic.BadRequestError, match="roles must alternate"):
        sdk.messages.create(model="ok", max_tokens=100, messages=[*hello, *hello])


def test_a_stream_cut_on_gemini_is_continued_through_anthropic_prefill(
    faces: dict[str, FaultWall], gateway: GatewayFactory
) -> None:
    config = make_config(
        {"primary": target(faces, "gemini", "cut?after=3"), "backup": target(faces, "anthropic", "ok")}
    )
    with gateway(config) as gw:
        chunks = list(client(gw.base_url).chat.completions.create(model="chat", messages=MESSAGES, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == wall_text(12)
    sent = faces["anthropic"].attempts[0].body
    assert sent is not None and sent["messages"][-1]["role"] == "assistant"
    assert wall_text(3) in orjson.dumps(sent["messages"][-1]).decode()
