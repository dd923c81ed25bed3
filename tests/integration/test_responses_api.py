"""The Responses API with the official openai SDK (sync and async) against a real gateway on loopback, over
fault-wall chat targets and the real embedded model: create (string input, items, instructions, a function
tool round trip with previous_response_id, text.format), streams with their events in order, retrieve and
delete, failover, continuation of a broken stream (or response.failed), per-key scoping and retention."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from lifeline.testing import FaultWall, wall_text
from lifeline.testing.gateway import RunningGateway
from lifeline.testing.payloads import DEFAULT_TOOL, TOOL_ARGUMENTS
from tests.conftest import GatewayFactory, make_config, wall_target

PREFILL = {"prefill": True}
MASTER = "mk-test-master-key-0123456789"
WEATHER = {
    "type": "function",
    "name": DEFAULT_TOOL,
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
STREAM_ORDER = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    *["response.output_text.delta"] * 12,
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def sdk(gw: RunningGateway, key: str = "x") -> OpenAI:
    return OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=30)


def wall_config(wall: FaultWall, **sections: Any) -> Any:
    targets = {"main": wall_target(wall, "ok?t=main"), "tools": wall_target(wall, "tool_call")}
    return make_config(targets, {"chat": ["main"], "tools": ["tools"]}, **sections)


def test_sync_create_with_a_string_items_and_instructions(wall: FaultWall, gateway: GatewayFactory) -> None:
    with gateway(wall_config(wall)) as gw:
        client = sdk(gw)
        plain = client.responses.create(model="chat", input="Say hello.")
        items = client.responses.create(
            model="chat",
            instructions="Answer in one line.",
            input=[
                {"role": "user", "content": [{"type": "input_text", "text": "Hi."}]},
                {"role": "assistant", "content": [{"type": "output_text", "text": "Hello."}]},
                {"role": "user", "content": "And now?"},
            ],
            max_output_tokens=64,
            temperature=0.5,
            metadata={"run": "1"},
        )
    assert plain.id.startswith("resp_") and plain.object == "response" and plain.status == "completed"
    assert plain.output_text == wall_text(12)
    assert plain.usage is not None and plain.usage.output_tokens == 12
    assert plain.usage.total_tokens == plain.usage.input_tokens + 12
    assert items.output_text == wall_text(12) and items.metadata == {"run": "1"}
    body = wall.attempts_for("ok?t=main")[1].body
    assert body is not None
    assert body["messages"] == [
        {"role": "system", "content": "Answer in one line."},
        {"role": "user", "content": "Hi."},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "And now?"},
    ]
    assert (body["max_tokens"], body["temperature"], body["model"]) == (64, 0.5, "ok?t=main")


def test_a_function_tool_round_trip_with_previous_response_id(wall: FaultWall, gateway: GatewayFactory) -> None:
    with gateway(wall_config(wall)) as gw:
        client = sdk(gw)
        asked = client.responses.create(model="tools", input="Weather in Paris?", tools=[WEATHER])
        call = asked.output[0]
        assert call.type == "function_call"
        assert (call.name, call.arguments) == (DEFAULT_TOOL, TOOL_ARGUMENTS)
        answered = client.responses.create(
            model="chat",
            previous_response_id=asked.id,
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"}],
            tools=[WEATHER],
        )
    assert answered.output_text == wall_text(12) and answered.previous_response_id == asked.id
    sent = wall.attempts_for("tool_call")[0].body
    assert sent is not None and sent["tools"] == [
        {"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}
    ]
    body = wall.attempts_for("ok?t=main")[0].body
    assert body is not None
    assert body["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.call_id,
                    "type": "function",
                    "function": {"name": DEFAULT_TOOL, "arguments": TOOL_ARGUMENTS},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.call_id, "content": "sunny, 21 C"},
    ]


def test_text_format_json_schema_reaches_the_target_as_response_format(
    wall: FaultWall, gateway: GatewayFactory
) -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "required": ["a"],
        "additionalProperties": False,
    }
    with gateway(wall_config(wall)) as gw:
        sdk(gw).responses.create(
            model="chat",
            input="A number.",
            text={"format": {"type": "json_schema", "name": "number", "schema": schema, "strict": True}},
        )
    body = wall.attempts_for("ok?t=main")[0].body
    assert body is not None
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "number", "schema": schema, "strict": True},
    }


def test_streams_sync_and_async_send_the_events_in_order_and_retrieve_and_delete(
    wall: FaultWall, gateway: GatewayFactory
) -> None:
    with gateway(wall_config(wall)) as gw:
        client = sdk(gw)
        with client.responses.stream(model="chat", input="Hi") as stream:
            kinds = [event.type for event in stream]
            final = stream.get_final_response()
        raw = list(client.responses.create(model="chat", input="Hi", stream=True))
        stored = client.responses.retrieve(final.id)
        client.responses.delete(final.id)
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(final.id)

        async def run_async() -> tuple[list[str], str]:
            async with AsyncOpenAI(base_url=gw.base_url, api_key="x", max_retries=0, timeout=30) as async_client:
                async with async_client.responses.stream(model="chat", input="Hi") as events:
                    seen = [event.type async for event in events]
                    done = await events.get_final_response()
                again = await async_client.responses.retrieve(done.id)
                await async_client.responses.delete(done.id)
                whole = await async_client.responses.create(model="chat", input="Hi")
                assert whole.output_text == again.output_text
                return seen, again.output_text

        async_kinds, async_text = asyncio.run(run_async())
    assert kinds == async_kinds == [e.type for e in raw] == STREAM_ORDER
    assert [e.sequence_number for e in raw] == list(range(len(raw)))
    assert final.status == "completed" and final.output_text == wall_text(12)
    assert stored.output_text == final.output_text and stored.id == final.id
    assert async_text == wall_text(12)


def test_a_function_call_streams_as_argument_deltas(wall: FaultWall, gateway: GatewayFactory) -> None:
    with gateway(wall_config(wall)) as gw:
        events = list(sdk(gw).responses.create(model="tools", input="Weather?", tools=[WEATHER], stream=True))
    kinds = [e.type for e in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        *["response.function_call_arguments.delta"] * 3,
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    done = events[-1].response.output[0]  # type: ignore[union-attr]
    assert done.type == "function_call" and done.arguments == TOOL_ARGUMENTS and done.name == DEFAULT_TOOL


def test_a_responses_request_fails_over_from_a_cut_off_target(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config({"cutoff": wall_target(wall, "status?code=403"), "backup": wall_target(wall, "ok?t=b")})
    with gateway(config) as gw:
        raw = sdk(gw).responses.with_raw_response.create(model="chat", input="Hi")
    response = raw.parse()
    assert response.output_text == wall_text(12)
    assert (raw.headers["x-lifeline-target"], raw.headers["x-lifeline-attempts"]) == ("backup", "2")


def test_a_broken_stream_is_continued_on_a_prefix_capable_target(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config(
        {"primary": wall_target(wall, "cut?after=3"), "backup": wall_target(wall, "ok?t=b", capabilities=PREFILL)}
    )
    with gateway(config) as gw, sdk(gw).responses.stream(model="chat", input="Hi") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[-1] == "response.completed" and final.output_text == wall_text(12)
    body = wall.attempts_for("ok?t=b")[0].body
    assert body is not None and body["messages"][-1]["content"] == wall_text(3)


def test_a_broken_stream_that_cannot_be_continued_ends_with_response_failed(
    wall: FaultWall, gateway: GatewayFactory
) -> None:
    # the backup fails too, asked to continue the answer: nothing can finish it
    backup = wall_target(wall, "status?code=503&t=b")
    config = make_config({"primary": wall_target(wall, "cut?after=3"), "backup": backup})
    with gateway(config) as gw:
        client = sdk(gw)
        events = list(client.responses.create(model="chat", input="Hi", stream=True))
        rid = events[0].response.id  # type: ignore[union-attr]
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(rid)
    kinds = [e.type for e in events]
    assert kinds[-1] == "response.failed" and "response.completed" not in kinds
    failed = events[-1].response  # type: ignore[union-attr]
    assert failed.status == "failed" and failed.error is not None and "primary" in failed.error.message
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == wall_text(3)  # type: ignore[union-attr]


def test_another_key_cannot_read_continue_or_delete_a_stored_response(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    config = wall_config(
        wall, admin={"master_key": MASTER}, auth={"enabled": True}, accounting={"data_dir": str(tmp_path)}
    )
    with gateway(config) as gw:
        admin = httpx.Client(base_url=f"{gw.url}/admin", headers={"authorization": f"Bearer {MASTER}"})
        owner, other = (sdk(gw, admin.post("/keys", json={"name": n}).json()["secret"]) for n in ("a", "b"))
        made = owner.responses.create(model="chat", input="Hi")
        with pytest.raises(openai.NotFoundError):
            other.responses.retrieve(made.id)
        with pytest.raises(openai.NotFoundError) as follow:
            other.responses.create(model="chat", input="more", previous_response_id=made.id)
        with pytest.raises(openai.NotFoundError):
            other.responses.delete(made.id)
        keyless = httpx.get(f"{gw.base_url}/responses/{made.id}")
        mine = owner.responses.retrieve(made.id)
        continued = owner.responses.create(model="chat", input="more", previous_response_id=made.id)
    assert follow.value.body["param"] == "previous_response_id"  # type: ignore[index]
    assert keyless.status_code == 401 and made.id not in keyless.text
    assert mine.output_text == made.output_text and continued.status == "completed"


def test_a_stored_response_past_retention_is_gone(wall: FaultWall, gateway: GatewayFactory, tmp_path: Path) -> None:
    config = wall_config(wall, responses={"retention_days": 1}, accounting={"data_dir": str(tmp_path)})
    with gateway(config) as gw:
        client = sdk(gw)
        old, new = client.responses.create(model="chat", input="Hi"), client.responses.create(model="chat", input="Hi")
        db = gw.gateway.accounting.db
        assert gw.gateway.accounting.responses.flush()  # written in the table, to age it there
        db.execute("UPDATE responses SET created_at = ? WHERE id = ?", (time.time() - 2 * 86400, old.id))
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(old.id)
        with pytest.raises(openai.NotFoundError):
            client.responses.create(model="chat", input="more", previous_response_id=old.id)
        kept = client.responses.retrieve(new.id)
        gw.gateway.accounting.responses.prune()  # (or the gateway's own prune at start, if it ran late)
        left = db.query("SELECT id FROM responses")
    assert kept.id == new.id and left == [(new.id,)]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "web_search_preview"}]}, "tools[0].type"),
        ({"tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]}, "tools[0].type"),
        ({"input": [{"type": "image_generation_call", "id": "x"}]}, "input[0].type"),
        ({"input": 42}, "input"),
    ],
)
def test_refused_inputs_are_a_400_the_sdk_raises_naming_the_parameter(
    wall: FaultWall, gateway: GatewayFactory, extra: dict[str, Any], param: str
) -> None:
    body = {"model": "chat", "input": "Hi", **extra}
    with gateway(wall_config(wall)) as gw, pytest.raises(openai.BadRequestError) as raised:
        sdk(gw).responses.create(**body)
    assert raised.value.body["param"] == param  # type: ignore[index]
    assert wall.attempts == []


# --- the real embedded model ------------------------------------------------------------------------------


@pytest.mark.embedded
def test_the_embedded_model_answers_responses_and_a_cut_off_target_fails_over_to_it(
    wall: FaultWall, gateway: GatewayFactory
) -> None:
    local = {"kind": "llamacpp", "model": "builtin:smollm2", "n_ctx": 512, "n_threads": 2}
    config = make_config({"cutoff": wall_target(wall, "status?code=403"), "local": local})
    schema = {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]}
    with gateway(config) as gw:
        client = sdk(gw)
        raw = client.responses.with_raw_response.create(
            model="chat", input="Name a colour.", instructions="Be brief.", max_output_tokens=16
        )
        # a limit the answer may reach: then it ends with response.incomplete, as OpenAI's does
        streamed = list(client.responses.create(model="chat", input="Say hello.", max_output_tokens=16, stream=True))
        shaped = client.responses.create(
            model="chat",
            input="Name a colour as JSON.",
            max_output_tokens=32,
            text={"format": {"type": "json_schema", "name": "colour", "schema": schema}},
        )
    answer = raw.parse()
    assert raw.headers["x-lifeline-target"] == "local" and answer.output_text.strip()
    assert answer.usage is not None and answer.usage.output_tokens > 0
    kinds = [e.type for e in streamed]
    assert kinds[:4] == STREAM_ORDER[:4] and kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in streamed] == list(range(len(streamed)))
    final = streamed[-1].response  # type: ignore[union-attr]
    deltas = "".join(e.delta for e in streamed if e.type == "response.output_text.delta")  # type: ignore[union-attr]
    assert deltas.strip() and final.output[0].content[0].text == deltas  # type: ignore[union-attr]
    assert isinstance(json.loads(shaped.output_text)["colour"], str)
