"""Running an eval: each item sent to every candidate (and to a live baseline) through a real gateway
pinned to one target at a time, then each pair judged in both orders when a judge is asked for.

The gateway is the drill's (`lifeline.jobs.job_gateway`) with one extra alias per pinned target,
`eval:<target>`, whose only target is that one: the real router, provider, retries and price book, but no
failover, so that a candidate's figures are its own. Requests go `concurrency` at a time, each whole
(stream false; with `stream`, answers are streamed and reassembled, which measures the time to first
token). Every finished request is appended to results.jsonl at once, so that an interrupted run
continues where it stopped (`ResultsFile`); the cost cap reserves each request's worst case before it is
sent and stops sending when the next one could pass the cap (`lifeline.jobs.CostGate`). The sending itself
(`run_jobs`, `post_chat`) is in lifeline.jobs, shared with the audit, which also reuses `Caller`,
`ResultsFile` and the pinned config from here.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from lifeline.accounting.pricing import PriceBook
from lifeline.config.schema import Alias, AuthSettings, Config
from lifeline.errors import EvalError
from lifeline.eval.checks import content, has_answer
from lifeline.eval.items import Item
from lifeline.eval.judge import JUDGE_PROMPT_VERSION, ORDERS, judge_body, parse_verdict, render_answer
from lifeline.jobs import CostGate, Watcher, int_or_none, job_gateway, now_iso, post_chat, run_jobs
from lifeline.protocol.usage import reply_usage, reservation_prompt_tokens

CAPTURED = "captured"
PIN_PREFIX = "eval:"
#: completion tokens reserved for a request that sets no max_tokens and a target with no default of its own
DEFAULT_COMPLETION_ESTIMATE = 1024
#: the client waits this much longer than the gateway's own deadline (as the drill does)
CLIENT_GRACE = 30.0


@dataclass(frozen=True, slots=True)
class Contender:
    """Something answered: `name` as results call it, the alias sent to, the targets it may reach."""

    name: str
    alias: str
    targets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EvalPlan:
    candidates: tuple[str, ...]
    baseline: str
    judge: str | None = None
    concurrency: int = 4
    #: USD for the whole results file (what earlier runs into the same --out spent counts too)
    max_cost: float | None = None
    #: stream the answers (candidates and a live baseline; never the judge) to measure TTFT
    stream: bool = False


@dataclass(frozen=True, slots=True)
class Lineup:
    """A plan resolved against the config."""

    candidates: tuple[Contender, ...]
    #: None: the baseline is the answers captured in the items
    baseline: Contender | None
    judge: Contender | None

    @property
    def baseline_name(self) -> str:
        return self.baseline.name if self.baseline else CAPTURED


@dataclass(slots=True)
class Answer:
    """One item answered by one contender, as results.jsonl stores it."""

    item: str
    role: str  # "candidate" or "baseline"
    name: str
    target: str | None = None
    status: int | None = None
    response: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    cost_usd: float = 0.0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    at: str = ""
    kind: str = "answer"

    @property
    def key(self) -> tuple[str, ...]:
        return ("answer", self.item, self.role, self.name)

    @property
    def outcome(self) -> str:
        return "answered" if self.response is not None and has_answer(self.response) else "error"


@dataclass(slots=True)
class Judgement:
    """One order of one pair, as the judge saw it."""

    item: str
    candidate: str
    baseline: str
    order: str
    judge: str
    prompt_version: str
    verdict: str = "invalid"
    text: str = ""
    target: str | None = None
    error: dict[str, Any] | None = None
    latency_ms: float | None = None
    cost_usd: float = 0.0
    at: str = ""
    kind: str = "judge"

    @property
    def key(self) -> tuple[str, ...]:
        return ("judge", self.item, self.candidate, self.baseline, self.order, self.judge, self.prompt_version)

    @property
    def outcome(self) -> str:
        return "answered" if self.verdict != "invalid" else "error"


Record = Answer | Judgement
#: one request to send, given the client: what results.jsonl will hold of it
Job = Callable[[httpx.AsyncClient], Awaitable[Record]]


@dataclass(slots=True)
class EvalRun:
    """Everything an eval's figures are computed from."""

    items: list[Item]
    lineup: Lineup
    answers: list[Answer]
    judgements: list[Judgement]
    spent_usd: float
    max_cost: float | None
    #: "cost_cap" when the cap stopped the run before every request was sent
    stopped: str | None = None
    sent: int = 0
    started_at: str = ""


# --- resolving the plan ------------------------------------------------------------------------------------


def resolve(config: Config, plan: EvalPlan) -> Lineup:
    """The plan's candidates, baseline and judge, or EvalError saying what the config lacks. A candidate alias
    stands for each of its targets, pinned one at a time (each host of the same weights is judged alone)."""
    if not plan.candidates:
        raise EvalError("--candidates names nothing")
    if plan.concurrency < 1:
        raise EvalError("--concurrency must be 1 or more")
    if plan.max_cost is not None and plan.max_cost < 0:
        raise EvalError("--max-cost must be 0 or more")
    candidates: list[Contender] = []
    for name in plan.candidates:
        for target in _targets_of(config, name, "--candidates"):
            if all(c.name != target for c in candidates):
                candidates.append(_pinned(target))
    baseline: Contender | None = None
    if plan.baseline != CAPTURED:
        if plan.baseline in config.targets:
            baseline = _pinned(plan.baseline)
        else:  # an alias as the application is served by it: its own chain, failover included
            baseline = Contender(plan.baseline, plan.baseline, tuple(_targets_of(config, plan.baseline, "--baseline")))
        if any(c.name == baseline.name for c in candidates):
            raise EvalError(f"{baseline.name} is both the baseline and a candidate")
    judge = None
    if plan.judge is not None:
        alias = config.aliases.get(plan.judge)
        if alias is None or alias.kind != "chat":
            raise EvalError(f"--judge must name a chat alias; chat aliases: {', '.join(_chat_aliases(config))}")
        judge = Contender(plan.judge, plan.judge, tuple(config.permitted_targets(alias)[0]))
    return Lineup(tuple(candidates), baseline, judge)


def _pinned(target: str) -> Contender:
    return Contender(target, PIN_PREFIX + target, (target,))


def _targets_of(config: Config, name: str, flag: str) -> list[str]:
    target = config.targets.get(name)
    if target is not None:
        if getattr(target, "embedding", False):
            raise EvalError(f"{flag}: target {name} is an embedding model, not a chat model")
        return [name]
    alias = config.aliases.get(name)
    if alias is not None and alias.kind == "chat":
        return config.permitted_targets(alias)[0]
    raise EvalError(
        f"{flag}: {name!r} is neither a target nor a chat alias of the config; targets: "
        f"{', '.join(config.targets)}; chat aliases: {', '.join(_chat_aliases(config))}"
    )


def _chat_aliases(config: Config) -> list[str]:
    return [n for n, a in config.aliases.items() if a.kind == "chat" and not n.startswith(PIN_PREFIX)] or ["none"]


def pinned_config(config: Config, lineup: Lineup) -> Config:
    """The config the eval's gateway serves: an `eval:<target>` alias for each pinned target (one target, no
    continuation, no hedging), and no client authentication (the gateway is the eval's own, on loopback)."""
    aliases = dict(config.aliases)
    pinned = [c for c in (*lineup.candidates, lineup.baseline) if c is not None and c.alias.startswith(PIN_PREFIX)]
    for contender in pinned:
        aliases[contender.alias] = Alias(targets=[contender.targets[0]], max_continuations=0)
    return config.model_copy(update={"aliases": aliases, "auth": AuthSettings(enabled=False)})


# --- cost ----------------------------------------------------------------------------------------------


def completion_estimate(config: Config, body: dict[str, Any], targets: Sequence[str]) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    defaults = [getattr(config.targets[t], "default_max_tokens", None) for t in targets if t in config.targets]
    known = [d for d in defaults if isinstance(d, int)]
    return max(known) if known else DEFAULT_COMPLETION_ESTIMATE


def worst_case_usd(prices: PriceBook, config: Config, body: dict[str, Any], targets: Sequence[str]) -> float:
    """The most a request could cost on any of `targets`: its prompt's reservation bound and its whole
    completion allowance at the dearest target's price (protocol/usage.py, accounting/pricing.py)."""
    prompt = reservation_prompt_tokens(body)
    completion = completion_estimate(config, body, targets)
    return prices.worst_case(list(targets), prompt, completion) / 1e9


def request_body(item: Item, contender: Contender, *, stream: bool = False) -> dict[str, Any]:
    body = {k: v for k, v in item.request.items() if k not in ("model", "stream", "stream_options")}
    body["model"] = contender.alias
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body


def _judge_estimate_body(item: Item, config: Config, lineup: Lineup, judge: Contender) -> dict[str, Any]:
    """A stand-in judge request for the dry run: the answers are not known yet, so each is taken at its whole
    completion allowance (about four bytes a token)."""
    targets = [t for c in lineup.candidates for t in c.targets]
    filler = "x" * (4 * completion_estimate(config, item.request, targets))
    return judge_body(judge.alias, item.request, filler, filler, "baseline_first")


@dataclass(frozen=True, slots=True)
class Estimate:
    answers: int
    judgements: int
    cost_usd: float

    @property
    def requests(self) -> int:
        return self.answers + self.judgements


def estimate(
    config: Config,
    lineup: Lineup,
    items: Sequence[Item],
    done: set[tuple[str, ...]],
    unanswered: set[tuple[str, ...]] | frozenset[tuple[str, ...]] = frozenset(),
) -> Estimate:
    """What a run still has to send (requests already in the results file are not counted) and its worst
    case cost, as the cost cap would reserve it. `unanswered`: the answers the results file holds as failed —
    a pair with one of them is decided without the judge, so its judge calls are not counted either."""
    prices = PriceBook(config)
    answers = judgements = 0
    cost = 0.0
    for item in items:
        for role, contender in _live(lineup):
            if ("answer", item.id, role, contender.name) not in done:
                answers += 1
                cost += worst_case_usd(prices, config, request_body(item, contender), contender.targets)
        if lineup.judge is None:
            continue
        judge_cost = worst_case_usd(
            prices, config, _judge_estimate_body(item, config, lineup, lineup.judge), lineup.judge.targets
        )
        if lineup.baseline is not None and ("answer", item.id, "baseline", lineup.baseline.name) in unanswered:
            continue
        for candidate in lineup.candidates:
            if ("answer", item.id, "candidate", candidate.name) in unanswered:
                continue
            for order in ORDERS:
                key = _judge_key(item.id, candidate.name, lineup, order)
                if key not in done:
                    judgements += 1
                    cost += judge_cost
    return Estimate(answers, judgements, cost)


def _live(lineup: Lineup) -> list[tuple[str, Contender]]:
    live = [("baseline", lineup.baseline)] if lineup.baseline is not None else []
    return live + [("candidate", c) for c in lineup.candidates]


def _judge_key(item: str, candidate: str, lineup: Lineup, order: str) -> tuple[str, ...]:
    judge = lineup.judge.name if lineup.judge else ""
    return ("judge", item, candidate, lineup.baseline_name, order, judge, JUDGE_PROMPT_VERSION)


# --- the results file ------------------------------------------------------------------------------------


class ResultsFile:
    """results.jsonl: one finished request a line, appended as it finishes. Reopening it keeps every complete
    line (a run interrupted mid-line loses only that line, which is sent again)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[Record] = []
        self._keys: set[tuple[str, ...]] = set()
        if path.exists():
            self._read()
        self._keys = {r.key for r in self.records}

    def _read(self) -> None:
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        keep = len(raw)
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                data = orjson.loads(line)
                self.records.append(_record(data))
            except (orjson.JSONDecodeError, TypeError, KeyError) as exc:
                if number == len(lines):  # the last line, cut short by an interruption: dropped, sent again
                    keep = len(raw) - len(line)
                    break
                raise EvalError(f"{self.path}:{number}: not a result line ({exc}); use another --out") from exc
        if keep != len(raw):
            with self.path.open("r+b") as handle:
                handle.truncate(keep)

    @property
    def done(self) -> set[tuple[str, ...]]:
        return set(self._keys)

    @property
    def unanswered(self) -> set[tuple[str, ...]]:
        """The keys of answers recorded as failed (no answer to judge)."""
        return {
            r.key for r in self.records if isinstance(r, Answer) and (r.response is None or not has_answer(r.response))
        }

    @property
    def spent_usd(self) -> float:
        return sum(r.cost_usd for r in self.records)

    def append(self, record: Record) -> None:
        if record.key in self._keys:
            return
        self._keys.add(record.key)
        self.records.append(record)
        with self.path.open("ab") as handle:
            handle.write(orjson.dumps(_as_dict(record)) + b"\n")


def _as_dict(record: Record) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__dataclass_fields__}


def _record(data: Any) -> Record:
    if not isinstance(data, dict):
        raise TypeError("not an object")
    if data.get("kind") == "answer":
        return Answer(**{k: v for k, v in data.items() if k in Answer.__dataclass_fields__})
    if data.get("kind") == "judge":
        return Judgement(**{k: v for k, v in data.items() if k in Judgement.__dataclass_fields__})
    raise KeyError("kind")


# --- the run ---------------------------------------------------------------------------------------------


def run_eval(
    config: Config,
    plan: EvalPlan,
    items: list[Item],
    results: ResultsFile,
    *,
    watcher: Watcher | None = None,
) -> EvalRun:
    """Send what the results file does not hold yet through a gateway started for the eval; blocks until done
    or until the cost cap stops it."""
    lineup = resolve(config, plan)
    if lineup.baseline is None and not any(item.baseline for item in items):
        raise EvalError("--baseline captured: no item carries a captured baseline answer")
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    gate = CostGate(plan.max_cost, results.spent_usd)
    prices = PriceBook(config)
    served = pinned_config(config, lineup)
    before = len(results.records)
    timeout = config.server.request_timeout + CLIENT_GRACE
    with job_gateway(served, EvalError) as gw:
        caller = Caller(gw.base_url, served, prices, gate, plan.concurrency, timeout, results, watcher, plan.stream)
        asyncio.run(caller.answers(items, lineup))
        if lineup.judge is not None and not gate.stopped:
            asyncio.run(caller.judgements(items, lineup, lineup.judge))
    return collect(items, lineup, results, plan.max_cost, "cost_cap" if gate.stopped else None, started, before)


def collect(
    items: list[Item],
    lineup: Lineup,
    results: ResultsFile,
    max_cost: float | None,
    stopped: str | None = None,
    started_at: str = "",
    before: int | None = None,
) -> EvalRun:
    """The run as results.jsonl holds it (also what a report is rebuilt from without sending anything)."""
    ids = {item.id for item in items}
    names = {c.name for c in lineup.candidates} | {lineup.baseline_name}
    answers = [r for r in results.records if isinstance(r, Answer) and r.item in ids and r.name in names]
    judge = lineup.judge.name if lineup.judge else None
    judgements = [
        r
        for r in results.records
        if isinstance(r, Judgement)
        and r.item in ids
        and r.judge == judge
        and r.prompt_version == JUDGE_PROMPT_VERSION
        and r.baseline == lineup.baseline_name
    ]
    sent = len(results.records) - before if before is not None else 0
    return EvalRun(items, lineup, answers, judgements, results.spent_usd, max_cost, stopped, sent, started_at)


@dataclass
class Caller:
    """Sends an eval's (or an audit's) requests through the job's gateway and appends each record to the results."""

    base_url: str
    config: Config
    prices: PriceBook
    gate: CostGate
    concurrency: int
    timeout: float
    results: ResultsFile
    watcher: Watcher | None
    stream: bool = False

    async def answers(self, items: list[Item], lineup: Lineup) -> None:
        done = self.results.done
        jobs: list[tuple[float, Job]] = []
        for item in items:
            for role, contender in _live(lineup):
                if ("answer", item.id, role, contender.name) in done:
                    continue
                body = request_body(item, contender, stream=self.stream)
                cost = worst_case_usd(self.prices, self.config, body, contender.targets)
                jobs.append((cost, _answer_job(self, item, role, contender, body)))
        await self.run("answers", jobs)

    async def judgements(self, items: list[Item], lineup: Lineup, judge: Contender) -> None:
        done = self.results.done
        by_key = {(a.item, a.name): a for a in self.results.records if isinstance(a, Answer)}
        jobs: list[tuple[float, Job]] = []
        for item in items:
            baseline = _baseline_response(item, lineup, by_key)
            if baseline is None or not has_answer(baseline):
                continue  # nothing to compare with: decided without the judge
            for candidate in lineup.candidates:
                answer = by_key.get((item.id, candidate.name))
                if answer is None or answer.response is None or not has_answer(answer.response):
                    continue
                for order in ORDERS:
                    if _judge_key(item.id, candidate.name, lineup, order) in done:
                        continue
                    body = judge_body(
                        judge.alias, item.request, render_answer(baseline), render_answer(answer.response), order
                    )
                    cost = worst_case_usd(self.prices, self.config, body, judge.targets)
                    record = Judgement(item.id, candidate.name, lineup.baseline_name, order, judge.name,
                                       JUDGE_PROMPT_VERSION)  # fmt: skip
                    jobs.append((cost, judge_job(self, record, body)))
        await self.run("judge", jobs)

    async def run(self, phase: str, jobs: list[tuple[float, Job]]) -> None:
        """Send `jobs` through the gateway (lifeline.jobs.run_jobs), each record appended to the results."""
        await run_jobs(self.base_url, phase, jobs, self.concurrency, self.timeout, self.gate, self._finished,
                       self.watcher)  # fmt: skip

    def _finished(self, record: Record) -> None:
        self.results.append(record)


def _baseline_response(item: Item, lineup: Lineup, by_key: dict[tuple[str, str], Answer]) -> dict[str, Any] | None:
    if lineup.baseline is None:
        return item.baseline.response if item.baseline is not None else None
    answer = by_key.get((item.id, lineup.baseline.name))
    return answer.response if answer is not None else None


def _answer_job(caller: Caller, item: Item, role: str, contender: Contender, body: dict[str, Any]) -> Job:
    async def job(client: httpx.AsyncClient) -> Record:
        answer = Answer(item=item.id, role=role, name=contender.name, at=now_iso())
        reply = await post_chat(client, body, caller.timeout)
        answer.status, answer.target, answer.latency_ms = reply.status, reply.target, reply.latency_ms
        answer.ttft_ms = reply.ttft_ms
        answer.response, answer.error = reply.response, reply.error
        if reply.response is not None:
            usage, _ = reply_usage(body, reply.response.get("usage"), reply.response)
            answer.prompt_tokens = int_or_none(usage.get("prompt_tokens"))
            answer.completion_tokens = int_or_none(usage.get("completion_tokens"))
            cost = caller.prices.cost(reply.target, answer.prompt_tokens or 0, answer.completion_tokens or 0)
            answer.cost_usd = cost / 1e9
        return answer

    return job


def judge_job(
    caller: Caller, record: Judgement, body: dict[str, Any], parse: Callable[[str], str] = parse_verdict
) -> Job:
    """One judge call: `record` filled with the judge's text, its verdict as `parse` reads it (the eval's
    pairwise verdict by default; the audit passes its classifier's) and its cost."""

    async def job(client: httpx.AsyncClient) -> Record:
        record.at = now_iso()
        reply = await post_chat(client, body, caller.timeout)
        record.target, record.latency_ms, record.error = reply.target, reply.latency_ms, reply.error
        if reply.response is not None:
            record.text = content(reply.response)
            record.verdict = parse(record.text)
            usage, _ = reply_usage(body, reply.response.get("usage"), reply.response)
            tokens = (int_or_none(usage.get("prompt_tokens")) or 0, int_or_none(usage.get("completion_tokens")) or 0)
            record.cost_usd = caller.prices.cost(reply.target, *tokens) / 1e9
        return record

    return job
