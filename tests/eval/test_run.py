"""`lifeline eval` for real: a gateway on loopback in front of fault-wall targets that answer
deterministically well or badly, the figures of results.json checked against values computed by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from lifeline.config import Config
from lifeline.errors import EvalError
from lifeline.eval import EvalPlan, ResultsFile, items_from, resolve, run_eval, summarise
from lifeline.eval.runner import PIN_PREFIX, estimate, pinned_config
from lifeline.testing import FaultWall, wall_text
from tests.conftest import wall_target
from tests.eval.conftest import ITEMS, eval_config

#: what `scripted` says per item, in wall tokens (words); the tool call is the wall's 8 tokens
WORDS = {"capital": 1, "schema": 2, "object": 2, "weather": 8}


def run(
    cfg: Config, tmp_path: Path, candidates: tuple[str, ...], baseline: str = "good", **plan: Any
) -> dict[str, Any]:
    results = ResultsFile(tmp_path / "results.jsonl")
    done = run_eval(cfg, EvalPlan(candidates, baseline, concurrency=1, **plan), items_from(ITEMS, "t"), results)
    return summarise(done, cfg.eval)


def candidate(figures: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in figures["candidates"] if c["name"] == name)


def test_figures_of_a_small_fixed_run_match_the_hand_computed_ones(wall: FaultWall, tmp_path: Path) -> None:
    figures = run(eval_config(wall), tmp_path, ("jsonbreak", "notools", "pricey"))
    base = figures["baseline"]
    assert base["name"] == "good" and base["answered"] == 4
    assert base["cost"]["total_usd"] == pytest.approx(sum(WORDS.values()))  # 13 tokens at 1 USD
    assert base["cost"]["per_1k_usd"] == pytest.approx(13 / 4 * 1000)

    # jsonbreak breaks every second JSON answer: of the two JSON items, the second (object) is cut short.
    broken = candidate(figures, "jsonbreak")
    json_check = broken["checks"]["json"]
    assert (json_check["passed"], json_check["n"]) == (1, 2)
    assert json_check["pass"]["low"] == pytest.approx(0.0945, abs=5e-4)  # Wilson of 1/2
    assert json_check["pass"]["high"] == pytest.approx(0.9055, abs=5e-4)
    assert broken["checks"]["schema"]["passed"] == 1  # the schema item came first and was whole
    outcomes = broken["outcomes"]
    assert (outcomes["wins"], outcomes["ties"], outcomes["losses"], outcomes["n"]) == (0, 3, 1, 4)
    assert outcomes["source"] == "checks"
    assert outcomes["win_or_tie"]["low"] == pytest.approx(0.301, abs=5e-4)  # Wilson of 3/4
    assert outcomes["win_or_tie"]["high"] == pytest.approx(0.954, abs=5e-4)
    row = next(r for r in figures["items"] if r["candidate"] == "jsonbreak" and r["item"] == "object")
    assert row["outcome"] == "loss" and row["checks"]["json"] is False
    assert broken["worst"][0]["item"] == "object" and broken["worst"][0]["failed_checks"] == ["json"]

    # notools answers the tool item in words: tool_use breaks (the baseline called a tool), the rest ties.
    words = candidate(figures, "notools")
    assert words["checks"]["tool_use"]["failed"] == 1 and words["checks"]["tool_use"]["n"] == 1
    assert words["checks"]["tool"]["n"] == 0  # no tool call to check
    assert (words["outcomes"]["wins"], words["outcomes"]["losses"]) == (0, 1)
    assert words["checks"]["reference"]["passed"] == 1

    # pricey says the same at twice the price: cost ratio exactly 2, its bootstrap interval too.
    dear = candidate(figures, "pricey")
    assert dear["cost"]["per_1k_usd"] == pytest.approx(2 * 13 / 4 * 1000)
    ratio = dear["ratios"]["cost_per_1k"]
    assert (ratio["value"], ratio["low"], ratio["high"], ratio["pairs"]) == pytest.approx((2.0, 2.0, 2.0, 4))
    assert dear["outcomes"]["ties"] == 4
    assert any("cost per 1k requests 2.00 times" in c for c in dear["verdict"]["caveats"])
    for figures_of in (broken, words, dear):
        latency = figures_of["latency_ms"]
        assert latency["n"] == 4 and latency["p50"] <= latency["p95"]
        assert figures_of["verdict"]["status"] == "not_ready"  # 4 items cannot show non-inferiority
        assert any("non-inferiority not shown" in r for r in figures_of["verdict"]["reasons"])
    assert any("check json: breakage could be 90.5%" in r for r in broken["verdict"]["reasons"])
    assert figures["run"]["spent_usd"] == pytest.approx(13 + 13 + 17 + 26)  # notools says 12 wall words


def test_each_candidate_is_pinned_to_its_target_without_failover(wall: FaultWall, tmp_path: Path) -> None:
    cfg = eval_config(wall)
    lineup = resolve(cfg, EvalPlan(("open",), "good"))
    assert [c.name for c in lineup.candidates] == ["jsonbreak", "notools"]  # an alias stands for its targets
    served = pinned_config(cfg, lineup)
    assert served.aliases[PIN_PREFIX + "notools"].targets == ["notools"]
    figures = run(cfg, tmp_path, ("open",))
    for a in wall.attempts:
        assert a.body is not None and a.body.get("stream") is not True
    lines = [orjson.loads(line) for line in (tmp_path / "results.jsonl").read_bytes().splitlines()]
    assert {(r["name"], r["target"]) for r in lines} == {("good", "good"), ("jsonbreak", "jsonbreak"),
                                                         ("notools", "notools")}  # fmt: skip
    assert len(figures["candidates"]) == 2


def test_a_failing_candidate_is_its_own_figure_not_a_failover(wall: FaultWall, tmp_path: Path) -> None:
    cfg = eval_config(wall, down=wall_target(wall, "status?code=503"))
    figures = run(cfg, tmp_path, ("down",))
    down = candidate(figures, "down")
    assert down["answered"] == 0 and down["checks"]["answered"]["failed"] == 4
    assert down["outcomes"]["losses"] == 4
    assert "no item was answered" in down["verdict"]["reasons"]
    assert {a.model for a in wall.attempts} == {"scripted", "status?code=503"}
    assert len([a for a in wall.attempts if a.model == "scripted"]) == 4  # the baseline's only: no failover


def test_both_judge_orders_are_sent_and_counted(wall: FaultWall, tmp_path: Path) -> None:
    figures = run(eval_config(wall), tmp_path, ("notools",), judge="judge")
    asked = wall.attempts_for("judge?prefer=longer")
    assert len(asked) == 8  # 4 pairs, both orders
    weather = [
        a.body["messages"][1]["content"] for a in asked if "Weather in Paris" in a.body["messages"][1]["content"]
    ]
    assert len(weather) == 2
    first_a = [text.split("<answer_a>")[1].split("</answer_a>")[0] for text in weather]
    assert any("[tool call] get_weather" in a for a in first_a) and any("Lifeline keeps" in a for a in first_a)
    outcomes = candidate(figures, "notools")["outcomes"]
    # the judge prefers the longer answer: notools's 12 words beat the tool call; equal answers tie
    assert (outcomes["wins"], outcomes["ties"], outcomes["losses"]) == (1, 3, 0)
    assert outcomes["source"] == "judge" and outcomes["judged_pairs"] == 4 and outcomes["judge_disagreements"] == 0
    assert figures["run"]["judge"]["prompt_version"] == "pairwise-v1"
    lines = [orjson.loads(line) for line in (tmp_path / "results.jsonl").read_bytes().splitlines()]
    judged = [r for r in lines if r["kind"] == "judge"]
    assert {r["order"] for r in judged} == {"baseline_first", "candidate_first"}
    assert all(r["prompt_version"] == "pairwise-v1" for r in judged)
    # the judge's cost counts: 5 words at 0.1 USD each, 8 times, on top of the answers' 13 + 17
    assert figures["run"]["spent_usd"] == pytest.approx(13 + 17 + 8 * 0.5)


def test_a_judge_whose_orders_disagree_gives_ties(wall: FaultWall, tmp_path: Path) -> None:
    figures = run(eval_config(wall), tmp_path, ("pricey",), judge="biased")
    outcomes = candidate(figures, "pricey")["outcomes"]
    assert (outcomes["wins"], outcomes["ties"], outcomes["losses"]) == (0, 4, 0)
    assert outcomes["judge_disagreements"] == 4
    assert any("order-biased judge" in c for c in candidate(figures, "pricey")["verdict"]["caveats"])


def test_the_cost_cap_stops_cleanly_and_a_rerun_resumes_without_duplicates(wall: FaultWall, tmp_path: Path) -> None:
    cfg = eval_config(wall)
    items = items_from([{**i, "request": {**i["request"], "max_tokens": 10}} for i in ITEMS], "t")
    plan = EvalPlan(("notools",), "good", concurrency=1, max_cost=25.0)
    results = ResultsFile(tmp_path / "results.jsonl")
    # each request may cost 10 tokens at 1 USD: sent while spent + 10 <= 25
    stopped = run_eval(cfg, plan, items, results)
    assert stopped.stopped == "cost_cap"
    assert 0 < len(stopped.answers) < 8
    assert stopped.spent_usd <= 25.0 and stopped.spent_usd + 10 > 25.0
    assert len(wall.attempts) == len(stopped.answers)
    assert summarise(stopped, cfg.eval)["run"]["stopped"] == "cost_cap"

    again = run_eval(cfg, EvalPlan(("notools",), "good", concurrency=2), items, ResultsFile(results.path))
    assert again.stopped is None and len(again.answers) == 8
    keys = [(r["item"], r["name"]) for r in map(orjson.loads, results.path.read_bytes().splitlines())]
    assert len(keys) == len(set(keys)) == 8
    seen = [(a.model, a.body["messages"][0]["content"]) for a in wall.attempts if a.body]
    assert len(seen) == len(set(seen)) == 8  # nothing was sent twice


def test_an_interrupted_last_line_is_sent_again(wall: FaultWall, tmp_path: Path) -> None:
    cfg = eval_config(wall)
    run(cfg, tmp_path, ("notools",))
    path = tmp_path / "results.jsonl"
    lines = path.read_bytes().splitlines()
    path.write_bytes(b"\n".join(lines[:-1]) + b"\n" + lines[-1][:20])  # cut mid-line
    wall.reset()
    figures = run(cfg, tmp_path, ("notools",))
    assert len(wall.attempts) == 1
    assert len(path.read_bytes().splitlines()) == 8
    assert candidate(figures, "notools")["items"] == 4


def test_dry_run_estimate_counts_requests_and_worst_case_cost(wall: FaultWall) -> None:
    cfg = eval_config(wall)
    items = items_from([{**i, "request": {**i["request"], "max_tokens": 10}} for i in ITEMS], "t")
    lineup = resolve(cfg, EvalPlan(("notools", "pricey"), "good", judge="judge"))
    guess = estimate(cfg, lineup, items, set())
    assert (guess.answers, guess.judgements, guess.requests) == (12, 16, 28)
    # answers: 10 tokens each at 1 USD (good, notools) or 2 USD (pricey); judge: 512 tokens at 0.1 USD
    assert guess.cost_usd == pytest.approx(4 * 10 + 4 * 10 + 4 * 20 + 16 * 51.2)
    assert not wall.attempts


def test_unknown_candidates_baselines_and_judges_are_refused(wall: FaultWall) -> None:
    cfg = eval_config(wall)
    with pytest.raises(EvalError, match="'nope' is neither a target nor a chat alias"):
        resolve(cfg, EvalPlan(("nope",), "good"))
    with pytest.raises(EvalError, match="--judge must name a chat alias"):
        resolve(cfg, EvalPlan(("notools",), "good", judge="good"))
    with pytest.raises(EvalError, match="both the baseline and a candidate"):
        resolve(cfg, EvalPlan(("good",), "good"))


def test_a_captured_baseline_is_compared_without_being_sent_again(wall: FaultWall, tmp_path: Path) -> None:
    def answer(message: dict[str, Any], finish: str) -> dict[str, Any]:
        return {"choices": [{"index": 0, "message": message, "finish_reason": finish}]}

    tool_call = {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    captured = {
        "capital": {"target": "openai", "response": answer({"role": "assistant", "content": "Paris"}, "stop"),
                    "latency_ms": 100.0, "ttft_ms": 40.0, "cost_usd": 1.0, "error": None},
        "weather": {"target": "openai", "response": answer({"role": "assistant", "content": None,
                    "tool_calls": [tool_call]}, "tool_calls"), "latency_ms": 200.0, "ttft_ms": 90.0, "cost_usd": 8.0},
    }  # fmt: skip
    items = items_from([{**i, "baseline": captured[i["id"]]} for i in ITEMS if i["id"] in captured], "captured")
    cfg = eval_config(wall)
    done = run_eval(cfg, EvalPlan(("pricey",), "captured", concurrency=1), items, ResultsFile(tmp_path / "r.jsonl"))
    figures = summarise(done, cfg.eval)
    assert {a.model for a in wall.attempts} == {"scripted?latency_ms=5"}  # only the candidate was sent
    base = figures["baseline"]
    assert base["name"] == "captured" and base["captured"] is True
    assert (base["latency_ms"]["p50"], base["latency_ms"]["p95"]) == (100.0, 200.0)
    assert (base["ttft_ms"]["p50"], base["ttft_ms"]["p95"]) == (40.0, 90.0)
    pricey = candidate(figures, "pricey")
    assert pricey["outcomes"]["ties"] == 2
    assert pricey["checks"]["tool_use"]["passed"] == 1
    # (2 + 16) / 2 against (1 + 8) / 2 USD: twice the cost, in every resample too
    assert pricey["ratios"]["cost_per_1k"]["value"] == pytest.approx(2.0)
    assert pricey["ratios"]["cost_per_1k"]["low"] == pytest.approx(2.0)


def test_streamed_answers_are_reassembled_and_measure_ttft(wall: FaultWall, tmp_path: Path) -> None:
    cfg = eval_config(wall, plain=wall_target(wall, "ok"), tooler=wall_target(wall, "tool_call"))
    figures = run(cfg, tmp_path, ("plain", "tooler"), stream=True)
    assert all(a.stream for a in wall.attempts)
    plain, tooler = candidate(figures, "plain"), candidate(figures, "tooler")
    assert plain["answered"] == 4 and plain["ttft_ms"]["n"] == 4
    assert plain["ttft_ms"]["p95"] <= plain["latency_ms"]["p95"]
    row = next(r for r in figures["items"] if r["candidate"] == "plain" and r["item"] == "capital")
    assert row["answer"] == wall_text(12)  # the wall's 12 words, streamed one by one
    assert plain["checks"]["finish"]["passed"] == 4
    # the tool call's streamed pieces are put back together and validate against the offered schema; on the
    # three items that offer no tool, the wall still calls get_weather: a tool that was not offered
    assert (tooler["checks"]["tool"]["passed"], tooler["checks"]["tool"]["failed"]) == (1, 3)
    assert tooler["checks"]["tool_use"]["passed"] == 1
    lines = [orjson.loads(line) for line in (tmp_path / "results.jsonl").read_bytes().splitlines()]
    call = next(r for r in lines if r["name"] == "tooler" and r["item"] == "weather")
    assert call["response"]["choices"][0]["message"]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city": "Paris"}',
    }
    assert call["completion_tokens"] == 8 and call["cost_usd"] == 0.0  # unpriced wall target


def test_a_results_file_damaged_before_its_last_line_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    good = orjson.dumps({"kind": "answer", "item": "a", "role": "candidate", "name": "x", "cost_usd": 0.5}).decode()
    path.write_text(f"{good}\nnot json\n{good}\n")
    with pytest.raises(EvalError, match=rf"{path}:2: not a result line"):
        ResultsFile(path)
    path.write_text(f"{good}\n")
    reopened = ResultsFile(path)
    assert reopened.done == {("answer", "a", "candidate", "x")} and reopened.spent_usd == 0.5


def test_the_dry_run_of_a_finished_run_counts_nothing_left_to_send(wall: FaultWall, tmp_path: Path) -> None:
    """A failed candidate's pairs are decided without the judge, so a resumed dry run must not count their
    judge calls (it did: "10 judge calls" after a finished run that sent nothing more)."""
    cfg = eval_config(wall, down=wall_target(wall, "status?code=503"))
    run(cfg, tmp_path, ("down", "notools"), judge="judge")
    results = ResultsFile(tmp_path / "results.jsonl")
    lineup = resolve(cfg, EvalPlan(("down", "notools"), "good", judge="judge"))
    items = items_from(ITEMS, "t")
    assert len(results.unanswered) == 4  # the four answers "down" failed
    guess = estimate(cfg, lineup, items, results.done, results.unanswered)
    assert (guess.answers, guess.judgements, guess.cost_usd) == (0, 0, 0.0)
    wall.reset()
    run(cfg, tmp_path, ("down", "notools"), judge="judge")
    assert wall.attempts == []  # and indeed the rerun sends nothing
