"""Mid-stream continuation, on real sockets: a stream that breaks after content reached the client is
continued on another target that accepts an assistant prefix, and the client's assembled text is exactly
the complete answer — or an explicit error is raised. Also the hold-back window."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai import OpenAI

from lifeline.testing import FaultWall, wall_text
from lifeline.testing.gateway import RunningGateway
from lifeline.testing.wall import prefill_of
from tests.conftest import GatewayFactory, make_config, wall_target

MESSAGES = [{"role": "user", "content": "hello there"}]
PREFILL = {"prefill": True}


def stream_all(gw: RunningGateway, **extra: Any) -> tuple[str, list[Any]]:
    client = OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
    chunks = list(client.chat.completions.create(model="chat", messages=MESSAGES, stream=True, **extra))
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks


def raw_events(gw: RunningGateway, **extra: Any) -> list[dict[str, Any]]:
    body = {"model": "chat", "messages": MESSAGES, "stream": True, **extra}
    with httpx.stream("POST", f"{gw.base_url}/chat/completions", json=body, timeout=30) as response:
        text = response.read()
    return [orjson.loads(line[6:]) for line in text.split(b"\n") if line.startswith(b"data: {")]


@pytest.mark.parametrize("mode", ["prefix", "partial", "continue_final_message"])
def test_a_cut_stream_is_continued_and_the_client_gets_the_whole_answer(
    wall: FaultWall, gateway: GatewayFactory, mode: str
) -> None:
    config = make_config(
        {
            "primary": wall_target(wall, "cut?after=3"),
            "backup": wall_target(wall, "ok?t=backup", capabilities=PREFILL, prefill_mode=mode),
        }
    )
    with gateway(config) as gw:
        text, chunks = stream_all(gw, stream_options={"include_usage": True})
    assert text == wall_text(12)
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finish] == ["stop"]
    continued = (finish[0].model_extra or {})["x_lifeline"]["continued"]
    assert continued == [
        {
            "from": "primary",
            "to": "backup",
            "after_chars": len(wall_text(3)),
            "reason": "unavailable",
            "mode": "prefill",
        }
    ]
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens >= 9
    assert (chunks[-1].model_extra or {})["x_lifeline"] == {"usage_estimated": True}
    # the backup was asked to continue the text the client already had, not to start again
    body = wall.attempts_for("ok?t=backup")[0].body
    assert body is not None
    last = body["messages"][-1]
    assert last["role"] == "assistant" and last["content"] == wall_text(3)


def test_a_stalled_stream_is_continued(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config(
        {
            "primary": wall_target(wall, "stall?after=4", timeouts={"idle": 0.3}),
            "backup": wall_target(wall, "ok?t=backup", capabilities=PREFILL),
        }
    )
    with gateway(config) as gw:
        text, _ = stream_all(gw)
    assert text == wall_text(12)


def test_a_target_that_refuses_the_prefix_does_not_mask_the_failure(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config(
        {
            "primary": wall_target(wall, "cut?after=3"),
            "refuses": wall_target(wall, "no_prefill", capabilities=PREFILL),
            "accepts": wall_target(wall, "ok?t=accepts", capabilities=PREFILL),
        }
    )
    with gateway(config) as gw:
        text, chunks = stream_all(gw)
    assert text == wall_text(12)
    continued = (chunks[-1].model_extra or {})["x_lifeline"]["continued"]
    assert continued[0]["to"] == "accepts"
    assert len(wall.attempts_for("no_prefill")) == 1


def test_when_no_target_can_continue_the_stream_ends_with_the_original_failure(
    wall: FaultWall, gateway: GatewayFactory
) -> None:
    config = make_config(
        {
            "primary": wall_target(wall, "cut?after=3"),
            "refuses": wall_target(wall, "no_prefill", capabilities=PREFILL),
            # cannot continue, and restarted it says something else: nothing of it is spliced
            "cannot": wall_target(wall, "ok?t=cannot&offset=2", capabilities={"prefill": False}),
        }
    )
    with gateway(config) as gw:
        events = raw_events(gw)
        client = OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        with pytest.raises(openai.APIError) as raised:
            stream_all(gw)
        del client
    error = events[-1]["error"]
    assert error["code"] == "upstream_stream_broken"
    assert "primary" in error["message"] and "Assistant prefill" not in error["message"]
    assert "incomplete" in str(raised.value.message)
    asked = [a.body for a in wall.attempts_for("ok?t=cannot&offset=2")]
    assert len(asked) == 2 and not any(b is not None and prefill_of(b) is not None for b in asked)
    assert not any(e.get("choices") and e["choices"][0].get("finish_reason") for e in events)


def test_a_tool_call_half_sent_is_never_finished_by_another_model(wall: FaultWall, gateway: GatewayFactory) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    config = make_config(
        {
            "primary": wall_target(wall, "tool_call?cut_after=2"),
            "backup": wall_target(wall, "tool_call?t=backup", capabilities=PREFILL),
        }
    )
    with gateway(config) as gw:
        events = raw_events(gw, tools=tools)
    assert events[-1]["error"]["code"] == "upstream_stream_broken"
    assert "tool call" in events[-1]["error"]["message"]
    assert wall.attempts_for("tool_call?t=backup") == []


def test_continuation_stops_after_the_configured_number(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config(
        {
            "a": wall_target(wall, "cut?after=2"),
            "b": wall_target(wall, "cut?after=5", capabilities=PREFILL),
            "c": wall_target(wall, "ok?t=c", capabilities=PREFILL),
        },
        aliases={"chat": {"targets": ["a", "b", "c"], "max_continuations": 1}},
    )
    with gateway(config) as gw:
        events = raw_events(gw)
    assert events[-1]["error"]["code"] == "upstream_stream_broken"
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e.get("choices"))
    assert text == wall_text(5)  # a's 2 words, then b continued to 5 and broke; no third target asked
    assert wall.attempts_for("ok?t=c") == []


def test_a_continued_stream_is_one_ledger_record_priced_per_target(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    config = make_config(
        {
            "primary": wall_target(wall, "cut?after=3", price={"input": 0, "output": 1_000_000}),
            "backup": wall_target(wall, "ok?t=backup", capabilities=PREFILL, price={"input": 0, "output": 2_000_000}),
        },
        accounting={"data_dir": str(tmp_path)},
    )
    with gateway(config) as gw:
        text, _ = stream_all(gw)
        ledger = gw.gateway.accounting.ledger
        assert ledger is not None
        rows: list[Any] = []
        for _ in range(100):
            ledger.flush(5)
            rows = gw.gateway.accounting.db.query("SELECT target, attempts, cost_nusd, outcome FROM ledger")
            if rows:
                break
    assert text == wall_text(12)
    assert len(rows) == 1
    target, attempts, cost, outcome = rows[0]
    assert target == "backup" and outcome == "ok"
    outcomes = [(a["target"], a["outcome"]) for a in orjson.loads(attempts)]
    assert ("backup", "continued") in outcomes
    # primary: ~3 words estimated at $1/token; backup: its 9 reported tokens at $2/token
    assert 18 * 10**9 < cost < 25 * 10**9


def test_hold_back_makes_an_early_failure_invisible(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config(
        {"primary": wall_target(wall, "cut?after=3"), "backup": wall_target(wall, "ok?t=backup")},
        aliases={"chat": {"targets": ["primary", "backup"], "hold_back_tokens": 5}},
        retry={"max_retries": 0},
    )
    with gateway(config) as gw:
        events = raw_events(gw)
        text, _ = stream_all(gw)
    assert text == wall_text(12)
    assert not any("x_lifeline" in e for e in events)  # an ordinary failover, not a continuation


@pytest.mark.embedded
def test_the_embedded_engine_continues_a_broken_stream(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config(
        {
            "primary": wall_target(wall, "cut?after=3"),
            "local": {"kind": "llamacpp", "model": "builtin:smollm2", "n_ctx": 512, "default_max_tokens": 8},
        }
    )
    with gateway(config) as gw:
        text, chunks = stream_all(gw)
    assert text.startswith(wall_text(3))
    assert len(text) > len(wall_text(3))
    continued = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert continued and (continued[0].model_extra or {})["x_lifeline"]["continued"][0]["to"] == "local"


def test_a_hedged_request_keeps_the_faster_target_and_cancels_the_other(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    config = make_config(
        {
            "slow": wall_target(wall, "slow_first_token?delay=2", timeouts={"ttft": 5}),
            "fast": wall_target(wall, "ok?t=fast"),
        },
        aliases={"chat": {"targets": ["slow", "fast"], "hedge_after_ms": 200}},
        accounting={"data_dir": str(tmp_path)},
    )
    with gateway(config) as gw:
        client = OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        plain = httpx.post(f"{gw.base_url}/chat/completions", json={"model": "chat", "messages": MESSAGES})
        ledger = gw.gateway.accounting.ledger
        assert ledger is not None
        ledger.flush(5)
        rows = gw.gateway.accounting.db.query("SELECT attempts, target FROM ledger ORDER BY started_at")
        circuits = {c["target"]: c for c in httpx.get(f"{gw.url}/admin/targets").json()["targets"]}
    assert text == wall_text(12)
    assert raw.headers["x-lifeline-target"] == "fast"
    assert plain.headers["x-lifeline-target"] == "fast"
    assert len(wall.attempts_for("slow_first_token?delay=2")) == 2  # both requests started it, then hedged
    assert rows[0][1] == "fast"
    outcomes = [(a["target"], a["outcome"]) for a in orjson.loads(rows[0][0])]
    assert outcomes == [("slow", "hedge_lost"), ("fast", "ok")]
    # the loser was cancelled, not failed: its circuit holds nothing against it
    assert circuits["slow"]["consecutive_failures"] == 0 and circuits["slow"]["state"] == "closed"


def test_hedging_waits_for_the_partner_when_the_first_fails(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config(
        {
            "first": wall_target(wall, "status?code=503&latency_ms=400"),
            "second": wall_target(wall, "ok?latency_ms=600&t=second"),
            "third": wall_target(wall, "ok?t=third"),
        },
        aliases={"chat": {"targets": ["first", "second", "third"], "hedge_after_ms": 100}},
        retry={"max_retries": 0},
    )
    with gateway(config) as gw:
        response = httpx.post(f"{gw.base_url}/chat/completions", json={"model": "chat", "messages": MESSAGES})
    assert response.headers["x-lifeline-target"] == "second"
    assert wall.attempts_for("ok?t=third") == []


@pytest.mark.parametrize("after", [1, 2, 6, 10, 11])
def test_a_stream_cut_at_any_point_reaches_the_client_complete(
    wall: FaultWall, gateway: GatewayFactory, after: int
) -> None:
    config = make_config(
        {
            "primary": wall_target(wall, f"cut?after={after}"),
            "backup": wall_target(wall, f"ok?t=backup{after}", capabilities=PREFILL),
        }
    )
    with gateway(config) as gw:
        text, chunks = stream_all(gw)
    assert text == wall_text(12)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]


def test_a_hedged_first_target_that_fails_is_still_counted(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config(
        {
            "first": wall_target(wall, "status?code=503&latency_ms=300"),
            "second": wall_target(wall, "ok?latency_ms=500&t=partner"),
        },
        aliases={"chat": {"targets": ["first", "second"], "hedge_after_ms": 100}},
        retry={"max_retries": 0},
        circuit={"failure_threshold": 1},
    )
    with gateway(config) as gw:
        response = httpx.post(f"{gw.base_url}/chat/completions", json={"model": "chat", "messages": MESSAGES})
        circuits = {c["target"]: c for c in httpx.get(f"{gw.url}/admin/targets").json()["targets"]}
    assert response.headers["x-lifeline-target"] == "second"
    assert response.headers["x-lifeline-attempts"] == "2"
    assert circuits["first"]["state"] == "open"  # its failure reached the circuit though the partner won
