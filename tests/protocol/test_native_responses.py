"""Native Responses targets, the pure parts: the body a native target is sent, the pass-through of its answer
under Lifeline's id, the end of a stream that broke, its events as chunks, and who may serve a request that
offers built-in tools."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from lifeline.attempts import Attempt, SkipReason
from lifeline.config import parse_config
from lifeline.config.presets import expand_target_presets
from lifeline.config.schema import Capabilities, OpenAITarget
from lifeline.protocol.native_responses import NativeStream, native_response
from lifeline.protocol.parse import validate_chat_request
from lifeline.protocol.response_objects import Shell
from lifeline.protocol.responses import native_body, to_chat_body, validate_request
from lifeline.providers.openai_responses import chat_usage, event_chunk, failure
from lifeline.routing.capabilities import abilities, needs_of, why_not

SEARCH = {"type": "web_search", "search_context_size": "low"}
FUNCTION = {"type": "function", "name": "f", "parameters": {"type": "object"}}


def test_built_in_tools_are_kept_aside_and_never_reach_the_chat_translation() -> None:
    data = {"model": "m", "input": "News?", "tools": [SEARCH, FUNCTION], "tool_choice": {"type": "web_search"}}
    parsed = validate_request(data)
    assert parsed.builtin_tools == [SEARCH] and [t["name"] for t in parsed.tools] == ["f"]
    chat = to_chat_body(parsed, [])
    assert [t["function"]["name"] for t in chat["tools"]] == ["f"] and "tool_choice" not in chat


def test_the_native_body_is_the_clients_with_the_conversation_resolved_and_lifelines_fields_removed() -> None:
    data = {
        "model": "m",
        "input": "And now?",
        "previous_response_id": "resp_1",
        "store": True,
        "fallbacks": ["other"],
        "tools": [SEARCH],
        "include": ["reasoning.encrypted_content"],
        "reasoning": {"effort": "low"},
    }
    history = [
        {"type": "message", "role": "user", "content": "Hi"},
        {"type": "reasoning"},
        {"type": "message", "role": "assistant", "content": "Hello"},
    ]
    body = native_body(data, history)
    assert body == {
        "model": "m",
        "input": [
            {"type": "message", "role": "user", "content": "Hi"},
            {"type": "message", "role": "assistant", "content": "Hello"},
            {"type": "message", "role": "user", "content": "And now?"},
        ],
        "store": False,
        "tools": [SEARCH],
        "include": ["reasoning.encrypted_content"],
        "reasoning": {"effort": "low"},
    }
    # without a conversation before it, the input goes as the client sent it
    assert native_body({"model": "m", "input": [{"role": "user", "content": "x"}]}, [])["input"] == [
        {"role": "user", "content": "x"}
    ]


def shell(**extra: Any) -> Shell:
    return Shell.of(validate_request({"model": "m", "input": "Hi", **extra}), "m")


def test_a_native_response_is_passed_through_under_lifelines_id_with_the_clients_own_fields() -> None:
    own = shell(previous_response_id="resp_before", store=False)
    upstream = {"id": "resp_up", "object": "response", "store": False, "previous_response_id": None, "extra": 1}
    answer = native_response(upstream, own)
    assert answer == {**upstream, "id": own.id, "previous_response_id": "resp_before", "store": False}


def events(*kinds_and_fields: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": kind, "sequence_number": i, **fields} for i, (kind, fields) in enumerate(kinds_and_fields)]


def test_a_native_stream_that_broke_ends_with_response_failed_holding_what_was_produced() -> None:
    own = shell()
    upstream = {"id": "resp_up", "object": "response", "status": "in_progress", "output": [], "model": "gpt-x"}
    call = {"type": "web_search_call", "id": "ws", "status": "completed"}
    stream = NativeStream(own)
    fed = [
        stream.feed(e)
        for e in events(
            ("response.created", {"response": upstream}),
            ("response.output_item.added", {"output_index": 0, "item": {**call, "status": "in_progress"}}),
            ("response.output_item.done", {"output_index": 0, "item": call}),
            ("response.output_item.added", {"output_index": 1, "item": {"type": "message", "id": "m", "content": []}}),
            ("response.output_text.delta", {"output_index": 1, "item_id": "m", "delta": "Hel"}),
            ("response.output_text.delta", {"output_index": 1, "item_id": "m", "delta": "lo"}),
        )
    ]
    assert fed[0]["response"]["id"] == own.id and fed[4]["delta"] == "Hel"
    (failed,) = stream.failed("the upstream broke")
    assert (failed["type"], failed["sequence_number"]) == ("response.failed", 6)
    response = failed["response"]
    assert (response["id"], response["status"], response["model"]) == (own.id, "failed", "gpt-x")
    assert response["error"] == {"code": "server_error", "message": "the upstream broke"}
    searched, message = response["output"]
    assert searched == call  # finished before the break: as it was
    assert message["status"] == "incomplete" and message["content"][0]["text"] == "Hello"
    assert stream.final is None


def test_native_events_are_chunks_content_from_the_first_delta_and_finished_with_the_usage() -> None:
    usage = {
        "input_tokens": 7,
        "input_tokens_details": {"cached_tokens": 2},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 3},
        "total_tokens": 12,
    }

    def chunk(event: dict[str, Any]) -> tuple[bool, bool, Any]:
        made = event_chunk(event, orjson.dumps(event))
        return made.content, made.finish, made.usage

    assert chunk({"type": "response.created", "response": {}}) == (False, False, None)
    assert chunk({"type": "response.output_item.added", "item": {}}) == (False, False, None)
    assert chunk({"type": "response.output_text.delta", "delta": "x"}) == (True, False, None)
    assert chunk({"type": "response.function_call_arguments.delta", "delta": "{"}) == (True, False, None)
    assert chunk({"type": "response.output_item.done", "item": {}})[0] is True
    assert chunk({"type": "response.completed", "response": {"usage": usage}}) == (
        False,
        True,
        {
            "prompt_tokens": 7,
            "completion_tokens": 5,
            "total_tokens": 12,
            "prompt_tokens_details": {"cached_tokens": 2},
            "completion_tokens_details": {"reasoning_tokens": 3},
        },
    )
    assert chunk({"type": "response.incomplete", "response": {}})[1] is True
    assert chat_usage(None) is None


def test_an_upstream_failure_is_read_from_error_events_failed_events_and_failed_responses() -> None:
    error = {"code": "server_error", "message": "boom"}
    assert failure({"type": "error", "code": "server_error", "message": "boom", "param": None}) == {
        **error,
        "param": None,
    }
    assert failure({"type": "response.failed", "response": {"status": "failed", "error": error}}) == error
    assert failure({"object": "response", "status": "failed", "error": error}) == error
    assert failure({"type": "response.completed", "response": {"status": "completed"}}) is None
    assert failure({"object": "response", "status": "completed", "error": None}) is None


def test_a_request_offering_a_built_in_tool_goes_only_to_native_targets_that_run_it() -> None:
    data = {"model": "m", "input": "News?", "tools": [SEARCH]}
    chat = to_chat_body(validate_request(data), [])
    needs = needs_of(validate_chat_request(chat), chat, native_body(data, []))
    translated = abilities("openai", Capabilities(), None)
    runs_it = abilities("openai", Capabilities(), None, frozenset({"web_search", "file_search"}))
    runs_other = abilities("openai", Capabilities(), None, frozenset({"file_search"}))
    assert why_not(needs, translated) == (SkipReason.NO_BUILTIN_TOOLS, "web_search")
    assert why_not(needs, runs_other) == (SkipReason.NO_BUILTIN_TOOLS, "web_search")
    assert why_not(needs, runs_it) is None
    assert why_not(needs_of(validate_chat_request(chat), chat), translated) is None  # a chat request needs none
    skipped = Attempt.skipped("t", SkipReason.NO_BUILTIN_TOOLS, "web_search")
    assert Attempt.from_ledger(skipped.as_ledger()) == skipped
    assert skipped.reason == "no built-in Responses tool: web_search"


def test_responses_tools_need_a_native_target_and_the_openai_preset_is_native() -> None:
    target = {"kind": "openai", "base_url": "http://h/v1", "model": "m"}
    with pytest.raises(ValidationError, match="responses_tools needs responses: native"):
        OpenAITarget.model_validate({**target, "responses_tools": ["web_search"]})
    assert OpenAITarget.model_validate(target).responses == "translated"
    data = {"targets": {"gpt": {"preset": "openai", "model": "gpt-x", "api_key": None}}}
    expanded = expand_target_presets(data, {})["targets"]["gpt"]
    assert expanded["responses"] == "native" and "web_search" in expanded["responses_tools"]
    config = parse_config({**data, "aliases": {"chat": {"targets": ["gpt"]}}})
    gpt = config.targets["gpt"]
    assert isinstance(gpt, OpenAITarget) and gpt.responses == "native"
    own = {"targets": {"gpt": {"preset": "openai", "model": "gpt-x", "api_key": None, "responses": "translated"}}}
    mine = parse_config({**own, "aliases": {"chat": {"targets": ["gpt"]}}}).targets["gpt"]  # the target's own wins
    assert isinstance(mine, OpenAITarget) and (mine.responses, mine.responses_tools) == ("translated", [])
