"""Parsing and validating a chat request: errors name the parameter, types are strict, extras are kept."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from lifeline.errors import InvalidRequest
from lifeline.protocol.parse import MAX_JSON_DEPTH, parse_json_object, validate_chat_request


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "chat", "messages": [{"role": "user", "content": "hi"}], **extra}


def invalid(data: dict[str, Any]) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        validate_chat_request(data)
    return info.value


# --- JSON -------------------------------------------------------------------------------------------


def test_valid_json_object() -> None:
    assert parse_json_object(b'{"a": 1}') == {"a": 1}


@pytest.mark.parametrize("raw", [b"", b"{", b"{'a': 1}", b"not json", b'{"a": 1,}'])
def test_invalid_json(raw: bytes) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_json_object(raw)
    assert info.value.code == "invalid_json"
    assert info.value.status == 400
    assert "not valid JSON" in info.value.message


@pytest.mark.parametrize("raw", [b"[]", b"[1, 2]", b'"text"', b"3", b"null"])
def test_json_that_is_not_an_object(raw: bytes) -> None:
    with pytest.raises(InvalidRequest, match="must be a JSON object") as info:
        parse_json_object(raw)
    assert info.value.code == "invalid_json"


# --- required fields --------------------------------------------------------------------------------


def test_minimal_request() -> None:
    request = validate_chat_request(body())
    assert request.model == "chat"
    assert request.messages[0].role == "user"
    assert request.messages[0].content == "hi"


def test_missing_messages() -> None:
    err = invalid({"model": "chat"})
    assert err.param == "messages"
    assert err.code == "missing_required_parameter"
    assert "'messages'" in err.message


def test_missing_model() -> None:
    err = invalid({"messages": [{"role": "user", "content": "hi"}]})
    assert err.param == "model"
    assert err.code == "missing_required_parameter"


def test_empty_messages_rejected() -> None:
    err = invalid(body(messages=[]))
    assert err.param == "messages"
    assert err.code == "invalid_value"


def test_missing_role() -> None:
    err = invalid(body(messages=[{"content": "hi"}]))
    assert err.param == "messages[0].role"
    assert err.code == "missing_required_parameter"


# --- types ------------------------------------------------------------------------------------------


def test_temperature_wrong_type() -> None:
    err = invalid(body(temperature="hot"))
    assert err.param == "temperature"
    assert err.code == "invalid_type"
    assert "'temperature'" in err.message


def test_temperature_as_numeric_string_rejected_strictly() -> None:
    err = invalid(body(temperature="0.7"))
    assert err.param == "temperature"


def test_temperature_out_of_range() -> None:
    err = invalid(body(temperature=2.5))
    assert err.param == "temperature"
    assert err.code == "invalid_value"


def test_integer_temperature_allowed() -> None:
    assert validate_chat_request(body(temperature=1)).temperature == 1


def test_max_tokens_as_string_rejected() -> None:
    assert invalid(body(max_tokens="10")).param == "max_tokens"


def test_stream_as_string_rejected() -> None:
    assert invalid(body(stream="true")).param == "stream"


def test_invalid_role_names_the_message() -> None:
    err = invalid(body(messages=[{"role": "user", "content": "a"}, {"role": "wizard", "content": "b"}]))
    assert err.param == "messages[1].role"
    assert err.code == "invalid_value"


def test_first_message_role_invalid() -> None:
    assert invalid(body(messages=[{"role": "robot", "content": "x"}])).param == "messages[0].role"


def test_content_of_wrong_type_drops_union_tags_from_the_param() -> None:
    err = invalid(body(messages=[{"role": "user", "content": 5}]))
    assert err.param == "messages[0].content"


def test_stop_of_wrong_type() -> None:
    assert invalid(body(stop=5)).param == "stop"


def test_nested_stream_options() -> None:
    assert invalid(body(stream_options={"include_usage": "yes"})).param == "stream_options.include_usage"


def test_content_parts_accepted() -> None:
    parts = [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "http://x"}}]
    request = validate_chat_request(body(messages=[{"role": "user", "content": parts}]))
    content = request.messages[0].content
    assert isinstance(content, list)
    assert [p.type for p in content] == ["text", "image_url"]


# --- unknown fields ---------------------------------------------------------------------------------


def test_unknown_fields_allowed_and_kept() -> None:
    data = body(reasoning_effort="high", x_lifeline={"trace": True})
    data["messages"][0]["cache_control"] = {"type": "ephemeral"}
    request = validate_chat_request(data)
    dumped = request.model_dump(exclude_none=True)
    assert dumped["reasoning_effort"] == "high"
    assert dumped["x_lifeline"] == {"trace": True}
    assert dumped["messages"][0]["cache_control"] == {"type": "ephemeral"}


# --- derived properties -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, False),
        ({"stream": True}, False),
        ({"stream": True, "stream_options": {}}, False),
        ({"stream": True, "stream_options": {"include_usage": False}}, False),
        ({"stream": False, "stream_options": {"include_usage": True}}, False),
        ({"stream_options": {"include_usage": True}}, False),
        ({"stream": True, "stream_options": {"include_usage": True}}, True),
    ],
)
def test_wants_usage(extra: dict[str, Any], expected: bool) -> None:
    assert validate_chat_request(body(**extra)).wants_usage is expected


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, None),
        ({"max_tokens": 10}, 10),
        ({"max_completion_tokens": 20}, 20),
        ({"max_tokens": 10, "max_completion_tokens": 20}, 20),
    ],
)
def test_token_limit(extra: dict[str, Any], expected: int | None) -> None:
    assert validate_chat_request(body(**extra)).token_limit == expected


def test_zero_max_tokens_rejected() -> None:
    assert invalid(body(max_tokens=0)).param == "max_tokens"


# --- client mistakes that used to be 500s (issue #15.15) --------------------------------------------


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


@pytest.mark.parametrize("depth", [300, 1000])
def test_json_nested_too_deep_is_a_400_naming_the_parameter(depth: int) -> None:
    raw = orjson.dumps({"model": "chat", "metadata": "x"})[:-1] + b', "tools": ' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(InvalidRequest) as info:
        parse_json_object(raw)
    assert info.value.status == 400 and info.value.param == "tools"
    assert info.value.code == "json_too_deep"
    assert str(MAX_JSON_DEPTH) in info.value.message


def test_json_nested_within_the_limit_is_read_and_can_be_written_again() -> None:
    data = {"model": "chat", "tools": nested(MAX_JSON_DEPTH - 1)}
    parsed = parse_json_object(orjson.dumps(data))
    assert orjson.loads(orjson.dumps({"wrapped": {"again": parsed}})) == {"wrapped": {"again": data}}
    many_brackets = {"model": "chat", "text": "[{" * 10_000}  # brackets in a string are not nesting
    assert parse_json_object(orjson.dumps(many_brackets)) == many_brackets


@pytest.mark.parametrize(
    ("part", "param", "code"),
    [
        ({"type": "text", "text": 123}, "messages[0].content[1].text", "invalid_type"),
        ({"type": "text", "text": None}, "messages[0].content[1]", "invalid_value"),
        ({"type": "text"}, "messages[0].content[1]", "invalid_value"),
        ({"type": "text", "text": ["a"]}, "messages[0].content[1].text", "invalid_type"),
    ],
)
def test_a_text_part_needs_text(part: dict[str, Any], param: str, code: str) -> None:
    error = invalid(body(messages=[{"role": "user", "content": [{"type": "text", "text": "ok"}, part]}]))
    assert (error.param, error.code) == (param, code)
