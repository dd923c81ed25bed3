"""The `anthropic` target kind against an in-process mock upstream (httpx.MockTransport): the translation
both ways, the event stream, and every error mapping."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest

from lifeline.config.schema import AnthropicTarget
from lifeline.errors import (
    ContextLengthExceeded,
    UpstreamCutOff,
    UpstreamError,
    UpstreamModelNotFound,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamSilent,
    UpstreamUnavailable,
)
from lifeline.providers.anthropic import AnthropicProvider
from lifeline.providers.base import ChatCall, Chunk, Completion
from tests.providers.support import Handler, Upstream, make_call, run_provider

KEY = "sk-ant-unit-secret-0123456789"
PNG = "data:image/png;base64,iVBORw0KGgo="


def target(**extra: Any) -> AnthropicTarget:
    spec: dict[str, Any] = {"kind": "anthropic", "model": "claude-test", "api_key": KEY, **extra}
    return AnthropicTarget.model_validate(spec)


def run(handler: Handler, action: Callable[[AnthropicProvider], Any], **target_extra: Any) -> Any:
    return run_provider(
        AnthropicProvider("claude", target(**target_extra), transport=httpx.MockTransport(handler)), action
    )


def complete(handler: Handler, call: ChatCall | None = None, **target_extra: Any) -> Completion:
    return run(handler, lambda p: p.complete(call or make_call()), **target_extra)


def stream(handler: Handler, call: ChatCall | None = None, **target_extra: Any) -> list[Chunk]:
    async def collect(provider: AnthropicProvider) -> list[Chunk]:
        return [chunk async for chunk in provider.stream(call or make_call(stream=True))]

    return run(handler, collect, **target_extra)


def message(*content: dict[str, Any], stop_reason: str = "end_turn", **usage: int) -> dict[str, Any]:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-test-20250101",
        "content": list(content) or [{"type": "text", "text": "hello"}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 3, **usage},
    }


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=message())


def sent(call: ChatCall, **target_extra: Any) -> dict[str, Any]:
    """The Messages request the provider sends for `call`."""
    upstream = Upstream(ok)
    complete(upstream, call, **target_extra)
    return upstream.body


# --- the request sent -------------------------------------------------------------------------------


def test_url_headers_and_defaults() -> None:
    upstream = Upstream(ok)
    complete(upstream, headers={"anthropic-beta": "tools-2024"})
    request = upstream.requests[0]
    assert str(request.url) == "https://api.anthropic.com/v1/messages"
    assert request.headers["x-api-key"] == KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["anthropic-beta"] == "tools-2024"
    assert "authorization" not in request.headers
    assert upstream.body == {
        "model": "claude-test",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    }


def test_a_base_url_ending_in_v1_is_not_doubled() -> None:
    upstream = Upstream(ok)
    complete(upstream, base_url="https://proxy.example/anthropic/v1/")
    assert str(upstream.requests[0].url) == "https://proxy.example/anthropic/v1/messages"


def test_system_and_developer_messages_become_the_system_prompt() -> None:
    body = sent(
        make_call(
            [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
                {"role": "user", "content": "hi"},
            ]
        )
    )
    assert body["system"] == "Be brief.\n\nAnswer in French."
    assert [m["role"] for m in body["messages"]] == ["user"]


def test_turns_alternate_and_open_with_the_user() -> None:
    body = sent(
        make_call(
            [
                {"role": "assistant", "content": "How can I help?"},
                {"role": "user", "content": "one"},
                {"role": "user", "content": [{"type": "text", "text": "two"}]},
                {"role": "assistant", "content": "three"},
                {"role": "assistant", "content": ""},
                {"role": "user", "content": "four"},
            ]
        )
    )
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "How can I help?"}]},
        {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "three"}]},
        {"role": "user", "content": [{"type": "text", "text": "four"}]},
    ]


def test_a_system_only_request_gets_a_placeholder_user_turn() -> None:
    body = sent(make_call([{"role": "system", "content": "Say hello."}]))
    assert body["system"] == "Say hello."
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "."}]}]


def test_a_closing_assistant_turn_is_a_prefill_without_trailing_whitespace() -> None:
    body = sent(make_call([{"role": "user", "content": "JSON please"}, {"role": "assistant", "content": "{\n  "}]))
    assert body["messages"][-1] == {"role": "assistant", "content": [{"type": "text", "text": "{"}]}
    body = sent(make_call([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]))
    assert [m["role"] for m in body["messages"]] == ["user"]


def test_images_inline_and_by_url() -> None:
    content = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": PNG, "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://img.example/cat.jpg"}},
    ]
    body = sent(make_call([{"role": "user", "content": content}]))
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "what is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://img.example/cat.jpg"}},
    ]


def test_a_pdf_file_becomes_a_document() -> None:
    part = {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}}
    body = sent(make_call([{"role": "user", "content": [part]}]))
    assert body["messages"][0]["content"] == [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}
    ]


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": {"url": "data:image/bmp;base64,Qk0="}},
        {"type": "image_url", "image_url": {"url": "ftp://img.example/cat.jpg"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
    ],
)
def test_content_anthropic_cannot_take_is_rejected_before_sending(part: dict[str, Any]) -> None:
    upstream = Upstream(ok)
    with pytest.raises(UpstreamRejected, match=r"messages\[0\]\.content\[0\]") as raised:
        complete(upstream, make_call([{"role": "user", "content": [part]}]))
    assert upstream.requests == []
    assert raised.value.target == "claude"


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    },
    {"type": "function", "function": {"name": "now"}},
]


def test_tools_are_declared_with_their_schemas() -> None:
    body = sent(make_call(tools=TOOLS))
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather in a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in body


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        ({"type": "function", "function": {"name": "now"}}, None, {"type": "tool", "name": "now"}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    ],
)
def test_tool_choice(choice: Any, parallel: bool | None, expected: dict[str, Any]) -> None:
    extra: dict[str, Any] = {"tools": TOOLS}
    if choice is not None:
        extra["tool_choice"] = choice
    if parallel is not None:
        extra["parallel_tool_calls"] = parallel
    assert sent(make_call(**extra))["tool_choice"] == expected


def test_non_function_tools_are_rejected() -> None:
    with pytest.raises(UpstreamRejected, match="function tools"):
        complete(Upstream(ok), make_call(tools=[{"type": "web_search"}]))


CONVERSATION = [
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {
        "role": "assistant",
        "content": "Let me look.",
        "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "toolu_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
        ],
    },
    {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
    {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "24C"}]},
    {"role": "user", "content": "Thanks!"},
]


def test_tool_calls_and_results_become_blocks_in_alternating_turns() -> None:
    body = sent(make_call(CONVERSATION, tools=TOOLS))
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "24C"}]},
                {"type": "text", "text": "Thanks!"},
            ],
        },
    ]


def test_history_with_tool_calls_but_no_tools_declares_them_switched_off() -> None:
    body = sent(make_call(CONVERSATION))
    assert body["tools"] == [{"name": "get_weather", "input_schema": {"type": "object"}}]
    assert body["tool_choice"] == {"type": "none"}


def test_tool_ids_minted_elsewhere_are_made_acceptable_and_still_pair_up() -> None:
    odd = "fc-7/abc+def=="  # a failover brought ids from a provider with other rules
    messages = [
        {"role": "user", "content": "time?"},
        {
            "role": "assistant",
            "tool_calls": [{"id": odd, "type": "function", "function": {"name": "now", "arguments": ""}}],
        },
        {"role": "tool", "tool_call_id": odd, "content": "noon"},
    ]
    body = sent(make_call(messages, tools=TOOLS))
    use_id = body["messages"][1]["content"][0]["id"]
    assert re.fullmatch(r"toolu_[0-9a-f]{24}", use_id)
    assert body["messages"][2]["content"][0]["tool_use_id"] == use_id


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [("", {}), ("{}", {}), ("not json", {"arguments": "not json"}), ("[1, 2]", {"arguments": [1, 2]})],
)
def test_odd_tool_arguments_are_kept(arguments: str, expected: dict[str, Any]) -> None:
    call = {"id": "t1", "type": "function", "function": {"name": "now", "arguments": arguments}}
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": [call]}]
    body = sent(make_call(messages, tools=TOOLS))
    assert body["messages"][1]["content"][0]["input"] == expected


def test_sampling_parameters() -> None:
    body = sent(
        make_call(
            max_tokens=50,
            max_completion_tokens=40,
            temperature=1.5,
            top_p=0.9,
            stop="END",
            user="user-7",
            seed=3,
            stream=True,
        )
    )
    assert body["max_tokens"] == 40
    assert body["temperature"] == 1.0  # Anthropic's range ends at 1
    assert body["top_p"] == 0.9
    assert body["stop_sequences"] == ["END"]
    assert body["metadata"] == {"user_id": "user-7"}
    assert "stream" not in body  # complete() never streams
    assert "seed" not in body


def test_default_max_tokens_from_config_and_stop_list() -> None:
    body = sent(make_call(max_tokens=7, stop=["a", "b"]))
    assert body["max_tokens"] == 7
    assert body["stop_sequences"] == ["a", "b"]
    assert sent(make_call(), default_max_tokens=99)["max_tokens"] == 99


def test_the_clients_body_is_not_changed() -> None:
    call = make_call(CONVERSATION, tools=TOOLS)
    before = orjson.dumps(call.body)
    sent(call)
    assert orjson.dumps(call.body) == before


# --- the answer ---------------------------------------------------------------------------------------


def test_a_text_answer() -> None:
    done = complete(
        lambda r: httpx.Response(200, json=message({"type": "text", "text": "Bon"}, {"type": "text", "text": "jour"}))
    )
    assert done.model == "claude-test-20250101"
    assert done.usage == {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}
    assert done.body["object"] == "chat.completion"
    assert done.body["id"] == "msg_01"
    assert done.body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Bonjour", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert done.body["usage"] == done.usage


def test_a_tool_use_answer() -> None:
    answer = message(
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "Paris"}},
        stop_reason="tool_use",
    )
    choice = complete(lambda r: httpx.Response(200, json=answer)).body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Checking."
    assert choice["message"]["tool_calls"] == [
        {"id": "toolu_9", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
    ]


def test_a_tool_only_answer_has_no_content() -> None:
    answer = message({"type": "tool_use", "id": "t", "name": "now", "input": {}}, stop_reason="tool_use")
    msg = complete(lambda r: httpx.Response(200, json=answer)).body["choices"][0]["message"]
    assert msg["content"] is None
    assert msg["tool_calls"][0]["function"]["arguments"] == "{}"


def test_thinking_becomes_reasoning_content() -> None:
    answer = message({"type": "thinking", "thinking": "hmm", "signature": "s"}, {"type": "text", "text": "42"})
    msg = complete(lambda r: httpx.Response(200, json=answer)).body["choices"][0]["message"]
    assert msg["content"] == "42"
    assert msg["reasoning_content"] == "hmm"


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("refusal", "content_filter"),
        ("something_new", "stop"),
    ],
)
def test_stop_reasons(stop_reason: str, finish: str) -> None:
    done = complete(lambda r: httpx.Response(200, json=message(stop_reason=stop_reason)))
    assert done.body["choices"][0]["finish_reason"] == finish


def test_cache_tokens_count_as_prompt_tokens() -> None:
    answer = message(cache_creation_input_tokens=100, cache_read_input_tokens=1000)
    done = complete(lambda r: httpx.Response(200, json=answer))
    assert done.usage == {
        "prompt_tokens": 1110,
        "completion_tokens": 3,
        "total_tokens": 1113,
        "prompt_tokens_details": {"cached_tokens": 1000},
    }


@pytest.mark.parametrize("payload", [b"not json", b'{"type": "message"}', b"[]"])
def test_an_answer_that_is_not_a_message_is_unavailable(payload: bytes) -> None:
    with pytest.raises(UpstreamUnavailable):
        complete(lambda r: httpx.Response(200, content=payload))


def test_an_error_envelope_in_a_200_is_classified() -> None:
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    with pytest.raises(UpstreamUnavailable, match="Overloaded"):
        complete(lambda r: httpx.Response(200, json=error))


# --- the stream ---------------------------------------------------------------------------------------


def sse(*events: dict[str, Any]) -> bytes:
    """Anthropic's framing: every event named, the name repeated as the payload's type."""
    return b"".join(b"event: " + str(e["type"]).encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events)


def streaming(raw: bytes | list[bytes], status: int = 200) -> Handler:
    pieces = [raw] if isinstance(raw, bytes) else raw

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=_aiter(pieces), headers={"content-type": "text/event-stream"})

    return handler


async def _aiter(pieces: list[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


START = {
    "type": "message_start",
    "message": {**message(), "content": [], "stop_reason": None, "usage": {"input_tokens": 25, "output_tokens": 1}},
}
PING = {"type": "ping"}


def text_block(index: int = 0) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}


def text_delta(text: str, index: int = 0) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}


def block_stop(index: int = 0) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


def message_delta(stop_reason: str = "end_turn", output_tokens: int = 15) -> dict[str, Any]:
    return {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": {"output_tokens": output_tokens},
    }


STOP = {"type": "message_stop"}
TEXT_STREAM = [
    START,
    text_block(),
    PING,
    text_delta("Hello"),
    text_delta(" there"),
    block_stop(),
    message_delta(),
    STOP,
]


def deltas(chunks: list[Chunk]) -> list[dict[str, Any]]:
    return [c.data["choices"][0]["delta"] for c in chunks if c.data["choices"]]


def test_a_text_stream() -> None:
    upstream = Upstream(streaming(sse(*TEXT_STREAM)))
    chunks = stream(upstream)
    assert upstream.body["stream"] is True
    assert [c.data["object"] for c in chunks] == ["chat.completion.chunk"] * len(chunks)
    assert {c.data["id"] for c in chunks} == {"msg_01"}
    assert {c.data["model"] for c in chunks} == {"claude-test-20250101"}
    assert deltas(chunks) == [{"role": "assistant", "content": ""}, {"content": "Hello"}, {"content": " there"}, {}]
    assert [c.content for c in chunks] == [False, True, True, False, False]
    assert chunks[-2].finish
    assert chunks[-2].data["choices"][0]["finish_reason"] == "stop"
    # the usage chunk comes last and has no choices: the gateway passes it on only to clients that asked
    assert chunks[-1].data["choices"] == []
    assert chunks[-1].usage == {"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40}
    assert orjson.loads(chunks[-1].raw) == chunks[-1].data


def test_a_stream_split_into_awkward_pieces() -> None:
    raw = sse(*TEXT_STREAM)
    pieces = [raw[i : i + 7] for i in range(0, len(raw), 7)]
    chunks = stream(streaming(pieces))
    assert "".join(d.get("content") or "" for d in deltas(chunks)) == "Hello there"


def test_a_tool_call_stream_numbers_calls_in_order() -> None:
    events = [
        START,
        text_block(0),
        text_delta("Checking."),
        block_stop(0),
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
        },
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"city":'}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ' "Paris"}'}},
        block_stop(1),
        message_delta("tool_use"),
        STOP,
    ]
    chunks = stream(streaming(sse(*events)))
    assert deltas(chunks)[1:] == [
        {"content": "Checking."},
        {
            "tool_calls": [
                {"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": ' "Paris"}'}}]},
        {},
    ]
    assert chunks[-2].data["choices"][0]["finish_reason"] == "tool_calls"


def test_thinking_deltas_are_reasoning_content() -> None:
    events = [
        START,
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me see"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "abc"}},
        block_stop(0),
        text_block(1),
        text_delta("42", 1),
        message_delta(),
        STOP,
    ]
    chunks = stream(streaming(sse(*events)))
    assert deltas(chunks)[1:3] == [{"reasoning_content": "Let me see"}, {"content": "42"}]
    assert chunks[1].content


def test_an_error_event_after_content_raises_the_mapped_error() -> None:
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    received: list[Chunk] = []

    async def collect(provider: AnthropicProvider) -> None:
        async for chunk in provider.stream(make_call(stream=True)):
            received.append(chunk)

    with pytest.raises(UpstreamUnavailable, match="Overloaded") as raised:
        run(streaming(sse(START, text_block(), text_delta("Hel"), error)), collect)
    assert raised.value.upstream_status == 529
    assert deltas(received) == [{"role": "assistant", "content": ""}, {"content": "Hel"}]


def test_an_error_event_of_a_rate_limit_keeps_its_class() -> None:
    error = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    with pytest.raises(UpstreamRateLimited):
        stream(streaming(sse(START, error)))


def test_a_stream_with_a_stop_reason_but_no_message_stop_is_complete() -> None:
    chunks = stream(streaming(sse(*TEXT_STREAM[:-1])))
    assert chunks[-2].data["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1].usage == {"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40}


def test_a_stream_that_ends_before_the_stop_reason_is_unavailable() -> None:
    with pytest.raises(UpstreamUnavailable, match="before the answer finished"):
        stream(streaming(sse(START, text_block(), text_delta("Hel"))))


def test_a_stream_broken_midway_is_unavailable() -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield sse(START, text_block(), text_delta("Hel"))
        raise httpx.ReadError("connection reset")

    with pytest.raises(UpstreamUnavailable, match="ReadError"):
        stream(lambda r: httpx.Response(200, content=broken()))


def test_a_stream_broken_after_the_stop_reason_completes() -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield sse(START, text_block(), text_delta("Hi"), message_delta())
        raise httpx.ReadError("connection reset")

    chunks = stream(lambda r: httpx.Response(200, content=broken()))
    assert chunks[-1].usage is not None
    assert chunks[-2].finish


def test_pings_do_not_extend_the_time_to_first_token() -> None:
    async def pings() -> AsyncIterator[bytes]:
        yield sse(START)
        for _ in range(20):
            await asyncio.sleep(0.02)
            yield sse(PING)

    with pytest.raises(UpstreamSilent, match="ttft"):
        stream(lambda r: httpx.Response(200, content=pings()), timeouts={"ttft": 0.1})


def test_an_error_status_before_the_stream_is_classified() -> None:
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    with pytest.raises(UpstreamUnavailable) as raised:
        stream(lambda r: httpx.Response(529, json=error))
    assert raised.value.upstream_status == 529


# --- errors -------------------------------------------------------------------------------------------


def error_response(status: int, etype: str, message: str = "boom", headers: dict[str, str] | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        body = {"type": "error", "error": {"type": etype, "message": message}, "request_id": "req_1"}
        return httpx.Response(status, json=body, headers=headers)

    return handler


@pytest.mark.parametrize(
    ("status", "etype", "cls"),
    [
        (400, "invalid_request_error", UpstreamRejected),
        (401, "authentication_error", UpstreamCutOff),
        (402, "billing_error", UpstreamCutOff),
        (403, "permission_error", UpstreamCutOff),
        (404, "not_found_error", UpstreamModelNotFound),
        (413, "request_too_large", UpstreamRejected),
        (429, "rate_limit_error", UpstreamRateLimited),
        (500, "api_error", UpstreamUnavailable),
        (504, "timeout_error", UpstreamUnavailable),
        (529, "overloaded_error", UpstreamUnavailable),
        (503, "something_new", UpstreamUnavailable),
        (409, "something_new", UpstreamUnavailable),
    ],
)
def test_error_statuses(status: int, etype: str, cls: type[UpstreamError]) -> None:
    with pytest.raises(UpstreamError) as raised:
        complete(error_response(status, etype))
    assert type(raised.value) is cls
    assert raised.value.upstream_status == status
    assert raised.value.target == "claude"


def test_a_rejected_request_keeps_the_message_and_status() -> None:
    with pytest.raises(UpstreamRejected) as raised:
        complete(error_response(400, "invalid_request_error", "messages.1: roles must alternate"))
    assert raised.value.message == "messages.1: roles must alternate"
    assert raised.value.status == 400
    assert raised.value.type == "invalid_request_error"
    with pytest.raises(UpstreamRejected) as too_large:
        complete(error_response(413, "request_too_large"))
    assert too_large.value.status == 413
    assert too_large.value.code == "request_too_large"


@pytest.mark.parametrize(
    "text",
    [
        "prompt is too long: 208310 tokens > 200000 maximum",
        "input length and `max_tokens` exceed context limit: 199000 + 21333 > 200000",
    ],
)
def test_an_over_long_prompt_is_a_context_length_error(text: str) -> None:
    with pytest.raises(ContextLengthExceeded):
        complete(error_response(400, "invalid_request_error", text))


def test_rate_limited_with_retry_after() -> None:
    with pytest.raises(UpstreamRateLimited) as raised:
        complete(error_response(429, "rate_limit_error", headers={"retry-after": "7"}))
    assert raised.value.retry_after == 7.0


def test_a_spend_limit_is_a_cut_off_not_a_rate_limit() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        error = {
            "type": "rate_limit_error",
            "message": "limit",
            "details": {"error_code": "enforced_spend_limit_reached"},
        }
        return httpx.Response(429, json={"type": "error", "error": error})

    with pytest.raises(UpstreamCutOff):
        complete(handler)


def test_a_non_json_error_body_is_classified_by_status() -> None:
    with pytest.raises(UpstreamUnavailable, match="Bad Gateway"):
        complete(lambda r: httpx.Response(502, content=b"<html>Bad Gateway</html>"))


def test_the_key_is_scrubbed_from_error_messages() -> None:
    with pytest.raises(UpstreamCutOff) as raised:
        complete(error_response(401, "authentication_error", f"invalid x-api-key {KEY}"))
    assert KEY not in raised.value.message
    assert KEY[:8] not in raised.value.message


def test_connect_error_is_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(UpstreamUnavailable, match="ConnectError"):
        complete(refuse)


def test_a_slow_answer_is_silent() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(1)
        return httpx.Response(200, json=message())

    with pytest.raises(UpstreamSilent, match="response"):
        run(slow, lambda p: p.complete(make_call()), timeouts={"response": 0.05})  # type: ignore[arg-type]
