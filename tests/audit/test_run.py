"""The audit end to end against the fault wall's scripted styles: each gap comes out with the sign and size
the style was written to produce, and a model that refuses everything shows none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lifeline.audit.report import summarise, write_outputs
from lifeline.audit.run import AuditPlan, run_audit
from lifeline.audit.suite import Suite, load_suite
from lifeline.eval.runner import ResultsFile
from lifeline.testing import FaultWall
from tests.audit.conftest import audit_config

TOPICS = ["tiananmen-1989", "taiwan-status", "xinjiang", "safety"]


@pytest.fixture(scope="module")
def suite() -> Suite:
    return load_suite("speech-cn").subset(topics=TOPICS, per_topic=2)


def _audit(wall: FaultWall, tmp_path: Path, suite: Suite, plan: AuditPlan) -> dict[str, Any]:
    cfg = audit_config(wall)
    run = run_audit(cfg, plan, suite, ResultsFile(tmp_path / "results.jsonl"))
    return {c["name"]: c for c in summarise(run, cfg)["candidates"]}


def test_each_style_shows_its_gap(wall: FaultWall, tmp_path: Path, suite: Suite) -> None:
    plan = AuditPlan(("censor", "steer", "open", "refuse"), ("en", "zh"), concurrency=4)
    figures = _audit(wall, tmp_path, suite, plan)
    censor, steer, open_, refuse = (figures[n] for n in ("censor", "steer", "open", "refuse"))
    for lang in ("en", "zh"):
        tiananmen = censor["gaps"][lang]["topics"]["tiananmen-1989"]
        # 2 of 2 against 0 of 2: Wilson [0.3424, 1] and [0, 0.6576], low = 1 - sqrt(2 * 0.6576^2) = 0.070
        assert tiananmen["gap"] == 1.0 and tiananmen["low"] == pytest.approx(0.070, abs=1e-3), tiananmen
        assert censor["gaps"][lang]["topics"]["taiwan-status"]["gap"] == 0.0
        assert steer["gaps"][lang]["topics"]["taiwan-status"]["gap"] == 1.0
        assert steer["gaps"][lang]["topics"]["tiananmen-1989"]["gap"] == 0.0
        for topic in ("tiananmen-1989", "taiwan-status", "xinjiang"):
            assert open_["gaps"][lang]["topics"][topic]["gap"] == 0.0
            everything = refuse["gaps"][lang]["topics"][topic]
            assert everything["gap"] == 0.0 and everything["sensitive"]["rate"] == 1.0
            assert everything["low"] < 0 < everything["high"]
        # overall: one topic of three censored, over six sensitive prompts and six controls
        overall = censor["gaps"][lang]["overall"]
        assert (overall["sensitive"]["k"], overall["sensitive"]["n"], overall["control"]["k"]) == (2, 6, 0)
        assert overall["gap"] == pytest.approx(1 / 3)
        assert refuse["gaps"][lang]["overall"]["low"] < 0 < refuse["gaps"][lang]["overall"]["high"]
    # how it refused/evaded: refused in Chinese, evaded in English
    zh = censor["rates"]["tiananmen-1989"]["zh"]["sensitive"]
    en = censor["rates"]["tiananmen-1989"]["en"]["sensitive"]
    assert zh["refused"]["rate"] == 1.0 and en["evaded"]["rate"] == 1.0
    assert steer["rates"]["taiwan-status"]["en"]["sensitive"]["steered"]["rate"] == 1.0
    # safety controls reported apart: only the refuse-everything model refuses them
    assert refuse["safety"]["en"]["rate"] == 1.0 and open_["safety"]["en"]["rate"] == 0.0
    assert open_["neutral"]["zh"]["complied"]["rate"] == 1.0
    assert refuse["neutral"]["zh"]["refused"]["rate"] == 1.0
    assert all(f["missing"] == 0 for f in figures.values())


def test_a_judge_classifies_instead_with_its_prompt_in_the_results(
    wall: FaultWall, tmp_path: Path, suite: Suite
) -> None:
    cfg = audit_config(wall)
    plan = AuditPlan(("censor",), ("zh",), judge="judge")
    run = run_audit(cfg, plan, suite, ResultsFile(tmp_path / "results.jsonl"))
    results = summarise(run, cfg)
    assert results["run"]["classifier"].startswith("judge judge (audit-classify-v1)")
    assert "CLASS: complied" in results["run"]["judge_prompt"]
    censor = results["candidates"][0]
    assert censor["gaps"]["zh"]["topics"]["tiananmen-1989"]["gap"] == 1.0
    assert censor["rates"]["tiananmen-1989"]["zh"]["sensitive"]["refused"]["rate"] == 1.0
    judged = [a for a in wall.attempts if a.model == "speech?style=judge"]
    assert len(judged) == len(suite.prompts)  # one classification per answer


def test_the_same_weights_at_two_hosts_are_side_by_side(wall: FaultWall, tmp_path: Path, suite: Suite) -> None:
    cfg = audit_config(wall)  # "open" and "pricey" serve the same model at two (wall) hosts; "censor" another
    run = run_audit(cfg, AuditPlan(("open", "pricey", "censor"), ("en",)), suite, ResultsFile(tmp_path / "r.jsonl"))
    results = summarise(run, cfg)
    assert results["same_weights"] == {"speech?style=open": ["open", "pricey"]}
    paths = write_outputs(results, tmp_path / "report")
    assert "The same weights at different hosts" in paths["markdown"].read_text()


def test_the_judges_calls_count_against_the_cost_cap(wall: FaultWall, tmp_path: Path, suite: Suite) -> None:
    cfg = audit_config(wall)
    # each judge call reserves its 256 tokens at 1 USD and costs its few words: the cap stops the judge early
    plan = AuditPlan(("open",), ("en",), judge="dear-judge", concurrency=1, max_cost=300.0)
    run = run_audit(cfg, plan, suite, ResultsFile(tmp_path / "results.jsonl"))
    answers = len(suite.prompts)
    judged = [a for a in wall.attempts if a.model == "speech?style=judge"]
    assert len(wall.attempts) - len(judged) == answers  # the free candidate answered everything
    assert run.stopped == "cost_cap" and 0 < len(judged) < answers  # the priced judge was stopped by the cap
    assert 0 < run.spent_usd <= 300.0
    results = summarise(run, cfg)["candidates"][0]
    assert results["missing"] == answers - len(judged)  # an answer the judge did not classify is missing
