"""Continuity with DEFAULT target settings (only kind, base_url, model and a context window), the fault wall
as the upstream and a real gateway: a broken stream still arrives complete whenever some target can finish
it — by continuing the text (a target of unknown prefill support is asked), or by a replay-verified
restart — and a stalled first token fails over. Each test checks what the client got and what the wall saw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from openai import OpenAI

from lifeline.testing import FaultWall, wall_text
from lifeline.testing.gateway import RunningGateway
from lifeline.testing.wall import prefill_of
from tests.conftest import GatewayFactory, make_config

MESSAGES = [{"role": "user", "content": "hello there"}]


def plain(wall: FaultWall, model: str) -> dict[str, Any]:
    """A target as a user declares it, nothing tuned."""
    return {"kind": "openai", "base_url": wall.base_url, "model": model, "context_window": 8192}


def stream(gw: RunningGateway) -> tuple[str, list[dict[str, Any]], httpx.Headers]:
    """The client's assembled text, every data event, and the response headers."""
    body = {"model": "chat", "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", f"{gw.base_url}/chat/completions", json=body, timeout=60) as response:
        raw = response.read()
        headers = response.headers
    events = [orjson.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: {")]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices"))
    return text, events, headers


def finish_extension(events: list[dict[str, Any]]) -> dict[str, Any]:
    finishing = [e for e in events if e.get("choices") and e["choices"][0].get("finish_reason")]
    assert len(finishing) == 1
    return dict(finishing[0].get("x_lifeline") or {})


def ledger_attempts(gw: RunningGateway, count: int) -> list[list[tuple[str, str]]]:
    ledger = gw.gateway.accounting.ledger
    assert ledger is not None
    rows: list[Any] = []
    for _ in range(100):
        ledger.flush(5)
        rows = gw.gateway.accounting.db.query("SELECT attempts FROM ledger ORDER BY started_at")
        if len(rows) >= count:
            break
    return [[(a["target"], a["outcome"]) for a in orjson.loads(row[0])] for row in rows]


def prefill_support(gw: RunningGateway) -> dict[str, str]:
    return {row["target"]: row["prefill"] for row in httpx.get(f"{gw.url}/admin/targets").json()["targets"]}


def test_a_fallback_of_unknown_prefill_support_is_asked_to_continue_and_does(
    wall: FaultWall, gateway: GatewayFactory
) -> None:
    config = make_config({"primary": plain(wall, "cut?after=3"), "fallback": plain(wall, "ok?t=fallback")})
    with gateway(config) as gw:
        assert prefill_support(gw)["fallback"] == "unknown"
        text, events, _ = stream(gw)
        support = prefill_support(gw)
    assert text == wall_text(12)
    assert finish_extension(events)["continued"] == [
        {
            "from": "primary",
            "to": "fallback",
            "after_chars": len(wall_text(3)),
            "reason": "unavailable",
            "mode": "prefill",
        }
    ]
    seen = wall.attempts_for("ok?t=fallback")
    assert len(seen) == 1 and seen[0].body is not None and prefill_of(seen[0].body) == wall_text(3)
    assert support["fallback"] == "unknown"  # accepting once proves nothing for other requests' dialects


def test_a_fallback_that_refuses_the_prefix_restarts_the_answer_and_is_not_asked_again(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    config = make_config(
        {"primary": plain(wall, "cut?after=3"), "fallback": plain(wall, "no_prefill?t=fallback")},
        accounting={"data_dir": str(tmp_path)},
    )
    with gateway(config) as gw:
        first, events, _ = stream(gw)
        support = prefill_support(gw)
        second, again, _ = stream(gw)
        attempts = ledger_attempts(gw, 2)
    assert first == second == wall_text(12)
    for got in (events, again):
        assert finish_extension(got)["continued"] == [
            {
                "from": "primary",
                "to": "fallback",
                "after_chars": len(wall_text(3)),
                "reason": "unavailable",
                "mode": "replay",
            }
        ]
    assert support["fallback"] == "no" and support["primary"] == "unknown"
    seen = wall.attempts_for("no_prefill?t=fallback")
    asked = [a for a in seen if a.body is not None and prefill_of(a.body) is not None]
    assert len(asked) == 1 and asked[0].outcome == "status:400"  # the refusal is remembered
    assert len(seen) == 3  # the refused prefix, then one restart per request
    assert attempts[0] == [("primary", "ok"), ("fallback", "prefill_refused"), ("fallback", "replayed")]
    assert attempts[1] == [("primary", "ok"), ("fallback", "replayed")]


def test_a_restart_whose_text_differs_ends_in_the_error_and_nothing_is_spliced(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    config = make_config(
        {"primary": plain(wall, "cut?after=3"), "fallback": plain(wall, "no_prefill?offset=1")},
        accounting={"data_dir": str(tmp_path)},
    )
    with gateway(config) as gw:
        text, events, _ = stream(gw)
        attempts = ledger_attempts(gw, 1)
    assert text == wall_text(3)  # only what the primary sent: nothing of the different regeneration
    assert events[-1]["error"]["code"] == "upstream_stream_broken"
    assert not any(e.get("choices") and e["choices"][0].get("finish_reason") for e in events)
    assert [a.outcome for a in wall.attempts_for("no_prefill?offset=1")] == ["status:400", "ok"]
    assert attempts[0] == [("primary", "broken"), ("fallback", "prefill_refused"), ("fallback", "diverged")]


def test_a_stalled_first_token_fails_over_and_the_last_target_gets_the_rest_of_the_deadline(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    # `stall?after=0` sends its headers and role chunk, then nothing until the client leaves; the last
    # target's first token comes after far more than the alias's limit, and is still awaited.
    config = make_config(
        {"stalls": plain(wall, "stall?after=0"), "late": plain(wall, "slow_first_token?delay=1&t=late")},
        aliases={"chat": {"targets": ["stalls", "late"], "first_token_failover_ms": 100}},
        accounting={"data_dir": str(tmp_path)},
    )
    with gateway(config) as gw:
        client = OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        # a deadline shorter than a target's default ttft (30 s): only the first-token failover answers in time
        raw = client.chat.completions.with_raw_response.create(
            model="chat", messages=MESSAGES, stream=True, extra_headers={"x-lifeline-timeout": "20"}
        )
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        attempts = ledger_attempts(gw, 1)
    assert text == wall_text(12)
    assert raw.headers["x-lifeline-target"] == "late"
    assert attempts[0] == [("stalls", "silent"), ("late", "ok")]
    assert len(wall.attempts_for("stall?after=0")) == 1  # silence is not retried


def test_a_fallback_that_ignores_the_prefix_and_starts_again_is_cut_to_the_remainder(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    config = make_config(
        {"primary": plain(wall, "cut?after=3"), "fallback": plain(wall, "ok?prefill=ignore")},
        accounting={"data_dir": str(tmp_path)},
    )
    with gateway(config) as gw:
        first, events, _ = stream(gw)
        second, _, _ = stream(gw)
        support = prefill_support(gw)
        attempts = ledger_attempts(gw, 2)
    # never the answer's opening twice: the restarted text is checked, then only what follows is sent
    assert first == second == wall_text(12)
    assert finish_extension(events)["continued"][0]["mode"] == "replay"
    assert support["fallback"] == "no"
    asked = [a.body is not None and prefill_of(a.body) is not None for a in wall.attempts_for("ok?prefill=ignore")]
    assert asked == [True, False]  # asked to continue once; restarted directly the next time
    assert attempts == [[("primary", "ok"), ("fallback", "replayed")], [("primary", "ok"), ("fallback", "replayed")]]


@pytest.mark.parametrize(
    "fault",
    [
        "reset",  # the connection reset before any byte
        "status?code=500",
        "status?code=503",
        "status?code=429",  # rate-limited, no Retry-After
        "status?code=401",  # cut off: a bad key
        "status?code=402",  # cut off: billing
        "status?code=403",  # cut off: region
        "status?code=404",  # the model is gone
        "context_length",  # the prompt is too long for this one; the fallback's window is larger
        "cut?after=0",  # the stream ends before its first content
        "cut?after=5",  # ... or after content reached the client
        "error_event?after=4",  # an error event mid-stream
        "malformed?after=3",  # a broken event mid-stream (skipped)
        "no_done",  # a complete stream without [DONE]
        "stall?after=0",  # headers, then nothing before the first token
        "no_prefill?t=p",  # the primary answers (its refusals are for continuations only)
    ],
)
def test_every_scenario_is_rescued_with_default_settings(wall: FaultWall, gateway: GatewayFactory, fault: str) -> None:
    primary = {**plain(wall, fault), "context_window": 4096}
    fallback = {**plain(wall, "no_prefill?t=fallback"), "context_window": 32768}  # even one that refuses prefixes
    config = make_config(
        {"primary": primary, "fallback": fallback},
        # the defaults, except a first-token limit a test can wait for (10 s by default)
        aliases={"chat": {"targets": ["primary", "fallback"], "first_token_failover_ms": 200}},
    )
    with gateway(config) as gw:
        text, events, headers = stream(gw)
    assert text == wall_text(12)
    assert not any("error" in e for e in events)
    seams = finish_extension(events).get("continued") or []  # exactly one finishing chunk
    finished_by = seams[-1]["to"] if seams else headers["x-lifeline-target"]
    assert finished_by == ("primary" if fault in PRIMARY_FINISHES else "fallback")
    assert wall.attempts_for(fault), "the primary was tried first"


#: faults after which the primary still finishes its own answer
PRIMARY_FINISHES = {"malformed?after=3", "no_done", "no_prefill?t=p"}
