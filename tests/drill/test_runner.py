"""Drills on real sockets: the fault wall as the real upstreams, a config file, a gateway the drill starts
itself — and every number checked against what the wall recorded."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
import yaml

from lifeline.config import load_config
from lifeline.drill import DrillPlan, builtin_prompts, load_prompts, run_drill, run_pass, summarise
from lifeline.drill.prompts import Messages
from lifeline.errors import DrillError
from lifeline.providers.faults import Fault, FaultKind
from lifeline.testing import FaultWall, wall_text
from tests.conftest import FAST_RETRY, wall_target

N, C = 20, 5
PRIMARY, BACKUP = "ok?t=primary", "ok?t=backup"


def config_file(tmp_path: Path, wall: FaultWall, primary: dict[str, Any], backup: dict[str, Any], **extra: Any) -> Path:
    data = {
        "targets": {"primary": primary, "backup": backup},
        "aliases": {"chat": {"targets": ["primary", "backup"]}},
        "retry": FAST_RETRY,
        "accounting": {"data_dir": str(tmp_path / "data")},
        **extra,
    }
    path = tmp_path / "lifeline.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def plan(fault: FaultKind = "forbidden", after: int = 3, **extra: Any) -> DrillPlan:
    """Cut the primary; N requests, C at a time, unless `extra` says otherwise."""
    settings: dict[str, Any] = {"requests": N, "concurrency": C, **extra}
    return DrillPlan(alias="chat", cut=("primary",), fault=Fault(fault, after), **settings)


def test_a_forbidden_primary_is_served_entirely_by_the_backup(wall: FaultWall, tmp_path: Path) -> None:
    path = config_file(tmp_path, wall, wall_target(wall, PRIMARY), wall_target(wall, BACKUP))
    result = run_drill(load_config(path), plan(), builtin_prompts())
    s = summarise(result.drill)
    # the report's numbers are the wall's: the cut primary never reached, the backup answered every request
    assert wall.attempts_for(PRIMARY) == []
    assert len(wall.attempts_for(BACKUP)) == N
    assert (s.total, s.answered, s.share_served) == (N, N, 1.0)
    assert s.served_by == {"backup": N} == s.finished_by
    assert (s.errors, s.incomplete, s.continued) == (0, 0, 0)
    # the gateway's attempt counts add up to the wall's, plus the 403s injected in front of the primary
    met_the_cut = sum(r.attempts == 2 for r in result.drill.results)
    assert met_the_cut >= 1 and s.attempts == N + met_the_cut and s.failed_over == met_the_cut
    assert all(r.text == wall_text(12) and r.finish_reason == "stop" and r.done for r in result.drill.results)
    assert s.ttft.count == N and s.latency.p50 is not None and s.ttft.p50 is not None
    assert s.ttft.p50 <= s.latency.p50
    assert s.completion_tokens == 12 * N
    primary = next(c for c in result.circuits if c["target"] == "primary")
    assert primary["state"] == "open" and primary["override"] == "cut:forbidden"
    assert primary["last_error"] == "cut_off 403"


def test_a_cut_stream_is_continued_on_a_prefill_backup_and_every_answer_is_whole(
    wall: FaultWall, tmp_path: Path
) -> None:
    path = config_file(
        tmp_path,
        wall,
        wall_target(wall, PRIMARY),
        wall_target(wall, BACKUP, capabilities={"prefill": True}),
        # keep the primary's circuit closed, so that every request begins on it and is cut
        circuit={"failure_threshold": 1000},
    )
    result = run_drill(load_config(path), plan("stream_cut", after=3), builtin_prompts())
    s = summarise(result.drill)
    assert (s.answered, s.incomplete, s.errors) == (N, 0, 0)
    assert all(r.text == wall_text(12) for r in result.drill.results)
    assert s.continued == N
    assert s.continuations == {("primary", "backup"): N}
    assert s.continuation_reasons == {"unavailable": N}
    assert s.served_by == {"primary": N} and s.finished_by == {"backup": N}
    assert all(r.continued[0].after_chars == len(wall_text(3)) for r in result.drill.results)
    # the primary's real answer flowed until the cut; the backup was asked to continue each one
    assert len(wall.attempts_for(PRIMARY)) == N
    continued = wall.attempts_for(BACKUP)
    assert len(continued) == N
    assert all(a.body is not None and a.body["messages"][-1]["content"] == wall_text(3) for a in continued)


def test_a_silent_primary_shows_in_the_latency(wall: FaultWall, tmp_path: Path) -> None:
    path = config_file(
        tmp_path,
        wall,
        wall_target(wall, PRIMARY, timeouts={"first_byte": 0.3, "response": 0.3}),
        wall_target(wall, BACKUP),
        circuit={"failure_threshold": 1000},
    )
    result = run_drill(load_config(path), plan("timeout", requests=10), builtin_prompts())
    s = summarise(result.drill)
    assert s.served_by == {"backup": 10}
    assert wall.attempts_for(PRIMARY) == []
    assert len(wall.attempts_for(BACKUP)) == 10
    # every request waited out the primary's first-byte timeout before the backup answered
    assert s.latency.p50 is not None and s.ttft.p50 is not None and s.latency.max is not None
    # measured latencies, so only bounds a slow machine cannot break: at least the timeout, TTFT within latency
    assert 0.3 <= s.ttft.p50 <= s.latency.p50
    assert all(r.latency >= 0.3 and r.attempts == 2 for r in result.drill.results)
    assert s.duration >= 0.6  # two rounds of five, each held 0.3 s


def test_a_baseline_runs_first_without_the_cut(wall: FaultWall, tmp_path: Path) -> None:
    path = config_file(tmp_path, wall, wall_target(wall, PRIMARY), wall_target(wall, BACKUP))
    result = run_drill(load_config(path), plan(baseline=True, requests=8, stream=False), builtin_prompts())
    assert result.baseline is not None
    before, during = summarise(result.baseline), summarise(result.drill)
    assert before.served_by == {"primary": 8} and during.served_by == {"backup": 8}
    assert len(wall.attempts_for(PRIMARY)) == 8 and len(wall.attempts_for(BACKUP)) == 8
    assert during.ttft.count == 0  # not streamed: no first token to time
    assert all(r.text == wall_text(12) and r.finish_reason == "stop" for r in result.drill.results)


def test_every_target_cut_is_reported_as_errors(wall: FaultWall, tmp_path: Path) -> None:
    path = config_file(tmp_path, wall, wall_target(wall, PRIMARY), wall_target(wall, BACKUP))
    cut_both = DrillPlan(alias="chat", cut=("primary", "backup"), fault=Fault("forbidden"), requests=6, concurrency=3)
    result = run_drill(load_config(path), cut_both, builtin_prompts())
    s = summarise(result.drill)
    assert (s.answered, s.errors, s.share_served) == (0, 6, 0.0)
    assert wall.attempts == []
    [group] = s.error_groups
    assert group.count == 6 and group.statuses == (502,) and group.code == "all_targets_failed"


def test_prompts_from_a_file_are_sent_in_turn(wall: FaultWall, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        '{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "first"}]}\n'
        "\n"
        '{"prompt": "second", "id": 7}\n'
    )
    path = config_file(tmp_path, wall, wall_target(wall, PRIMARY), wall_target(wall, BACKUP))
    drill = DrillPlan(alias="chat", cut=("primary",), fault=Fault("forbidden"), requests=4, concurrency=1)
    run_drill(load_config(path), drill, load_prompts(prompts))
    sent = [a.body["messages"][-1]["content"] for a in wall.attempts_for(BACKUP) if a.body is not None]
    assert sent == ["first", "second", "first", "second"]
    first = wall.attempts_for(BACKUP)[0].body
    assert first is not None and first["messages"][0] == {"role": "system", "content": "be brief"}


def test_an_unknown_target_is_refused_before_anything_starts(wall: FaultWall, tmp_path: Path) -> None:
    path = config_file(tmp_path, wall, wall_target(wall, PRIMARY), wall_target(wall, BACKUP))
    bad = DrillPlan(alias="chat", cut=("primray",), fault=Fault("forbidden"), requests=1, concurrency=1)
    with pytest.raises(DrillError, match=r"unknown target\(s\) 'primray'; targets: primary, backup"):
        run_drill(load_config(path), bad, builtin_prompts())
    assert wall.attempts == []


# --- what the client side makes of a gateway that misbehaves (a mock transport stands in for it) -------


def stream_of(*events: bytes) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        body = b"".join(b"data: " + e + b"\n\n" for e in events)
        return httpx.Response(200, content=body, headers={"x-lifeline-target": "t", "x-lifeline-attempts": "1"})

    return httpx.MockTransport(answer)


def chunk(content: str | None = None, finish: str | None = None) -> bytes:
    delta = {"content": content} if content is not None else {}
    return orjson.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


PROMPTS: list[Messages] = [[{"role": "user", "content": "hi"}]]
ONE = DrillPlan(alias="chat", cut=("x",), fault=Fault("forbidden"), requests=1, concurrency=1)


def one(transport: httpx.MockTransport, drill: DrillPlan = ONE) -> Any:
    run = asyncio.run(run_pass("http://gateway/v1", drill, PROMPTS, transport=transport))
    return run.results[0]


def test_a_stream_that_stops_without_a_finish_reason_and_without_an_error_is_a_bug() -> None:
    result = one(stream_of(chunk("Hello"), chunk(" there"), b"[DONE]"))
    assert result.outcome == "incomplete"
    assert result.text == "Hello there"
    assert "finish_reason" in (result.error_message or "")
    missing_done = one(stream_of(chunk("Hello"), chunk(finish="stop")))
    assert missing_done.outcome == "incomplete" and "[DONE]" in (missing_done.error_message or "")
    s = summarise_one(result)
    assert (s.incomplete, s.answered, s.errors) == (1, 0, 0)


def test_an_error_event_is_an_error_the_client_was_told_about() -> None:
    error = {"error": {"message": "The answer is incomplete.", "type": "api_error", "code": "upstream_stream_broken"}}
    result = one(stream_of(chunk("Hello"), orjson.dumps(error)))
    assert (result.outcome, result.error_code, result.status) == ("error", "upstream_stream_broken", 200)
    assert result.ttft is not None and result.text == "Hello"


def test_an_error_status_keeps_its_code_and_a_complete_whole_answer_is_answered() -> None:
    envelope = {"error": {"message": "nope", "type": "api_error", "code": "all_targets_failed", "param": None}}
    failed = one(httpx.MockTransport(lambda r: httpx.Response(502, json=envelope)))
    assert (failed.outcome, failed.error_code, failed.status) == ("error", "all_targets_failed", 502)
    plain = one(httpx.MockTransport(lambda r: httpx.Response(500, text="Internal Server Error")))
    assert plain.error_code == "http_500"
    answer = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
    }
    whole = DrillPlan(alias="chat", cut=("x",), fault=Fault("forbidden"), requests=1, concurrency=1, stream=False)
    done = one(httpx.MockTransport(lambda r: httpx.Response(200, json=answer)), whole)
    assert (done.outcome, done.text, done.completion_tokens, done.ttft) == ("answered", "hi", 1, None)
    unfinished = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "h"}, "finish_reason": None}]}
    cut_short = one(httpx.MockTransport(lambda r: httpx.Response(200, json=unfinished)), whole)
    assert cut_short.outcome == "incomplete"


def test_a_gateway_that_cannot_be_reached_is_a_connection_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    result = one(httpx.MockTransport(refuse))
    assert (result.outcome, result.error_code, result.status) == ("error", "connection_error", None)


def summarise_one(result: Any) -> Any:
    from lifeline.drill import PassResult

    return summarise(PassResult("drill", [result], 0.1))


def test_the_drill_keeps_its_circuits_out_of_redis(wall: FaultWall, tmp_path: Path, fresh_redis_url: str) -> None:
    # Replicas serving production share circuits through this Redis: an injected cut must not open theirs.
    accounting = {"redis_url": fresh_redis_url, "data_dir": str(tmp_path / "data")}
    path = config_file(tmp_path, wall, wall_target(wall, PRIMARY), wall_target(wall, BACKUP), accounting=accounting)
    result = run_drill(load_config(path), plan(requests=4), builtin_prompts())
    assert summarise(result.drill).served_by == {"backup": 4}
    assert next(c for c in result.circuits if c["target"] == "primary")["state"] == "open"  # here, and only here
    client = redis.Redis.from_url(fresh_redis_url)
    try:
        assert client.keys("*") == []
    finally:
        client.close()
