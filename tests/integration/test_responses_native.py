"""Native Responses targets (`responses: native`) with the official openai SDK against a real gateway on
loopback, the fault wall's /v1/responses as the upstream: non-streaming and streaming pass-through under
Lifeline's response id, failover from a native target to a translated chat target, a native stream that
breaks after content ending with response.failed, built-in tools (refused without a native target that runs
them, passed to one that does, the others skipped and recorded), previous_response_id across native and
translated targets, and the ledger row and x-lifeline headers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import OpenAI
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from lifeline.server.exchange import usd_text
from lifeline.testing import FaultWall, wall_text
from lifeline.testing.gateway import RunningGateway
from tests.conftest import GatewayFactory, make_config, wall_target
from tests.integration.test_responses_api import STREAM_ORDER

NATIVE = {"responses": "native"}
SEARCH = {"responses": "native", "responses_tools": ["web_search", "web_search_preview"]}
EVENTS: TypeAdapter[ResponseStreamEvent] = TypeAdapter(ResponseStreamEvent)


def sdk(gw: RunningGateway) -> OpenAI:
    return OpenAI(base_url=gw.base_url, api_key="x", max_retries=0, timeout=30)


def ledger_rows(gw: RunningGateway, columns: str) -> list[Any]:
    ledger = gw.gateway.accounting.ledger
    assert ledger is not None
    rows: list[Any] = []
    for _ in range(100):
        ledger.flush(5)
        rows = gw.gateway.accounting.db.query(f"SELECT {columns} FROM ledger ORDER BY started_at")
        if rows:
            break
    return rows


def test_a_native_target_answers_through_its_own_responses_endpoint(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    config = make_config(
        {"gpt": wall_target(wall, "ok?t=native", price={"input": 1, "output": 2}, **NATIVE)},
        accounting={"data_dir": str(tmp_path)},
    )
    with gateway(config) as gw:
        client = sdk(gw)
        raw = client.responses.with_raw_response.create(
            model="chat", input="Say hello.", instructions="Be brief.", metadata={"run": "1"}, include=["x.y"]
        )
        answer = raw.parse()
        again = client.responses.retrieve(answer.id)
        rows = ledger_rows(gw, "target, model, outcome, prompt_tokens, completion_tokens, cost_nusd, attempts")
    Response.model_validate(answer.model_dump())  # the upstream's shape, as the SDK's own type reads it
    assert answer.output_text == wall_text(12) and answer.status == "completed"
    assert answer.id.startswith("resp_") and not answer.id.startswith("resp_wall_")  # Lifeline's id, not the upstream's
    assert answer.store is True and answer.metadata == {"run": "1"}
    assert again.id == answer.id and again.output_text == answer.output_text
    assert (raw.headers["x-lifeline-target"], raw.headers["x-lifeline-attempts"]) == ("gpt", "1")
    (sent,) = wall.attempts_for("ok?t=native")
    assert sent.path == "/v1/responses" and sent.body is not None
    # the client's body, with the target's model, store false (Lifeline stores it) and unknown fields kept
    assert sent.body["input"] == "Say hello." and sent.body["instructions"] == "Be brief."
    assert (sent.body["model"], sent.body["store"], sent.body["include"]) == ("ok?t=native", False, ["x.y"])
    assert "authorization" in sent.headers
    usage = answer.usage
    assert usage is not None and usage.output_tokens == 12
    (row,) = rows
    target, model, outcome, prompt, completion, cost, attempts = row
    assert (target, model, outcome) == ("gpt", "ok?t=native", "ok")
    assert (prompt, completion) == (usage.input_tokens, 12)  # the upstream's own usage object
    assert cost == prompt * 1_000 + 12 * 2_000  # nano-USD at the target's price per million tokens
    assert raw.headers["x-lifeline-cost-usd"] == usd_text(cost)
    assert [a["outcome"] for a in json.loads(attempts)] == ["ok"]


def test_a_native_stream_passes_the_upstreams_events_through_in_order(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config({"gpt": wall_target(wall, "ok?t=native", **NATIVE)})
    with gateway(config) as gw:
        client = sdk(gw)
        with client.responses.stream(model="chat", input="Hi") as stream:
            events = list(stream)
            final = stream.get_final_response()
        stored = client.responses.retrieve(final.id)
        plain = list(client.responses.create(model="chat", input="Hi", stream=True))
    kinds = [e.type for e in events]
    assert kinds == STREAM_ORDER
    assert [e.sequence_number for e in events] == list(range(len(events)))
    for event in plain:  # each event as the SDK's own types read it, checked field by field
        EVENTS.validate_python(event.model_dump())
    assert [e.type for e in plain] == kinds
    ids = {e.response.id for e in events if e.type in ("response.created", "response.completed")}  # type: ignore[union-attr]
    assert ids == {final.id} and not final.id.startswith("resp_wall_")
    assert final.output_text == wall_text(12) and stored.output_text == wall_text(12)
    sent = wall.attempts_for("ok?t=native")[0]
    assert sent.path == "/v1/responses" and sent.stream and sent.body is not None and sent.body["store"] is False


def test_a_cut_off_native_target_fails_over_to_a_translated_chat_target(
    wall: FaultWall, gateway: GatewayFactory
) -> None:
    config = make_config({"gpt": wall_target(wall, "status?code=403", **NATIVE), "backup": wall_target(wall, "ok?t=b")})
    with gateway(config) as gw:
        client = sdk(gw)
        raw = client.responses.with_raw_response.create(model="chat", input="Hi")
        with client.responses.stream(model="chat", input="Hi again") as stream:
            kinds = [e.type for e in stream]
            streamed = stream.get_final_response()
    answer = raw.parse()
    assert answer.output_text == wall_text(12) and streamed.output_text == wall_text(12)
    assert (raw.headers["x-lifeline-target"], raw.headers["x-lifeline-attempts"]) == ("backup", "2")
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert [a.path for a in wall.attempts_for("status?code=403")] == ["/v1/responses"]  # then its circuit is open
    assert [a.path for a in wall.attempts_for("ok?t=b")] == ["/v1/chat/completions"] * 2


def test_a_native_stream_cut_before_content_fails_over_unseen(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config({"gpt": wall_target(wall, "cut?after=0", **NATIVE), "backup": wall_target(wall, "ok?t=b")})
    with gateway(config) as gw:
        events = list(sdk(gw).responses.create(model="chat", input="Hi", stream=True))
    kinds = [e.type for e in events]
    assert kinds.count("response.created") == 1 and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].response.output_text == wall_text(12)  # type: ignore[union-attr]


def test_a_native_stream_that_breaks_after_content_ends_with_response_failed(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    config = make_config(
        {"gpt": wall_target(wall, "cut?after=3", **NATIVE), "backup": wall_target(wall, "ok?t=b")},
        accounting={"data_dir": str(tmp_path)},
    )
    with gateway(config) as gw:
        client = sdk(gw)
        events = list(client.responses.create(model="chat", input="Hi", stream=True))
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(events[0].response.id)  # type: ignore[union-attr]  # a failed answer is not stored
        rows = ledger_rows(gw, "target, outcome")
    kinds = [e.type for e in events]
    assert kinds[-1] == "response.failed" and "response.completed" not in kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    failed = events[-1].response  # type: ignore[union-attr]
    assert failed.status == "failed" and failed.error is not None and "gpt" in failed.error.message
    assert failed.id == events[0].response.id  # type: ignore[union-attr]
    (item,) = failed.output
    assert item.status == "incomplete" and item.content[0].text == wall_text(3)  # type: ignore[union-attr]
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == wall_text(3)  # type: ignore[union-attr]
    assert rows == [("gpt", "broken")]
    assert wall.attempts_for("ok?t=b") == []  # a native answer is not spliced onto a chat one


def test_an_error_event_mid_stream_from_a_native_target_ends_with_response_failed(
    wall: FaultWall, gateway: GatewayFactory
) -> None:
    config = make_config(
        {
            "early": wall_target(wall, "error_event?after=0", **NATIVE),
            "gpt": wall_target(wall, "error_event?after=2", **NATIVE),
            "backup": wall_target(wall, "ok?t=b"),
        },
        {"chat": ["gpt"], "early": ["early", "backup"]},
    )
    with gateway(config) as gw:
        events = list(sdk(gw).responses.create(model="chat", input="Hi", stream=True))
        # an error event before anything of the answer was sent: the next target answers, unseen
        recovered = list(sdk(gw).responses.create(model="early", input="Hi", stream=True))
    kinds = [e.type for e in events]
    assert kinds[-1] == "response.failed" and "error" not in kinds
    assert kinds.count("response.output_text.delta") == 2
    again = [e.type for e in recovered]
    assert again.count("response.created") == 1 and again[-1] == "response.completed" and "error" not in again
    assert recovered[-1].response.output_text == wall_text(12)  # type: ignore[union-attr]
    assert [a.path for a in wall.attempts_for("ok?t=b")] == ["/v1/chat/completions"]


def test_a_rate_limited_native_target_is_retried_then_failed_over(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config({"gpt": wall_target(wall, "rate_limit", **NATIVE), "backup": wall_target(wall, "ok?t=b")})
    with gateway(config) as gw:
        raw = sdk(gw).responses.with_raw_response.create(model="chat", input="Hi")
    assert raw.parse().output_text == wall_text(12) and raw.headers["x-lifeline-target"] == "backup"
    # one retry of the same target after a 429 (rate_limit_retries: 1), then the next target
    assert [(a.path, a.outcome) for a in wall.attempts_for("rate_limit")] == [("/v1/responses", "status:429")] * 2
    assert raw.headers["x-lifeline-attempts"] == "3"


def test_a_built_in_tool_is_refused_when_no_target_runs_it(wall: FaultWall, gateway: GatewayFactory) -> None:
    files = {"responses": "native", "responses_tools": ["file_search"]}
    config = make_config(
        {
            "chat1": wall_target(wall, "ok?t=chat"),
            "native": wall_target(wall, "ok?t=n", **NATIVE),
            "searches": wall_target(wall, "ok?t=s", **SEARCH),
            "files": wall_target(wall, "ok?t=f", **files),
        },
        {"chat": ["chat1"], "plain": ["native"], "split": ["searches", "files"]},
    )
    with gateway(config) as gw:
        client = sdk(gw)
        for alias in ("chat", "plain"):  # translated only; native but not listing the tool
            with pytest.raises(openai.BadRequestError) as raised:
                client.responses.create(model=alias, input="News?", tools=[{"type": "web_search"}])
            assert raised.value.code == "unsupported_tool"
            assert raised.value.body["param"] == "tools[0].type"  # type: ignore[index]
        # each tool runs somewhere, but no one target runs both: every target skipped, saying which it lacks
        with pytest.raises(openai.BadRequestError) as raised:
            both: Any = [{"type": "web_search"}, {"type": "file_search", "vector_store_ids": ["vs_1"]}]
            client.responses.create(model="split", input="News?", tools=both)
        assert (raised.value.code, raised.value.body["param"]) == ("unsupported_tool", "tools")  # type: ignore[index]
        assert "searches: no built-in Responses tool: file_search" in raised.value.message
        assert "files: no built-in Responses tool: web_search" in raised.value.message
    assert wall.attempts == []


def test_a_built_in_tool_goes_only_to_the_native_target_that_runs_it(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    config = make_config(
        {"chat1": wall_target(wall, "ok?t=chat"), "gpt": wall_target(wall, "ok?t=native", **SEARCH)},
        accounting={"data_dir": str(tmp_path)},
    )
    tools: Any = [{"type": "web_search"}, {"type": "function", "name": "f", "parameters": {"type": "object"}}]
    with gateway(config) as gw:
        client = sdk(gw)
        raw = client.responses.with_raw_response.create(model="chat", input="News?", tools=tools)
        with client.responses.stream(model="chat", input="News?", tools=tools) as stream:
            kinds = [e.type for e in stream]
            streamed = stream.get_final_response()
        rows = ledger_rows(gw, "target, attempts")
        for _ in range(100):  # both requests' records
            if len(rows) == 2:
                break
            rows = ledger_rows(gw, "target, attempts")
        tokens = gw.gateway.accounting.db.query(
            "SELECT prompt_tokens, completion_tokens FROM ledger ORDER BY started_at"
        )
    answer = raw.parse()
    assert [o.type for o in answer.output] == ["web_search_call", "message"]
    assert [o.type for o in streamed.output] == ["web_search_call", "message"]
    assert "response.web_search_call.completed" in kinds
    assert raw.headers["x-lifeline-target"] == "gpt" and raw.headers["x-lifeline-attempts"] == "1"
    assert wall.attempts_for("ok?t=chat") == []
    sent = wall.attempts_for("ok?t=native")[0].body
    assert sent is not None and sent["tools"] == tools
    assert streamed.usage is not None and answer.usage is not None
    # the upstream's own usage, streamed or not (the streamed one from its response.completed)
    assert tokens == [(u.input_tokens, u.output_tokens) for u in (answer.usage, streamed.usage)]
    target, attempts = rows[0]
    assert target == "gpt"
    assert [(a["target"], a["outcome"]) for a in json.loads(attempts)] == [
        ("chat1", "skipped: no built-in Responses tool: web_search"),
        ("gpt", "ok"),
    ]


def test_previous_response_id_carries_the_conversation_across_native_and_translated_targets(
    wall: FaultWall, gateway: GatewayFactory
) -> None:
    config = make_config(
        {"gpt": wall_target(wall, "scripted?t=native", **NATIVE), "chat1": wall_target(wall, "scripted?t=chat")},
        {"native": ["gpt"], "chat": ["chat1"]},
    )
    with gateway(config) as gw:
        client = sdk(gw)
        first = client.responses.create(model="native", input="SAY: red")
        second = client.responses.create(model="chat", input="SAY: blue", previous_response_id=first.id)
        third = client.responses.create(model="native", input="SAY: green", previous_response_id=second.id)
    assert (first.output_text, second.output_text, third.output_text) == ("red", "blue", "green")
    assert third.previous_response_id == second.id
    chat_body = wall.attempts_for("scripted?t=chat")[0].body
    assert chat_body is not None
    assert [m["content"] for m in chat_body["messages"]] == ["SAY: red", "red", "SAY: blue"]
    native_body = wall.attempts_for("scripted?t=native")[1].body
    assert native_body is not None and "previous_response_id" not in native_body
    assert [(i["role"], i["content"]) for i in native_body["input"]] == [
        ("user", "SAY: red"),
        ("assistant", "red"),
        ("user", "SAY: blue"),
        ("assistant", "blue"),
        ("user", "SAY: green"),
    ]


@pytest.mark.embedded
def test_a_native_target_that_is_cut_off_fails_over_to_the_embedded_model(
    wall: FaultWall, gateway: GatewayFactory
) -> None:
    local = {"kind": "llamacpp", "model": "builtin:smollm2", "n_ctx": 512, "n_threads": 2}
    config = make_config({"gpt": wall_target(wall, "status?code=401", **NATIVE), "local": local})
    with gateway(config) as gw:
        client = sdk(gw)
        raw = client.responses.with_raw_response.create(model="chat", input="Say hello.", max_output_tokens=8)
        streamed = list(client.responses.create(model="chat", input="Say hi.", max_output_tokens=8, stream=True))
    answer = raw.parse()
    assert raw.headers["x-lifeline-target"] == "local" and answer.output_text.strip()
    assert [a.path for a in wall.attempts_for("status?code=401")] == ["/v1/responses"]  # then its circuit is open
    assert streamed[0].type == "response.created"
    assert streamed[-1].type in ("response.completed", "response.incomplete")
