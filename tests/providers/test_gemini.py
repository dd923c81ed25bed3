"""The `gemini` target kind against an in-process mock upstream (httpx.MockTransport): the translation
both ways, the event stream, and every error mapping."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest

from lifeline.config.schema import GeminiTarget
from lifeline.errors import (
    ContentFiltered,
    ContextLengthExceeded,
    UpstreamCutOff,
    UpstreamError,
    UpstreamModelNotFound,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamSilent,
    UpstreamUnavailable,
)
from lifeline.providers.base import ChatCall, Chunk, Completion
from lifeline.providers.gemini import SIGNATURE_SKIP, GeminiProvider
from tests.providers.support import Handler, Upstream, make_call, run_provider

KEY = "AIza-unit-secret-0123456789"
PNG = "data:image/png;base64,iVBORw0KGgo="


def target(**extra: Any) -> GeminiTarget:
    spec: dict[str, Any] = {"kind": "gemini", "model": "gemini-2.5-flash", "api_key": KEY, **extra}
    return GeminiTarget.model_validate(spec)


def run(handler: Handler, action: Callable[[GeminiProvider], Any], **target_extra: Any) -> Any:
    return run_provider(
        GeminiProvider("gemini", target(**target_extra), transport=httpx.MockTransport(handler)), action
    )


def complete(handler: Handler, call: ChatCall | None = None, **target_extra: Any) -> Completion:
    return run(handler, lambda p: p.complete(call or make_call()), **target_extra)


def stream(handler: Handler, call: ChatCall | None = None, **target_extra: Any) -> list[Chunk]:
    async def collect(provider: GeminiProvider) -> list[Chunk]:
        return [chunk async for chunk in provider.stream(call or make_call(stream=True))]

    return run(handler, collect, **target_extra)


USAGE = {"promptTokenCount": 10, "candidatesTokenCount": 3, "totalTokenCount": 13}


def response(
    *parts: dict[str, Any], finish: str | None = "STOP", usage: dict[str, Any] | None = None
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": list(parts) or [{"text": "hello"}], "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {
        "candidates": [candidate],
        "usageMetadata": USAGE if usage is None else usage,
        "modelVersion": "gemini-2.5-flash-001",
        "responseId": "r1",
    }


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=response())


def sent(call: ChatCall, **target_extra: Any) -> dict[str, Any]:
    """The generateContent request the provider sends for `call`."""
    upstream = Upstream(ok)
    complete(upstream, call, **target_extra)
    return upstream.body


# --- the request sent -------------------------------------------------------------------------------


def test_url_and_headers() -> None:
    upstream = Upstream(ok)
    complete(upstream)
    request = upstream.requests[0]
    assert (
        str(request.url) == "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    )
    assert request.headers["x-goog-api-key"] == KEY
    assert request.headers["content-type"] == "application/json"
    assert "key=" not in str(request.url)
    assert upstream.body == {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


def test_the_stream_url_asks_for_sse() -> None:
    upstream = Upstream(streaming(sse(response())))
    stream(upstream)
    assert upstream.requests[0].url.path.endswith("/models/gemini-2.5-flash:streamGenerateContent")
    assert upstream.requests[0].url.params["alt"] == "sse"


@pytest.mark.parametrize(
    ("model", "path"),
    [
        ("tunedModels/my-model", "/v1beta/tunedModels/my-model:generateContent"),
        ("models/gemini-2.0-flash", "/v1beta/models/gemini-2.0-flash:generateContent"),
        ("status?code=503", "/v1beta/models/status%3Fcode%3D503:generateContent"),
    ],
)
def test_model_names_in_the_path(model: str, path: str) -> None:
    upstream = Upstream(ok)
    complete(upstream, model=model)
    assert upstream.requests[0].url.raw_path.decode() == path


def test_system_messages_become_the_system_instruction() -> None:
    body = sent(
        make_call(
            [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "Salut"},
                {"role": "user", "content": "ça va?"},
            ]
        )
    )
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "Answer in French."}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "hi"}]},
        {"role": "model", "parts": [{"text": "Salut"}]},
        {"role": "user", "parts": [{"text": "ça va?"}]},
    ]


def test_consecutive_turns_of_one_role_are_merged() -> None:
    body = sent(make_call([{"role": "user", "content": "one"}, {"role": "user", "content": "two"}]))
    assert body["contents"] == [{"role": "user", "parts": [{"text": "one"}, {"text": "two"}]}]


def test_a_system_only_request_gets_a_placeholder_user_turn() -> None:
    body = sent(make_call([{"role": "system", "content": "Say hello."}]))
    assert body["contents"] == [{"role": "user", "parts": [{"text": "."}]}]


def test_images_audio_and_files() -> None:
    content = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": PNG}},
        {"type": "image_url", "image_url": {"url": "https://img.example/cat.webp?x=1"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0="}},
    ]
    body = sent(make_call([{"role": "user", "content": content}]))
    assert body["contents"][0]["parts"] == [
        {"text": "what is this?"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"fileData": {"mimeType": "image/webp", "fileUri": "https://img.example/cat.webp?x=1"}},
        {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
    ]


def test_content_gemini_cannot_take_is_rejected_before_sending() -> None:
    upstream = Upstream(ok)
    part = {"type": "image_url", "image_url": {"url": "ftp://img.example/cat.jpg"}}
    with pytest.raises(UpstreamRejected, match=r"messages\[0\]\.content\[0\]"):
        complete(upstream, make_call([{"role": "user", "content": [part]}]))
    assert upstream.requests == []


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    },
    {"type": "function", "function": {"name": "now"}},
]


def test_tools_become_function_declarations_with_json_schema() -> None:
    body = sent(make_call(tools=TOOLS))
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather in a city",
                    "parametersJsonSchema": TOOLS[0]["function"]["parameters"],
                },
                {"name": "now"},
            ]
        }
    ]
    assert "toolConfig" not in body


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        ({"type": "function", "function": {"name": "now"}}, {"mode": "ANY", "allowedFunctionNames": ["now"]}),
    ],
)
def test_tool_choice(choice: Any, expected: dict[str, Any]) -> None:
    body = sent(make_call(tools=TOOLS, tool_choice=choice))
    assert body["toolConfig"] == {"functionCallingConfig": expected}


CONVERSATION = [
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_1", "type": "function", "function": {"name": "now", "arguments": ""}},
        ],
    },
    {"role": "tool", "tool_call_id": "call_0", "content": '{"temp": 18}'},
    {"role": "tool", "tool_call_id": "call_1", "content": "noon"},
    {"role": "user", "content": "Thanks!"},
]


def test_tool_calls_and_results_become_function_parts() -> None:
    body = sent(make_call(CONVERSATION, tools=TOOLS))
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Weather in Paris and Rome?"}]},
        {
            "role": "model",
            "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "now", "args": {}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"temp": 18}}},
                {"functionResponse": {"name": "now", "response": {"result": "noon"}}},
                {"text": "Thanks!"},
            ],
        },
    ]


def test_a_tool_result_for_an_unknown_call_is_rejected() -> None:
    messages = [{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "nope", "content": "x"}]
    with pytest.raises(UpstreamRejected, match="nope"):
        complete(Upstream(ok), make_call(messages))


def test_a_legacy_function_message_names_its_function() -> None:
    messages = [
        {"role": "user", "content": "time?"},
        {"role": "assistant", "content": None, "function_call": {"name": "now", "arguments": "{}"}},
        {"role": "function", "name": "now", "content": "noon"},
    ]
    body = sent(make_call(messages))
    assert body["contents"][1] == {"role": "model", "parts": [{"functionCall": {"name": "now", "args": {}}}]}
    assert body["contents"][2]["parts"] == [{"functionResponse": {"name": "now", "response": {"result": "noon"}}}]


@pytest.mark.parametrize("model", ["gemini-3-pro-preview", "models/gemini-3.1-flash", "gemini-4-ultra"])
def test_gemini_3_and_later_get_the_stand_in_thought_signature(model: str) -> None:
    body = sent(make_call(CONVERSATION, tools=TOOLS), model=model)
    parts = body["contents"][1]["parts"]
    assert parts[0]["thoughtSignature"] == SIGNATURE_SKIP
    assert "thoughtSignature" not in parts[1]  # only the first call of a step carries one


@pytest.mark.parametrize("model", ["gemini-2.5-flash", "gemini-1.5-pro", "tunedModels/mine"])
def test_earlier_models_get_no_thought_signature(model: str) -> None:
    body = sent(make_call(CONVERSATION, tools=TOOLS), model=model)
    assert all("thoughtSignature" not in p for p in body["contents"][1]["parts"])


def test_generation_config() -> None:
    body = sent(
        make_call(
            max_tokens=50,
            max_completion_tokens=40,
            temperature=1.5,
            top_p=0.9,
            seed=7,
            presence_penalty=0.5,
            frequency_penalty=-0.5,
            stop=["END", "STOP"],
        )
    )
    assert body["generationConfig"] == {
        "temperature": 1.5,
        "topP": 0.9,
        "seed": 7,
        "presencePenalty": 0.5,
        "frequencyPenalty": -0.5,
        "maxOutputTokens": 40,
        "stopSequences": ["END", "STOP"],
    }


def test_json_response_formats() -> None:
    body = sent(make_call(response_format={"type": "json_object"}))
    assert body["generationConfig"] == {"responseMimeType": "application/json"}
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": False}
    body = sent(make_call(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}))
    assert body["generationConfig"] == {"responseMimeType": "application/json", "responseJsonSchema": schema}


# --- the answer ---------------------------------------------------------------------------------------


def test_a_text_answer() -> None:
    done = complete(lambda r: httpx.Response(200, json=response({"text": "Bon"}, {"text": "jour"})))
    assert done.model == "gemini-2.5-flash-001"
    assert done.usage == {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}
    assert done.body["id"] == "chatcmpl-r1"
    assert done.body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Bonjour", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]


def test_a_function_call_answer() -> None:
    answer = response(
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
        {"functionCall": {"name": "now", "args": {}}, "thoughtSignature": "c2ln"},
    )
    choice = complete(lambda r: httpx.Response(200, json=answer)).body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    calls = choice["message"]["tool_calls"]
    assert [c["function"] for c in calls] == [
        {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"name": "now", "arguments": "{}"},
    ]
    assert {c["type"] for c in calls} == {"function"}
    # ids: call_<random>_<n>, so calls of different answers in one conversation never share an id
    assert re.fullmatch(r"call_[0-9a-f]{12}_0", calls[0]["id"])
    assert calls[1]["id"] == calls[0]["id"][:-1] + "1"
    again = complete(lambda r: httpx.Response(200, json=answer)).body["choices"][0]["message"]["tool_calls"]
    assert again[0]["id"] != calls[0]["id"]


def test_gemini_call_ids_are_kept() -> None:
    answer = response({"functionCall": {"id": "fc-7", "name": "now", "args": {}}})
    choice = complete(lambda r: httpx.Response(200, json=answer)).body["choices"][0]
    assert choice["message"]["tool_calls"][0]["id"] == "fc-7"


def test_thought_parts_are_reasoning_content() -> None:
    answer = response({"text": "thinking…", "thought": True}, {"text": "42"})
    msg = complete(lambda r: httpx.Response(200, json=answer)).body["choices"][0]["message"]
    assert msg["content"] == "42"
    assert msg["reasoning_content"] == "thinking…"


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("OTHER", "stop"),
    ],
)
def test_finish_reasons(reason: str, finish: str) -> None:
    done = complete(lambda r: httpx.Response(200, json=response(finish=reason)))
    assert done.body["choices"][0]["finish_reason"] == finish


def test_thinking_tokens_are_completion_tokens() -> None:
    usage = {
        "promptTokenCount": 10,
        "candidatesTokenCount": 3,
        "thoughtsTokenCount": 20,
        "cachedContentTokenCount": 4,
        "totalTokenCount": 33,
    }
    done = complete(lambda r: httpx.Response(200, json=response(usage=usage)))
    assert done.usage == {
        "prompt_tokens": 10,
        "completion_tokens": 23,
        "total_tokens": 33,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 20},
    }


def test_a_blocked_prompt_is_content_filtered() -> None:
    blocked = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": USAGE}
    with pytest.raises(ContentFiltered, match="SAFETY") as raised:
        complete(lambda r: httpx.Response(200, json=blocked))
    assert raised.value.target == "gemini"


@pytest.mark.parametrize("payload", [b"not json", b'{"candidates": []}', b"[]"])
def test_an_answer_without_candidates_is_unavailable(payload: bytes) -> None:
    with pytest.raises(UpstreamUnavailable):
        complete(lambda r: httpx.Response(200, content=payload))


# --- the stream ---------------------------------------------------------------------------------------


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(e) + b"\r\n\r\n" for e in events)


def streaming(raw: bytes | list[bytes], status: int = 200) -> Handler:
    pieces = [raw] if isinstance(raw, bytes) else raw

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=_aiter(pieces), headers={"content-type": "text/event-stream"})

    return handler


async def _aiter(pieces: list[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


def piece(text: str, finish: str | None = None, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    event = response({"text": text}, finish=finish, usage=usage)
    if usage is None:
        del event["usageMetadata"]
    return event


def deltas(chunks: list[Chunk]) -> list[dict[str, Any]]:
    return [c.data["choices"][0]["delta"] for c in chunks if c.data["choices"]]


def test_a_text_stream() -> None:
    chunks = stream(streaming(sse(piece("Hello"), piece(" there"), piece("!", "STOP", USAGE))))
    assert {c.data["id"] for c in chunks} == {"chatcmpl-r1"}
    assert {c.data["model"] for c in chunks} == {"gemini-2.5-flash-001"}
    assert deltas(chunks) == [
        {"role": "assistant", "content": ""},
        {"content": "Hello"},
        {"content": " there"},
        {"content": "!"},
        {},
    ]
    assert chunks[-2].data["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1].data["choices"] == []
    assert chunks[-1].usage == {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}


def test_a_stream_split_into_awkward_pieces() -> None:
    raw = sse(piece("Hello"), piece(" there", "STOP", USAGE))
    chunks = stream(streaming([raw[i : i + 5] for i in range(0, len(raw), 5)]))
    assert "".join(d.get("content") or "" for d in deltas(chunks)) == "Hello there"


def test_a_function_call_stream() -> None:
    event = response({"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}, finish="STOP")
    chunks = stream(streaming(sse(event)))
    [call] = deltas(chunks)[1]["tool_calls"]
    assert call["index"] == 0
    assert re.fullmatch(r"call_[0-9a-f]{12}_0", call["id"])
    assert call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert chunks[1].content
    assert chunks[-2].data["choices"][0]["finish_reason"] == "tool_calls"


def test_a_stream_without_a_finish_reason_is_unavailable() -> None:
    with pytest.raises(UpstreamUnavailable, match="before the answer finished"):
        stream(streaming(sse(piece("Hello"), piece(" there"))))


def test_a_stream_broken_after_the_finish_reason_completes() -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield sse(piece("Hi", "STOP", USAGE))
        raise httpx.ReadError("connection reset")

    chunks = stream(lambda r: httpx.Response(200, content=broken()))
    assert chunks[-1].usage is not None


def test_a_stream_broken_midway_is_unavailable() -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield sse(piece("Hi"))
        raise httpx.ReadError("connection reset")

    with pytest.raises(UpstreamUnavailable, match="ReadError"):
        stream(lambda r: httpx.Response(200, content=broken()))


def test_an_error_inside_the_stream_is_classified() -> None:
    error = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
    with pytest.raises(UpstreamUnavailable, match="overloaded") as raised:
        stream(streaming(sse(piece("Hi"), error)))
    assert raised.value.upstream_status == 503


def test_a_blocked_prompt_in_a_stream_is_content_filtered() -> None:
    with pytest.raises(ContentFiltered):
        stream(streaming(sse({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}})))


def test_a_silent_stream_times_out() -> None:
    async def silent() -> AsyncIterator[bytes]:
        await asyncio.sleep(1)
        yield sse(piece("late", "STOP"))

    with pytest.raises(UpstreamSilent, match="ttft"):
        stream(lambda r: httpx.Response(200, content=silent()), timeouts={"ttft": 0.05})


# --- errors -------------------------------------------------------------------------------------------


def error_response(
    status: int, rpc: str, message: str = "boom", details: list[dict[str, Any]] | None = None
) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        error: dict[str, Any] = {"code": status, "message": message, "status": rpc}
        if details:
            error["details"] = details
        return httpx.Response(status, json={"error": error})

    return handler


@pytest.mark.parametrize(
    ("status", "rpc", "cls"),
    [
        (400, "INVALID_ARGUMENT", UpstreamRejected),
        (400, "FAILED_PRECONDITION", UpstreamCutOff),
        (401, "UNAUTHENTICATED", UpstreamCutOff),
        (403, "PERMISSION_DENIED", UpstreamCutOff),
        (404, "NOT_FOUND", UpstreamModelNotFound),
        (429, "RESOURCE_EXHAUSTED", UpstreamRateLimited),
        (500, "INTERNAL", UpstreamUnavailable),
        (503, "UNAVAILABLE", UpstreamUnavailable),
        (504, "DEADLINE_EXCEEDED", UpstreamUnavailable),
        (502, "", UpstreamUnavailable),
    ],
)
def test_error_statuses(status: int, rpc: str, cls: type[UpstreamError]) -> None:
    with pytest.raises(UpstreamError) as raised:
        complete(error_response(status, rpc))
    assert type(raised.value) is cls
    assert raised.value.upstream_status == status
    assert raised.value.target == "gemini"


def test_a_stream_error_status_is_classified() -> None:
    with pytest.raises(UpstreamRateLimited):
        stream(error_response(429, "RESOURCE_EXHAUSTED"))


def test_an_invalid_key_is_a_cut_off_though_gemini_calls_it_an_invalid_argument() -> None:
    info = {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID",
        "domain": "googleapis.com",
    }
    with pytest.raises(UpstreamCutOff):
        complete(error_response(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", [info]))


def test_a_rejected_request_keeps_the_message() -> None:
    with pytest.raises(UpstreamRejected) as raised:
        complete(error_response(400, "INVALID_ARGUMENT", "Invalid value at 'contents[0].role'"))
    assert raised.value.message == "Invalid value at 'contents[0].role'"
    assert raised.value.status == 400


def test_an_over_long_prompt_is_a_context_length_error() -> None:
    text = "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."
    with pytest.raises(ContextLengthExceeded):
        complete(error_response(400, "INVALID_ARGUMENT", text))


def test_retry_info_in_the_body_is_the_retry_after() -> None:
    retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "31s"}
    with pytest.raises(UpstreamRateLimited) as raised:
        complete(error_response(429, "RESOURCE_EXHAUSTED", details=[retry]))
    assert raised.value.retry_after == 31.0


def test_a_retry_after_header_wins_over_retry_info() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        error = {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [{"retryDelay": "31s"}]}
        return httpx.Response(429, json={"error": error}, headers={"retry-after": "2"})

    with pytest.raises(UpstreamRateLimited) as raised:
        complete(handler)
    assert raised.value.retry_after == 2.0


def test_an_error_wrapped_in_a_list_is_read() -> None:
    body = [{"error": {"code": 404, "message": "models/x is not found", "status": "NOT_FOUND"}}]
    with pytest.raises(UpstreamModelNotFound, match="not found"):
        complete(lambda r: httpx.Response(404, json=body))


def test_the_key_is_scrubbed_from_error_messages() -> None:
    with pytest.raises(UpstreamError) as raised:
        complete(error_response(400, "INVALID_ARGUMENT", f"API key {KEY} not valid"))
    assert KEY not in raised.value.message
    assert KEY[:8] not in raised.value.message


def test_connect_error_is_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(UpstreamUnavailable, match="ConnectError"):
        complete(refuse)
