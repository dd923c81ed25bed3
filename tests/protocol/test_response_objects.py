"""protocol/response_objects.py: chat chunks into the Responses stream events, for the shapes upstreams send
that the fault wall does not (tool calls without `index`, as Gemini's OpenAI-compatible endpoint streams them)."""

from __future__ import annotations

from typing import Any

from lifeline.protocol.response_objects import ResponseStream, Shell
from lifeline.protocol.responses import validate_request


def stream_of(*deltas: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every event of a stream made of these deltas (one chunk each), and the final response."""
    tools = [{"type": "function", "name": name} for name in ("get_weather", "get_time")]
    stream = ResponseStream(Shell.of(validate_request({"model": "m", "input": "Hi", "tools": tools}), "m"))
    events = stream.start()
    for delta in deltas:
        events += stream.feed({"choices": [{"index": 0, "delta": delta}]})
    events += stream.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    events += stream.completed({"prompt_tokens": 3, "completion_tokens": 5})
    return events, events[-1]["response"]


def calls_of(response: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(item["call_id"], item["name"], item["arguments"]) for item in response["output"]]


def call(call_id: str | None, name: str | None, arguments: str, index: int | None = None) -> dict[str, Any]:
    delta: dict[str, Any] = {"function": {"arguments": arguments} | ({"name": name} if name else {})}
    if call_id is not None:
        delta |= {"id": call_id, "type": "function"}
    return delta | ({} if index is None else {"index": index})


def test_tool_calls_without_an_index_each_become_a_function_call_item() -> None:
    two_in_one_chunk = {"tool_calls": [call("a", "get_weather", '{"city": "Paris"}'), call("b", "get_time", "{}")]}
    events, response = stream_of(two_in_one_chunk)
    assert calls_of(response) == [("a", "get_weather", '{"city": "Paris"}'), ("b", "get_time", "{}")]
    kinds = [e["type"] for e in events if e["type"].startswith("response.output_item")]
    assert kinds == ["response.output_item.added", "response.output_item.done"] * 2


def test_argument_pieces_without_an_index_or_id_go_on_with_the_latest_call() -> None:
    _, response = stream_of(
        {"tool_calls": [call("a", "get_weather", '{"city": ')]},
        {"tool_calls": [call(None, None, '"Paris"}')]},
        {"tool_calls": [call("", None, "")]},  # an empty id, as some proxies send it
        {"tool_calls": [call("b", "get_time", "{")]},
        {"tool_calls": [call(None, None, "}")]},
    )
    assert calls_of(response) == [("a", "get_weather", '{"city": "Paris"}'), ("b", "get_time", "{}")]


def test_calls_that_all_say_index_0_are_told_apart_by_their_ids() -> None:
    _, response = stream_of(
        {"tool_calls": [call("a", "get_weather", '{"city": "Paris"}', index=0)]},
        {"tool_calls": [call("b", "get_time", "{}", index=0)]},
    )
    assert calls_of(response) == [("a", "get_weather", '{"city": "Paris"}'), ("b", "get_time", "{}")]


def test_indexed_calls_with_their_id_repeated_on_each_piece_stay_one_call() -> None:
    _, response = stream_of(
        {"tool_calls": [call("a", "get_weather", '{"city": ', index=0)]},
        {"tool_calls": [call("a", None, '"Paris"}', index=0)]},
        {"tool_calls": [call("b", "get_time", "{}", index=1)]},
    )
    assert calls_of(response) == [("a", "get_weather", '{"city": "Paris"}'), ("b", "get_time", "{}")]
