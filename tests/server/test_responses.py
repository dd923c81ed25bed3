"""/v1/responses in process: the Responses API over the real app and fake chat targets (tests/server/fakes.py) —
translated onto chat, accounted once like chat, streamed as the Responses events in order, continued or
failed like a chat stream, and stored per key with retention. Real clients on real sockets are in
tests/integration/test_responses_api.py."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson
import pytest

from lifeline.accounting.responses import ResponseStore
from lifeline.protocol.responses import to_chat_body, validate_request
from lifeline.providers.base import ChatCall, Completion
from lifeline.server.gateway import Gateway
from tests.server.fakes import USAGE, InProcess, Scenario, leave_early, make_config, run


def events_of(response: httpx.Response) -> list[dict[str, Any]]:
    """The Responses stream: each event's `data`, checked against its `event:` name."""
    events = []
    for block in response.text.split("\n\n"):
        if not block.strip():
            continue
        name, data = block.split("\n")
        event = orjson.loads(data.removeprefix("data: "))
        assert name == f"event: {event['type']}"
        events.append(event)
    return events


def record_calls(served: InProcess, target: str = "t1") -> list[dict[str, Any]]:
    """The chat bodies `target` is asked for whole answers."""
    provider = served.providers[target]
    bodies: list[dict[str, Any]] = []
    complete = provider.complete

    async def recording(call: ChatCall) -> Completion:
        bodies.append(call.body)
        return await complete(call)

    provider.complete = recording  # type: ignore[method-assign]
    return bodies


# --- whole answers --------------------------------------------------------------------------------------


def test_a_string_input_is_answered_as_a_response_object_and_accounted_once_like_chat() -> None:
    async def scenario(served: InProcess, client: httpx.AsyncClient) -> httpx.Response:
        return await client.post("/v1/responses", json={"model": "chat", "input": "Say hello.", "metadata": {"a": "b"}})

    response, served = run(make_config("ok"), scenario)
    assert response.status_code == 200
    body = response.json()
    assert body["id"].startswith("resp_") and body["object"] == "response" and body["status"] == "completed"
    assert body["output"] == [
        {
            "type": "message",
            "id": body["output"][0]["id"],
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Hello there", "annotations": [], "logprobs": []}],
        }
    ]
    assert body["usage"]["input_tokens"] == 7 and body["usage"]["output_tokens"] == 2
    assert body["usage"]["total_tokens"] == 9
    assert (body["model"], body["metadata"], body["store"]) == ("ok", {"a": "b"}, True)
    assert (response.headers["x-lifeline-target"], response.headers["x-lifeline-attempts"]) == ("t1", "1")
    record = served.record
    assert (record.outcome, record.status, record.target, record.streamed) == ("ok", 200, "t1", False)
    assert (record.prompt_tokens, record.completion_tokens) == (USAGE["prompt_tokens"], USAGE["completion_tokens"])


def test_a_responses_request_fails_over_like_chat() -> None:
    async def scenario(served: InProcess, client: httpx.AsyncClient) -> httpx.Response:
        return await client.post("/v1/responses", json={"model": "chat", "input": "Hi"})

    response, served = run(make_config("down", "ok"), scenario)
    assert response.status_code == 200 and response.json()["output"][0]["content"][0]["text"] == "Hello there"
    assert (response.headers["x-lifeline-target"], response.headers["x-lifeline-attempts"]) == ("t2", "2")
    assert [a["outcome"] for a in served.record.attempts] == ["model_not_found", "ok"]


def test_previous_response_id_rebuilds_the_conversation_before_the_new_input() -> None:
    async def scenario(served: InProcess, client: httpx.AsyncClient) -> list[Any]:
        bodies = record_calls(served)
        first = await client.post(
            "/v1/responses", json={"model": "chat", "input": "Say hello.", "instructions": "Be brief."}
        )
        second = await client.post(
            "/v1/responses",
            json={"model": "chat", "input": "Again.", "previous_response_id": first.json()["id"]},
        )
        await client.post(
            "/v1/responses",
            json={"model": "chat", "input": "Once more.", "previous_response_id": second.json()["id"]},
        )
        return [first, second, bodies]

    (first, second, bodies), _ = run(make_config("ok"), scenario)
    assert second.status_code == 200 and second.json()["previous_response_id"] == first.json()["id"]
    # the earlier input and its answer, then the new input; instructions are not carried over (as OpenAI's)
    assert bodies[1]["messages"] == [
        {"role": "user", "content": "Say hello."},
        {"role": "assistant", "content": "Hello there"},
        {"role": "user", "content": "Again."},
    ]
    assert bodies[0]["messages"][0] == {"role": "system", "content": "Be brief."}
    # a chain: each stored response keeps the whole conversation up to it
    assert bodies[2]["messages"] == [
        *bodies[1]["messages"],
        {"role": "assistant", "content": "Hello there"},
        {"role": "user", "content": "Once more."},
    ]


def test_a_response_not_yet_written_is_found_at_once_and_written_at_shutdown() -> None:
    async def scenario(served: InProcess, client: httpx.AsyncClient) -> list[Any]:
        bodies = record_calls(served)
        first = await client.post("/v1/responses", json={"model": "chat", "input": "Say hello."})
        rid = first.json()["id"]
        db = served.app.state.gateway.accounting.db
        written = await asyncio.to_thread(db.query, "SELECT id FROM responses WHERE id = ?", (rid,))
        got = await client.get(f"/v1/responses/{rid}")
        items = await client.get(f"/v1/responses/{rid}/input_items")
        second = await client.post(
            "/v1/responses", json={"model": "chat", "input": "Again.", "previous_response_id": rid}
        )
        return [first, written, got, items, second, bodies]

    config = make_config("ok")
    writes = config.responses.writes.model_copy(update={"commit_interval": 3600.0})  # written only at shutdown
    config = config.model_copy(update={"responses": config.responses.model_copy(update={"writes": writes})})
    (first, written, got, items, second, bodies), served = run(config, scenario)
    assert written == []  # answered before it was written …
    assert got.json() == first.json()  # … and read back from memory all the same
    assert [item["role"] for item in items.json()["data"]] == ["user"]
    assert second.status_code == 200
    assert bodies[1]["messages"][:2] == [
        {"role": "user", "content": "Say hello."},
        {"role": "assistant", "content": "Hello there"},
    ]
    db = served.app.state.gateway.accounting.open_db()
    try:
        ids = {row[0] for row in db.query("SELECT id FROM responses")}
    finally:
        db.close()
    assert {first.json()["id"], second.json()["id"]} <= ids


def test_store_false_keeps_nothing_and_cannot_be_continued() -> None:
    async def scenario(served: InProcess, client: httpx.AsyncClient) -> list[httpx.Response]:
        made = await client.post("/v1/responses", json={"model": "chat", "input": "Hi", "store": False})
        rid = made.json()["id"]
        got = await client.get(f"/v1/responses/{rid}")
        follow = await client.post("/v1/responses", json={"model": "chat", "input": "x", "previous_response_id": rid})
        return [made, got, follow]

    (made, got, follow), _ = run(make_config("ok"), scenario)
    assert made.status_code == 200 and made.json()["store"] is False
    assert got.status_code == 404 and got.json()["error"]["code"] == "response_not_found"
    assert follow.status_code == 404 and follow.json()["error"]["param"] == "previous_response_id"


def test_a_stored_response_is_retrieved_and_deleted_once() -> None:
    async def scenario(served: InProcess, client: httpx.AsyncClient) -> list[httpx.Response]:
        made = await client.post("/v1/responses", json={"model": "chat", "input": "Hi"})
        rid = made.json()["id"]
        return [
            made,
            await client.get(f"/v1/responses/{rid}"),
            await client.delete(f"/v1/responses/{rid}"),
            await client.get(f"/v1/responses/{rid}"),
            await client.delete(f"/v1/responses/{rid}"),
        ]

    (made, got, deleted, gone, again), _ = run(make_config("ok"), scenario)
    assert got.json() == made.json()
    assert deleted.json() == {"id": made.json()["id"], "object": "response.deleted", "deleted": True}
    assert gone.status_code == again.status_code == 404


def test_a_stored_response_past_retention_is_gone_and_pruned() -> None:
    async def scenario(served: InProcess, client: httpx.AsyncClient) -> list[Any]:
        made = await client.post("/v1/responses", json={"model": "chat", "input": "Hi"})
        rid = made.json()["id"]
        fresh = await client.get(f"/v1/responses/{rid}")
        gateway: Gateway = served.app.state.gateway
        db = gateway.accounting.db
        assert await asyncio.to_thread(gateway.accounting.responses.flush)  # written in the table, to age it there
        await asyncio.to_thread(
            db.execute, "UPDATE responses SET created_at = ? WHERE id = ?", (time.time() - 3 * 86400, rid)
        )
        old = await client.get(f"/v1/responses/{rid}")
        # the prune the gateway runs at start may have gone by already: either way the row must be gone
        await asyncio.to_thread(gateway.accounting.responses.prune)
        rows = await asyncio.to_thread(db.query, "SELECT id FROM responses WHERE id = ?", (rid,))
        return [fresh, old, rows]

    config = make_config("ok").model_copy(
        update={"responses": make_config("ok").responses.model_copy(update={"retention_days": 2})}
    )
    (fresh, old, rows), _ = run(config, scenario)
    assert fresh.status_code == 200
    assert old.status_code == 404
    assert rows == []


def test_retention_cutoff_follows_the_setting() -> None:
    class NoDb:
        pass

    store = ResponseStore(NoDb(), 1.5)  # type: ignore[arg-type]
    assert store.cutoff(now=10 * 86400.0) == 8.5 * 86400.0
    assert ResponseStore(NoDb(), None).cutoff(now=5.0) == 0.0  # type: ignore[arg-type]


# --- streams --------------------------------------------------------------------------------------------


STREAM_ORDER = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def stream(body: dict[str, Any]) -> Scenario:
    async def scenario(served: InProcess, client: httpx.AsyncClient) -> list[Any]:
        response = await client.post("/v1/responses", json={"model": "chat", "stream": True, **body})
        rid = events_of(response)[0]["response"]["id"]
        return [response, await client.get(f"/v1/responses/{rid}")]

    return scenario


def test_a_stream_sends_the_responses_events_in_order_and_stores_the_completed_response() -> None:
    (response, stored), served = run(make_config("ok"), stream({"input": "Hi"}))
    events = events_of(response)
    assert [e["type"] for e in events] == STREAM_ORDER
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "Hello there"
    completed = events[-1]["response"]
    assert completed["status"] == "completed" and completed["usage"]["output_tokens"] == 2
    assert completed["output"][0]["content"][0]["text"] == "Hello there"
    assert stored.json() == completed
    record = served.record
    assert (record.outcome, record.streamed, record.target) == ("ok", True, "t1")


def test_a_stream_broken_after_content_is_continued_on_a_prefix_capable_target() -> None:
    (response, stored), served = run(make_config("cut", "ok", prefill=True), stream({"input": "Hi"}))
    events = events_of(response)
    assert [e["type"] for e in events][-1] == "response.completed"
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "Hello there"
    completed = events[-1]["response"]
    assert completed["output"][0]["content"][0]["text"] == "Hello there"
    assert completed["x_lifeline"]["continued"] == [
        {"from": "t1", "to": "t2", "after_chars": 5, "reason": "cut_off", "mode": "prefill"}
    ]
    assert completed["x_lifeline"]["usage_estimated"] is True
    # the stored copy is the response as OpenAI words it, without the gateway's notes
    assert stored.status_code == 200 and stored.json() == {k: v for k, v in completed.items() if k != "x_lifeline"}
    assert served.record.outcome == "ok" and served.record.target == "t2"


def test_a_stream_that_cannot_be_continued_ends_with_response_failed_and_is_not_stored() -> None:
    # the second target fails too, whether asked to continue or to restart
    (response, stored), served = run(make_config("cut", "down"), stream({"input": "Hi"}))
    events = events_of(response)
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "response.failed" and "response.completed" not in kinds
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and "incomplete" in failed["error"]["message"]
    assert failed["output"][0]["content"][0]["text"] == "Hello"
    assert stored.status_code == 404
    assert served.record.outcome == "broken"


def test_a_client_that_leaves_a_stream_is_accounted_once_and_nothing_is_stored() -> None:
    async def scenario(served: InProcess, client: httpx.AsyncClient) -> list[Any]:
        body = {"model": "chat", "input": "Hi", "stream": True}
        status, pieces = await leave_early(served.app, "/v1/responses", body, after_pieces=1)
        sent = b"".join(pieces)
        rid = orjson.loads(sent.split(b"\n")[1].removeprefix(b"data: "))["response"]["id"]
        gateway: Gateway = served.app.state.gateway
        assert await asyncio.to_thread(gateway.accounting.responses.flush)  # nothing queued for the writer either
        rows = await asyncio.to_thread(gateway.accounting.db.query, "SELECT id FROM responses WHERE id = ?", (rid,))
        return [status, sent, rows]

    (status, sent, rows), served = run(make_config("hang"), scenario)
    assert status == 200 and b"response.created" in sent and b"response.completed" not in sent
    assert rows == []
    record = served.record
    assert (record.outcome, record.status, record.streamed, record.target) == ("client_closed", 200, True, "t1")


def test_a_client_that_leaves_a_whole_answer_is_accounted_once_as_client_closed() -> None:
    async def scenario(served: InProcess, client: httpx.AsyncClient) -> int | None:
        body = {"model": "chat", "input": "Hi"}
        status, _ = await leave_early(served.app, "/v1/responses", body, gone=served.providers["t1"].called)
        return status

    status, served = run(make_config("hang"), scenario)
    assert status == 499
    assert (served.record.outcome, served.record.status, served.record.streamed) == ("client_closed", 499, False)


# --- translation and bad inputs --------------------------------------------------------------------------


def test_items_tools_and_formats_translate_onto_chat() -> None:
    request = validate_request(
        {
            "model": "chat",
            "instructions": "Use tools.",
            "input": [
                {"role": "developer", "content": "Be exact."},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
                {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": '{"city":"Oslo"}'},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
                {"type": "reasoning", "summary": []},
            ],
            "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}, "strict": True}],
            "tool_choice": {"type": "function", "name": "weather"},
            "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": True}},
            "max_output_tokens": 50,
            "temperature": 0.2,
        }
    )
    body = to_chat_body(request, [])
    assert body["messages"] == [
        {"role": "system", "content": "Use tools."},
        {"role": "system", "content": "Be exact."},
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    assert body["tools"] == [
        {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}, "strict": True}}
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": True},
    }
    assert (body["max_tokens"], body["temperature"]) == (50, 0.2)
    assert "stream" not in body


BAD = [
    ({"input": "x"}, "model", "missing_required_parameter"),
    ({"model": "chat"}, "input", "missing_required_parameter"),
    ({"model": "chat", "input": 3}, "input", "invalid_type"),
    ({"model": "chat", "input": {"role": "user"}}, "input", "invalid_type"),
    ({"model": "chat", "input": []}, "input", "invalid_value"),
    ({"model": "chat", "input": [{"type": "reasoning", "summary": []}]}, "input", "invalid_value"),
    ({"model": "chat", "input": ["hi"]}, "input[0]", "invalid_type"),
    ({"model": "chat", "input": [{"content": "hi"}]}, "input[0].type", "missing_required_parameter"),
    ({"model": "chat", "input": [{"type": "web_search_call", "id": "w"}]}, "input[0].type", "invalid_value"),
    ({"model": "chat", "input": [{"type": "item_reference", "id": "m"}]}, "input[0].type", "invalid_value"),
    ({"model": "chat", "input": [{"role": "tool", "content": "x"}]}, "input[0].role", "invalid_value"),
    ({"model": "chat", "input": [{"role": "user", "content": 5}]}, "input[0].content", "invalid_type"),
    (
        {"model": "chat", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
        "input[0].content[0].type",
        "invalid_value",
    ),
    (
        {"model": "chat", "input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
        "input[0].call_id",
        "invalid_type",
    ),
    ({"model": "chat", "input": [{"type": "function_call_output", "call_id": "c"}]}, "input[0].output", "invalid_type"),
    ({"model": "chat", "input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type", "unsupported_tool"),
    ({"model": "chat", "input": "x", "tools": [{"type": "file_search"}]}, "tools[0].type", "unsupported_tool"),
    ({"model": "chat", "input": "x", "tools": [{"type": "code_interpreter"}]}, "tools[0].type", "unsupported_tool"),
    ({"model": "chat", "input": "x", "tools": [{"type": "computer_use_preview"}]}, "tools[0].type", "unsupported_tool"),
    ({"model": "chat", "input": "x", "tools": [{"type": "function"}]}, "tools[0].name", "invalid_value"),
    ({"model": "chat", "input": "x", "text": {"format": {"type": "json_schema"}}}, "text.format.name", "invalid_value"),
    ({"model": "chat", "input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type", "invalid_value"),
    ({"model": "chat", "input": "x", "max_output_tokens": 0}, "max_output_tokens", "invalid_value"),
    ({"model": "chat", "input": "x", "store": "yes"}, "store", "invalid_type"),
    ({"model": "chat", "input": "x", "background": True}, "background", "unsupported_parameter"),
    (
        {"model": "chat", "input": "x", "tool_choice": {"type": "function", "name": "nope"}},
        "tool_choice.name",
        "invalid_value",
    ),
]


@pytest.mark.parametrize(("body", "param", "code"), BAD)
def test_each_wrong_shape_is_a_400_in_the_openai_envelope_naming_the_parameter(
    body: dict[str, Any], param: str, code: str
) -> None:
    async def scenario(served: InProcess, client: httpx.AsyncClient) -> httpx.Response:
        return await client.post("/v1/responses", json=body)

    response, served = run(make_config("ok"), scenario)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error")
    assert not served.providers["t1"].called.is_set() and served.finishes == []


# --- an answer cut by max_output_tokens ---------------------------------------------------------------------


def test_a_cut_answer_is_an_incomplete_response_with_an_incomplete_message_whole_or_streamed() -> None:
    """OpenAI marks the item that was being written `incomplete` too, not `completed` inside an incomplete
    response; earlier items stay completed."""
    from lifeline.protocol.response_objects import ResponseStream, Shell, to_response

    shell = Shell.of(validate_request({"model": "chat", "input": "Count.", "max_output_tokens": 3}), "m")
    cut = {"choices": [{"message": {"role": "assistant", "content": "One, two"}, "finish_reason": "length"}]}
    whole = to_response(shell, cut, USAGE)
    assert whole["status"] == "incomplete" and [i["status"] for i in whole["output"]] == ["incomplete"]
    done = {"choices": [{"message": {"role": "assistant", "content": "One."}, "finish_reason": "stop"}]}
    assert [i["status"] for i in to_response(shell, done, USAGE)["output"]] == ["completed"]

    stream = ResponseStream(shell)
    events = stream.start()
    events += stream.feed({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "One, "}}]})
    events += stream.feed({"choices": [{"index": 0, "delta": {"content": "two"}, "finish_reason": "length"}]})
    events += stream.completed(USAGE)
    item_done = next(e for e in events if e["type"] == "response.output_item.done")
    assert item_done["item"]["status"] == "incomplete"
    assert events[-1]["type"] == "response.incomplete"
    assert [i["status"] for i in events[-1]["response"]["output"]] == ["incomplete"]
