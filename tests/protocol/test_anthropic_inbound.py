"""Anthropic's Messages API in and out: validation naming the parameter, the request translated into an OpenAI
chat body, and OpenAI answers (whole and streamed) translated back into Anthropic's shapes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from lifeline.errors import (
    AllTargetsBusy,
    AllTargetsFailed,
    DeadlineExceeded,
    InvalidRequest,
    LifelineError,
    ModelNotFound,
    PayloadTooLarge,
    UpstreamOverloaded,
)
from lifeline.protocol.anthropic import (
    StreamTranslator,
    error_body,
    stop_reason_for,
    to_chat_body,
    to_message,
    to_usage,
    tool_input,
    validate_messages_request,
)
from lifeline.protocol.parse import validate_chat_request
from lifeline.server.sse import anthropic_event

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def request(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "model": "chat",
        "max_tokens": 100,
        "messages": list(messages) or [{"role": "user", "content": "hi"}],
        **extra,
    }


def translate(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body = to_chat_body(validate_messages_request(request(*messages, **extra)))
    validate_chat_request(body)  # whatever the translation makes, the OpenAI side must accept
    return body


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def assistant(content: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


def invalid(data: dict[str, Any]) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        to_chat_body(validate_messages_request(data))
    assert info.value.status == 400
    return info.value


# --- Anthropic request → OpenAI body -------------------------------------------------------------------


def test_a_plain_request() -> None:
    body = translate(user("hello"), temperature=0.5, top_p=0.9, stop_sequences=["END", "STOP"], stream=True)
    assert body == {
        "model": "chat",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 100,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["END", "STOP"],
        "stream": True,
    }


def test_unknown_fields_are_dropped_but_the_user_id_is_kept() -> None:
    body = translate(
        user("hi"),
        top_k=5,
        metadata={"user_id": "u-42"},
        thinking={"type": "enabled", "budget_tokens": 1024},
        service_tier="auto",
        anything_else=1,
    )
    assert body["user"] == "u-42"
    for dropped in ("top_k", "metadata", "thinking", "service_tier", "anything_else"):
        assert dropped not in body


def test_stream_false_sends_no_stream_field() -> None:
    assert "stream" not in translate(user("hi"), stream=False)


@pytest.mark.parametrize(
    ("system", "expected"),
    [
        ("Be brief.", "Be brief."),
        ([{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind.", "cache_control": {}}], None),
    ],
)
def test_the_system_prompt_becomes_the_first_message(system: Any, expected: str | None) -> None:
    body = translate(user("hi"), system=system)
    assert body["messages"][0] == {"role": "system", "content": expected or "Be brief.\n\nBe kind."}
    assert body["messages"][1] == {"role": "user", "content": "hi"}


def test_no_system_message_for_an_empty_system_prompt() -> None:
    assert translate(user("hi"), system="")["messages"] == [{"role": "user", "content": "hi"}]


def test_a_multi_turn_conversation_keeps_its_order() -> None:
    body = translate(
        user("Hi"),
        assistant("Hello! How can I help?"),
        user([{"type": "text", "text": "Tell me a joke."}]),
        assistant([{"type": "text", "text": "Why did the"}]),
    )
    assert body["messages"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke."},
        {"role": "assistant", "content": "Why did the"},
    ]


def test_a_system_turn_in_the_conversation_stays_where_it_is() -> None:
    body = translate(
        user("Hi"),
        assistant("Hello!"),
        {"role": "system", "content": [{"type": "text", "text": "Answer in French."}]},
        user("How are you?"),
    )
    assert body["messages"][2] == {"role": "system", "content": "Answer in French."}
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "system", "user"]


def test_images_become_image_url_parts() -> None:
    body = translate(
        user(
            [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                {"type": "text", "text": "What is in these?"},
            ]
        )
    )
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                {"type": "text", "text": "What is in these?"},
            ],
        }
    ]


def test_assistant_tool_use_becomes_tool_calls() -> None:
    body = translate(
        user("Weather in Paris?"),
        assistant(
            [
                {"type": "thinking", "thinking": "The user wants weather.", "signature": "sig"},
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Nice"}},
            ]
        ),
        user(
            [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18°C, sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "21°C"}]},
                {"type": "text", "text": "And tomorrow?"},
            ]
        ),
        tools=[WEATHER_TOOL],
    )
    assert body["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "toolu_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Nice"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18°C, sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "21°C"},
        {"role": "user", "content": "And tomorrow?"},
    ]


def test_an_assistant_turn_of_only_tool_calls_has_null_content() -> None:
    body = translate(
        user("Weather?"),
        assistant([{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}}]),
        user([{"type": "tool_result", "tool_use_id": "t1"}]),
    )
    assert body["messages"][1]["content"] is None
    assert body["messages"][1]["tool_calls"][0]["function"]["arguments"] == "{}"
    # a user turn of tool results only adds no user message
    assert body["messages"][2:] == [{"role": "tool", "tool_call_id": "t1", "content": ""}]


def test_a_failed_tool_result_says_so_and_its_images_follow_as_user_content() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "AAAA"}}
    body = translate(
        user("Screenshot?"),
        assistant([{"type": "tool_use", "id": "t1", "name": "shot", "input": {}}]),
        user(
            [
                {"type": "tool_result", "tool_use_id": "t1", "is_error": True, "content": "no display"},
                {"type": "tool_result", "tool_use_id": "t2", "content": [{"type": "text", "text": "here"}, image]},
            ]
        ),
    )
    assert body["messages"][2:] == [
        {"role": "tool", "tool_call_id": "t1", "content": "Error: no display"},
        {"role": "tool", "tool_call_id": "t2", "content": "here"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}}]},
    ]


def test_tools_become_function_tools() -> None:
    body = translate(user("hi"), tools=[WEATHER_TOOL, {"name": "noop", "input_schema": {"type": "object"}}])
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city.",
                "parameters": WEATHER_TOOL["input_schema"],
            },
        },
        {"type": "function", "function": {"name": "noop", "parameters": {"type": "object"}}},
    ]
    assert "tool_choice" not in body


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "any"}, {"tool_choice": "required"}),
        ({"type": "none"}, {"tool_choice": "none"}),
        (
            {"type": "tool", "name": "get_weather"},
            {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        ),
        ({"type": "any", "disable_parallel_tool_use": True}, {"tool_choice": "required", "parallel_tool_calls": False}),
    ],
)
def test_tool_choice(choice: dict[str, Any], expected: dict[str, Any]) -> None:
    body = translate(user("hi"), tools=[WEATHER_TOOL], tool_choice=choice)
    assert {k: body[k] for k in ("tool_choice", "parallel_tool_calls") if k in body} == expected


def test_a_tool_choice_without_tools_is_dropped() -> None:
    assert "tool_choice" not in translate(user("hi"), tool_choice={"type": "auto"})


# --- validation: errors name the Anthropic parameter ---------------------------------------------------


@pytest.mark.parametrize(
    ("data", "param", "words"),
    [
        ({"model": "chat", "messages": [user("hi")]}, "max_tokens", "Missing required parameter"),
        ({"max_tokens": 5, "messages": [user("hi")]}, "model", "Missing required parameter"),
        ({"model": "chat", "max_tokens": 5}, "messages", "Missing required parameter"),
        (request(max_tokens=0), "max_tokens", "greater than or equal to 1"),
        (request(max_tokens="5"), "max_tokens", "valid integer"),
        (request(temperature=1.5), "temperature", "less than or equal to 1"),
        (request(temperature="0.5"), "temperature", "valid number"),
        (request(top_p=-1), "top_p", "greater than or equal to 0"),
        (request(stream="yes"), "stream", "valid boolean"),
        (request(stop_sequences="END"), "stop_sequences", "valid list"),
        (request(system=[{"type": "text", "text": 1}]), "system[0].text", "valid string"),
        ({"model": "chat", "max_tokens": 5, "messages": []}, "messages", "at least 1 item"),
        (request({"role": "tool", "content": "x"}), "messages[0].role", "'user', 'assistant' or 'system'"),
        (
            request({"role": "system", "content": [{"type": "tool_result", "tool_use_id": "t"}]}),
            "messages[0].content[0].type",
            "belong in user or assistant messages",
        ),
        (request(user(5)), "messages[0].content", "valid string or a valid list"),
        (request(user([{"type": "text", "text": 5}])), "messages[0].content[0].text", "valid string"),
        (request(user([{"type": "text"}])), "messages[0].content[0].text", "Missing required parameter"),
        (request(user([{"text": "x"}])), "messages[0].content[0].type", "Missing required parameter"),
        (request(user([{"type": "document", "source": {}}])), "messages[0].content[0].type", "'document'"),
        (
            request(user([{"type": "image", "source": {"type": "base64", "data": "x"}}])),
            "messages[0].content[0].source.media_type",
            "Missing required parameter",
        ),
        (
            request(user([{"type": "image", "source": {"type": "file", "file_id": "f"}}])),
            "messages[0].content[0].source.type",
            "'file'",
        ),
        (
            request(user([{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text"}]}])),
            "messages[0].content[0].content[0].text",
            "Missing required parameter",
        ),
        (request(user([{"type": "tool_result"}])), "messages[0].content[0].tool_use_id", "Missing required"),
        (
            request(assistant([{"type": "tool_use", "id": "t", "name": "n", "input": "{}"}])),
            "messages[0].content[0].input",
            "valid dictionary",
        ),
        (request(tools=[{"name": "x"}]), "tools[0].input_schema", "Missing required parameter"),
        (request(tools=[{"description": "x", "input_schema": {}}]), "tools[0].name", "Missing required parameter"),
        (
            request(tools=[{"type": "web_search_20250305", "name": "web_search"}]),
            "tools[0].type",
            "not supported",
        ),
        (request(tool_choice={"type": "tool"}), "tool_choice.name", "Missing required parameter"),
        (request(tool_choice={"type": "sometimes"}), "tool_choice.type", "'sometimes'"),
        (request(tools=[WEATHER_TOOL], tool_choice={"type": "tool", "name": "nope"}), "tool_choice.name", "nope"),
        (request(metadata={"user_id": 7}), "metadata.user_id", "valid string"),
        (
            request(user([{"type": "tool_use", "id": "t", "name": "n", "input": {}}])),
            "messages[0].content[0].type",
            "belong in assistant messages",
        ),
        (
            request(user("hi"), assistant([{"type": "tool_result", "tool_use_id": "t"}])),
            "messages[1].content[0].type",
            "belong in user messages",
        ),
    ],
)
def test_validation_names_the_parameter(data: dict[str, Any], param: str, words: str) -> None:
    error = invalid(data)
    assert error.param == param
    assert f"'{param}'" in error.message
    assert words in error.message


# --- OpenAI answer → Anthropic message ----------------------------------------------------------------


def completion(message: dict[str, Any], finish: str | None = "stop", **choice: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "served-model",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, **choice}],
    }


USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


def message_of(body: dict[str, Any], stop_sequences: list[str] | None = None) -> dict[str, Any]:
    return to_message(body, message_id="msg_abc", model="served-model", usage=USAGE, stop_sequences=stop_sequences)


def test_a_text_answer() -> None:
    assert message_of(completion({"role": "assistant", "content": "Hello there."})) == {
        "id": "msg_abc",
        "type": "message",
        "role": "assistant",
        "model": "served-model",
        "content": [{"type": "text", "text": "Hello there."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5},
    }


def test_tool_calls_become_tool_use_blocks_with_parsed_input() -> None:
    calls = [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "noop", "arguments": ""}},
    ]
    message = message_of(completion({"role": "assistant", "content": "Checking.", "tool_calls": calls}, "tool_calls"))
    assert message["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "noop", "input": {}},
    ]
    assert message["stop_reason"] == "tool_use"


def test_a_tool_call_finished_with_stop_is_still_tool_use() -> None:
    calls = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    assert message_of(completion({"role": "assistant", "content": None, "tool_calls": calls}))["content"] == [
        {"type": "tool_use", "id": "c", "name": "f", "input": {}}
    ]
    assert message_of(completion({"role": "assistant", "tool_calls": calls}, "stop"))["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ("", {}),
        (None, {}),
        ('{"a": ', {"_raw_arguments": '{"a": '}),
        ("[1, 2]", {"_raw_arguments": "[1, 2]"}),
    ],
)
def test_tool_input(arguments: Any, expected: dict[str, Any]) -> None:
    assert tool_input(arguments) == expected


@pytest.mark.parametrize(
    ("finish", "matched", "expected"),
    [
        ("stop", None, ("end_turn", None)),
        (None, None, ("end_turn", None)),
        ("length", None, ("max_tokens", None)),
        ("tool_calls", None, ("tool_use", None)),
        ("function_call", None, ("tool_use", None)),
        ("content_filter", None, ("refusal", None)),
        ("stop", "END", ("stop_sequence", "END")),  # vLLM names the stop string that matched
        ("stop", "OTHER", ("end_turn", None)),  # not one of ours: the end of the turn
        ("something_new", None, ("end_turn", None)),
    ],
)
def test_stop_reasons(finish: str | None, matched: str | None, expected: tuple[str, str | None]) -> None:
    assert stop_reason_for(finish, matched, ["END"], tool_use=False) == expected


def test_the_matched_stop_sequence_reaches_the_message() -> None:
    message = message_of(completion({"role": "assistant", "content": "a b"}, "stop", stop_reason="END"), ["END"])
    assert (message["stop_reason"], message["stop_sequence"]) == ("stop_sequence", "END")


def test_a_refusal_is_text() -> None:
    message = message_of(completion({"role": "assistant", "content": None, "refusal": "I can't."}, "content_filter"))
    assert message["content"] == [{"type": "text", "text": "I can't."}]
    assert message["stop_reason"] == "refusal"


def test_an_answer_without_choices_is_an_empty_message() -> None:
    message = message_of({"choices": []})
    assert message["content"] == [] and message["stop_reason"] == "end_turn"


def test_usage_counts_cache_reads_apart() -> None:
    usage = {"prompt_tokens": 100, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 60}}
    assert to_usage(usage) == {"input_tokens": 40, "output_tokens": 7, "cache_read_input_tokens": 60}
    assert to_usage({}) == {"input_tokens": 0, "output_tokens": 0}


# --- OpenAI stream → Anthropic events -----------------------------------------------------------------


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": choices, **extra}


def run(chunks: list[dict[str, Any]], stop_sequences: list[str] | None = None) -> list[dict[str, Any]]:
    translator = StreamTranslator("msg_abc", "served-model", stop_sequences)
    events = translator.start(9)
    for data in chunks:
        events += translator.feed(data)
    return events + translator.finish(USAGE)


def test_a_text_stream() -> None:
    events = run(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hello"}),
            chunk({"content": " world"}),
            chunk({}, "stop"),
            chunk(None, usage=USAGE),
        ]
    )
    assert events == [
        {
            "type": "message_start",
            "message": {
                "id": "msg_abc",
                "type": "message",
                "role": "assistant",
                "model": "served-model",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 9, "output_tokens": 0},
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " world"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"input_tokens": 10, "output_tokens": 5},
        },
        {"type": "message_stop"},
    ]


def test_a_stream_of_text_then_tool_calls() -> None:
    first = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    second = {"index": 1, "id": "call_2", "type": "function", "function": {"name": "noop", "arguments": "{}"}}
    events = run(
        [
            chunk({"content": "Checking."}),
            chunk({"tool_calls": [first]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
            chunk({"tool_calls": [second]}),
            chunk({}, "tool_calls"),
        ]
    )
    kinds = [(e["type"], e.get("index")) for e in events]
    assert kinds == [
        ("message_start", None),
        ("content_block_start", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("content_block_start", 2),
        ("content_block_delta", 2),
        ("content_block_stop", 2),
        ("message_delta", None),
        ("message_stop", None),
    ]
    assert events[4]["content_block"] == {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}}
    pieces = [e["delta"]["partial_json"] for e in events if e.get("index") == 1 and e["type"] == "content_block_delta"]
    assert orjson.loads("".join(pieces)) == {"city": "Paris"}
    assert events[-2]["delta"]["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("finish", "extra", "expected"),
    [
        ("length", {}, ("max_tokens", None)),
        ("stop", {"stop_reason": "END"}, ("stop_sequence", "END")),
        ("content_filter", {}, ("refusal", None)),
    ],
)
def test_a_stream_s_stop_reason(finish: str, extra: dict[str, Any], expected: tuple[str, str | None]) -> None:
    data = chunk({"content": "a"})
    data["choices"][0].update(finish_reason=finish, **extra)
    delta = run([data], ["END"])[-2]["delta"]
    assert (delta["stop_reason"], delta["stop_sequence"]) == expected


def test_an_empty_stream_still_ends_as_a_message() -> None:
    assert [e["type"] for e in run([chunk({}, "stop")])] == ["message_start", "message_delta", "message_stop"]


def test_events_are_named_by_their_type() -> None:
    assert anthropic_event({"type": "message_stop"}) == b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


# --- errors --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (InvalidRequest("bad"), "invalid_request_error"),
        (LifelineError("no key", status=401), "authentication_error"),
        (LifelineError("forbidden", status=403), "permission_error"),
        (ModelNotFound("no such model"), "not_found_error"),
        (PayloadTooLarge("too big"), "request_too_large"),
        (AllTargetsBusy("busy"), "rate_limit_error"),
        (AllTargetsFailed("failed"), "api_error"),
        (DeadlineExceeded("late"), "timeout_error"),
        (UpstreamOverloaded("queue full"), "overloaded_error"),
        (LifelineError("odd", status=422), "invalid_request_error"),
        (LifelineError("bug"), "api_error"),
    ],
)
def test_errors_in_anthropic_s_shape(error: LifelineError, kind: str) -> None:
    assert error_body(error, "req-1") == {
        "type": "error",
        "error": {"type": kind, "message": error.message},
        "request_id": "req-1",
    }
