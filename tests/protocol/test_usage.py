"""Estimated usage when an upstream reports none: about four characters a token, plus message framing."""

from __future__ import annotations

import pytest

from lifeline.errors import InvalidRequest
from lifeline.protocol.parse import validate_chat_request
from lifeline.protocol.usage import delta_chars, estimate_usage


def test_estimate_rounds_up_and_adds_framing() -> None:
    body = {"messages": [{"role": "system", "content": "abcde"}, {"role": "user", "content": "abc"}]}
    # 8 prompt characters → 2 tokens, + 4 per message; 5 completion characters → 2 tokens (rounded up)
    assert estimate_usage(body, 5) == {"prompt_tokens": 2 + 8, "completion_tokens": 2, "total_tokens": 12}


def test_estimate_exact_multiple() -> None:
    body = {"messages": [{"role": "user", "content": "x" * 8}]}
    assert estimate_usage(body, 8) == {"prompt_tokens": 2 + 4, "completion_tokens": 2, "total_tokens": 8}


def test_estimate_counts_text_parts_only() -> None:
    parts = [{"type": "text", "text": "abcd"}, {"type": "image_url", "image_url": {"url": "http://x/long/url"}}, "junk"]
    body = {"messages": [{"role": "user", "content": parts}]}
    assert estimate_usage(body, 0)["prompt_tokens"] == 1 + 4


def test_estimate_with_null_content_and_no_completion() -> None:
    body = {"messages": [{"role": "assistant", "content": None}, "not a message"]}
    usage = estimate_usage(body, 0)
    assert usage["completion_tokens"] == 0
    assert usage["prompt_tokens"] == 8  # framing counted for both entries
    assert usage["total_tokens"] == 8


def test_estimate_without_messages() -> None:
    assert estimate_usage({}, 3) == {"prompt_tokens": 0, "completion_tokens": 1, "total_tokens": 1}


def test_delta_chars_of_stream_deltas() -> None:
    data = {"choices": [{"delta": {"content": "hello"}}, {"delta": {"content": "hi"}}]}
    assert delta_chars(data) == 7


def test_delta_chars_of_whole_message() -> None:
    assert delta_chars({"choices": [{"message": {"role": "assistant", "content": "abc"}}]}) == 3


def test_delta_chars_counts_tool_call_arguments() -> None:
    call = {"index": 0, "function": {"name": "f", "arguments": '{"a":1}'}}
    data = {"choices": [{"delta": {"content": "ab", "tool_calls": [call, {"index": 1}, "junk"]}}]}
    assert delta_chars(data) == 2 + len('{"a":1}')


def test_delta_chars_of_empty_or_odd_events() -> None:
    assert delta_chars({}) == 0
    assert delta_chars({"choices": None}) == 0
    assert delta_chars({"choices": []}) == 0
    assert delta_chars({"choices": ["x", {"delta": None}, {"delta": {"content": None}}]}) == 0
    assert delta_chars({"choices": [], "usage": {"prompt_tokens": 1}}) == 0


def test_estimate_survives_a_text_part_without_text() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]}
    with pytest.raises(InvalidRequest):
        validate_chat_request(body)  # refused at the door (a text part needs text), yet the estimate copes
    assert estimate_usage(body, 0)["prompt_tokens"] == 4
