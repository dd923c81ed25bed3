"""protocol/response_objects.py: chat chunks into the Responses stream events, for the shapes upstreams send
that the fault wall does not: tool calls without `index` (as Gemini's OpenAI-compatible endpoint streams them)
and refusals (chat's `refusal`), checked against the openai SDK's own types."""

from __future__ import annotations

from typing import Any

from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from lifeline.protocol.response_objects import ResponseStream, Shell, to_response
from lifeline.protocol.responses import validate_request

#: the openai SDK's own type of a Responses stream event: every event is validated against it
SDK_EVENT: TypeAdapter[ResponseStreamEvent] = TypeAdapter(ResponseStreamEvent)


def stream_of(*deltas: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every event of a stream made of these deltas (one chunk each), and the final response."""
    tools = [{"type": "function", "name": name} for name in ("get_weather", "get_time")]
    stream = ResponseStream(Shell.of(validate_request({"model": "m", "input": "Hi", "tools": tools}), "m"))
    events = stream.start()
    for delta in deltas:
        events += stream.feed({"choices": [{"index": 0, "delta": delta}]})
    events += stream.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    events += stream.completed({"prompt_tokens": 3, "completion_tokens": 5})
    for event in events:
        SDK_EVENT.validate_python(event)
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


# --- refusals ------------------------------------------------------------------------------------------


def shell() -> Shell:
    return Shell.of(validate_request({"model": "m", "input": "Hi"}), "m")


def test_a_refusal_is_a_refusal_part_of_the_message_in_a_whole_answer() -> None:
    completion = {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "refusal": "I can't."},
                "finish_reason": "stop",
            }
        ]
    }
    response = to_response(shell(), completion, {"prompt_tokens": 3, "completion_tokens": 2})
    assert [item["content"] for item in response["output"]] == [[{"type": "refusal", "refusal": "I can't."}]]
    parsed = Response.model_validate(response)
    assert parsed.output_text == "" and parsed.output[0].content[0].refusal == "I can't."  # type: ignore[union-attr]


def test_a_streamed_refusal_has_its_own_events_and_part_the_sdk_reads() -> None:
    stream = ResponseStream(shell())
    events = stream.start()
    for delta in ({"role": "assistant", "content": ""}, {"refusal": "I can"}, {"refusal": "'t."}):
        events += stream.feed({"choices": [{"index": 0, "delta": delta}]})
    events += stream.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    events += stream.completed({"prompt_tokens": 3, "completion_tokens": 2})
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.refusal.delta",
        "response.refusal.delta",
        "response.refusal.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[6]["refusal"] == "I can't." and events[3]["part"] == {"type": "refusal", "refusal": ""}
    assert events[-1]["response"]["output"][0]["content"] == [{"type": "refusal", "refusal": "I can't."}]
    sdk_events = [SDK_EVENT.validate_python(e) for e in events]
    assert [e.type for e in sdk_events] == [e["type"] for e in events]


def test_text_then_a_refusal_are_two_parts_of_one_message() -> None:
    stream = ResponseStream(shell())
    events = stream.start()
    for delta in ({"content": "Well."}, {"refusal": "No."}):
        events += stream.feed({"choices": [{"index": 0, "delta": delta}]})
    events += stream.completed({})
    added = [(e["content_index"], e["part"]["type"]) for e in events if e["type"] == "response.content_part.added"]
    assert added == [(0, "output_text"), (1, "refusal")]
    assert [p["type"] for p in events[-1]["response"]["output"][0]["content"]] == ["output_text", "refusal"]
    failed = ResponseStream(shell())
    failed.start()
    failed.feed({"choices": [{"index": 0, "delta": {"refusal": "No"}}]})
    cut = failed.failed("upstream broke")[-1]["response"]["output"][0]
    assert cut["status"] == "incomplete" and cut["content"] == [{"type": "refusal", "refusal": "No"}]
