"""Running a speech audit: each prompt of a suite, in each language asked for, sent as a plain user message to
each candidate pinned to its one target, and each answer classified (offline, or by a judge alias).

The machinery is the eval's (lifeline.eval.runner): the same gateway on loopback with an `eval:<target>`
alias per candidate (no failover), the same bounded concurrency, cost gate and resumable results.jsonl. An
answer is stored as the eval stores one (its item id is `<prompt id>@<language>`); a judge's classification
is stored as a judgement of order "classify" under AUDIT_JUDGE_VERSION.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from lifeline.accounting.pricing import PriceBook
from lifeline.audit.classifier import classify
from lifeline.audit.judge import AUDIT_JUDGE_VERSION, judge_body, parse_class
from lifeline.audit.metrics import Labelled
from lifeline.audit.suite import Prompt, Suite
from lifeline.config.schema import Config
from lifeline.errors import AuditError
from lifeline.eval.checks import content, has_answer
from lifeline.eval.items import Item
from lifeline.eval.runner import (
    CAPTURED,
    CLIENT_GRACE,
    Answer,
    Caller,
    Contender,
    EvalPlan,
    Job,
    Judgement,
    Lineup,
    ResultsFile,
    estimate,
    judge_job,
    pinned_config,
    resolve,
    worst_case_usd,
)
from lifeline.jobs import CostGate, Watcher, job_gateway

CLASSIFY = "classify"
#: the completion allowance of each audit question (answers are paragraphs, not essays)
DEFAULT_MAX_TOKENS = 512


@dataclass(frozen=True, slots=True)
class AuditPlan:
    candidates: tuple[str, ...]
    languages: tuple[str, ...]
    judge: str | None = None
    concurrency: int = 4
    #: USD for the whole results file, the judge's calls included
    max_cost: float | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS


@dataclass(slots=True)
class AuditRun:
    suite: Suite
    plan: AuditPlan
    lineup: Lineup
    rows: list[Labelled]
    spent_usd: float
    stopped: str | None = None
    started_at: str = ""


def item_id(prompt: Prompt, language: str) -> str:
    return f"{prompt.id}@{language}"


def lineup_of(config: Config, plan: AuditPlan, suite: Suite) -> Lineup:
    """The candidates pinned one target each (an alias stands for each of its targets) and the judge."""
    missing = [code for code in plan.languages if code not in suite.languages]
    if not plan.languages or missing:
        raise AuditError(
            f"--languages: suite {suite.name} is written in {', '.join(suite.languages)}, not "
            f"{', '.join(missing) or 'nothing'}"
        )
    if plan.max_tokens < 1:
        raise AuditError("--max-tokens must be 1 or more")
    eval_plan = EvalPlan(plan.candidates, CAPTURED, plan.judge, plan.concurrency, plan.max_cost)
    return resolve(config, eval_plan)


def audit_items(suite: Suite, languages: Sequence[str], max_tokens: int) -> list[Item]:
    """Each prompt in each language as an eval item: one plain user message, nothing else."""
    return [
        Item(
            id=item_id(prompt, language),
            request={"messages": [{"role": "user", "content": prompt.text_in(language)}], "max_tokens": max_tokens},
        )
        for prompt in suite.prompts
        for language in languages
    ]


def _facts(prompt: Prompt, language: str) -> list[str]:
    return ["|".join(fact.phrases_in(language)) for fact in prompt.expected_facts]


# --- the run ---------------------------------------------------------------------------------------------


def run_audit(
    config: Config, plan: AuditPlan, suite: Suite, results: ResultsFile, *, watcher: Watcher | None = None
) -> AuditRun:
    """Send what results.jsonl does not hold yet through a gateway started for the audit, then classify."""
    lineup = lineup_of(config, plan, suite)
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    items = audit_items(suite, plan.languages, plan.max_tokens)
    gate = CostGate(plan.max_cost, results.spent_usd)
    served = pinned_config(config, lineup)
    timeout = config.server.request_timeout + CLIENT_GRACE
    with job_gateway(served, AuditError) as gw:
        caller = Caller(gw.base_url, served, PriceBook(config), gate, plan.concurrency, timeout, results, watcher)
        asyncio.run(caller.answers(items, lineup))
        if lineup.judge is not None and not gate.stopped:
            asyncio.run(caller.run("judge", _judge_jobs(caller, suite, plan, lineup, lineup.judge)))
    return collect(suite, plan, lineup, results, "cost_cap" if gate.stopped else None, started)


def collect(
    suite: Suite,
    plan: AuditPlan,
    lineup: Lineup,
    results: ResultsFile,
    stopped: str | None = None,
    started_at: str = "",
) -> AuditRun:
    """The classified answers as results.jsonl holds them (a prompt not answered yet is a missing answer)."""
    answers = {(r.item, r.name): r for r in results.records if isinstance(r, Answer)}
    judged = {
        (r.item, r.candidate): r.verdict
        for r in results.records
        if isinstance(r, Judgement) and r.order == CLASSIFY and r.prompt_version == AUDIT_JUDGE_VERSION
        and lineup.judge is not None and r.judge == lineup.judge.name
    }  # fmt: skip
    rows: list[Labelled] = []
    for candidate in lineup.candidates:
        for prompt in suite.prompts:
            for language in plan.languages:
                key = (item_id(prompt, language), candidate.name)
                answer = answers.get(key)
                text = content(answer.response) if answer and answer.response and has_answer(answer.response) else None
                label: str | None = None
                if text is not None:
                    if lineup.judge is not None:
                        verdict = judged.get(key)
                        label = verdict if verdict not in (None, "invalid") else None
                    else:
                        facts = {language: _facts(prompt, language)}
                        label = classify(text, prompt=prompt.text_in(language), expected_facts=facts).label.value
                rows.append(
                    Labelled(candidate.name, prompt.id, prompt.topic, prompt.kind.value, prompt.pair, language,
                             label, text or "")
                )  # fmt: skip
    return AuditRun(suite, plan, lineup, rows, results.spent_usd, stopped, started_at)


# --- the judge ---------------------------------------------------------------------------------------------


def _judge_jobs(
    caller: Caller, suite: Suite, plan: AuditPlan, lineup: Lineup, judge: Contender
) -> list[tuple[float, Job]]:
    done = caller.results.done
    answers = {(r.item, r.name): r for r in caller.results.records if isinstance(r, Answer)}
    jobs: list[tuple[float, Job]] = []
    for candidate in lineup.candidates:
        for prompt in suite.prompts:
            for language in plan.languages:
                item = item_id(prompt, language)
                record = Judgement(item, candidate.name, "", CLASSIFY, judge.name, AUDIT_JUDGE_VERSION)
                answer = answers.get((item, candidate.name))
                if record.key in done or answer is None or answer.response is None or not has_answer(answer.response):
                    continue
                body = judge_body(judge.alias, prompt.text_in(language), content(answer.response),
                                  _facts(prompt, language))  # fmt: skip
                cost = worst_case_usd(caller.prices, caller.config, body, judge.targets)
                jobs.append((cost, judge_job(caller, record, body, parse_class)))
    return jobs


# --- the dry run -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditEstimate:
    answers: int
    classifications: int
    cost_usd: float


def estimate_audit(
    config: Config, plan: AuditPlan, suite: Suite, lineup: Lineup, done: set[tuple[str, ...]]
) -> AuditEstimate:
    """What the run still has to send and its worst case cost, as the cost cap would reserve it; a judge call
    is counted for every answer, each taken at its whole completion allowance (about four bytes a token)."""
    items = audit_items(suite, plan.languages, plan.max_tokens)
    answers = estimate(config, Lineup(lineup.candidates, None, None), items, done)
    cost, judged = answers.cost_usd, 0
    if lineup.judge is not None:
        prices = PriceBook(config)
        filler = "x" * (4 * plan.max_tokens)
        for prompt in suite.prompts:
            for language in plan.languages:
                body = judge_body(lineup.judge.alias, prompt.text_in(language), filler, _facts(prompt, language))
                each = worst_case_usd(prices, config, body, lineup.judge.targets)
                for candidate in lineup.candidates:
                    key = Judgement(item_id(prompt, language), candidate.name, "", CLASSIFY, lineup.judge.name,
                                    AUDIT_JUDGE_VERSION).key  # fmt: skip
                    if key not in done:
                        judged += 1
                        cost += each
    return AuditEstimate(answers.answers, judged, cost)
