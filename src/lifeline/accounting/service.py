"""The accounting service: what the request path asks of keys, limits, budgets, prices and the ledger.

Per request, in order: `authenticate` (a virtual key, when auth is on), `admit` (the key may use the alias;
RPM/TPM; a budget reservation sized for the worst case — the prompt's tokens bounded from above, the whole
`max_tokens`; a request the budget refuses is taken back out of the rate windows), then — exactly once,
whatever happened — `finish` (settle the reservation and the token count to the actual usage, write one
ledger record, update the metrics; a request chosen for capture at admission queues its capture). Nothing
here blocks the event loop on a database: keys are served from
memory and refreshed in the background, ledger writes go through a queue to a writer thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from lifeline.accounting.cache import ResponseCache
from lifeline.accounting.captures import CaptureStore, Plan
from lifeline.accounting.db import Database
from lifeline.accounting.keys import KeyCache, KeyStore, VirtualKey
from lifeline.accounting.ledger import Ledger, spent_since
from lifeline.accounting.limits import LimitStore, RateEntry, Reservation, make_limits
from lifeline.accounting.migrations import migrate
from lifeline.accounting.pricing import PriceBook
from lifeline.accounting.records import LedgerRecord, nusd, usd
from lifeline.accounting.responses import ResponseStore, StoredResponses
from lifeline.attempts import AttemptLog, CacheUse
from lifeline.config.schema import Config
from lifeline.errors import AccountingUnavailable, DatabaseUnavailable, LifelineError, PermissionDenied
from lifeline.metrics import CounterSeries, HistogramSeries, Metrics
from lifeline.protocol.usage import reservation_prompt_tokens
from lifeline.tracing import Tracing

log = logging.getLogger("lifeline.accounting")

#: what a budget reserves for the answer when the client sets no max_tokens
DEFAULT_COMPLETION_RESERVE = 4096

LEDGER_REJECTED = "lifeline_ledger_rejected_total"
LEDGER_REJECTED_HELP = "Ledger records the database refused, kept in the table ledger_rejected."
CAPTURES = "lifeline_captures_total"
CAPTURES_HELP = "Requests captured (queued for the capture store), by alias."
CAPTURES_SKIPPED = "lifeline_captures_skipped_total"
CAPTURES_SKIPPED_HELP = "Requests sampled for capture but not captured, by alias and reason."
REQUESTS = "lifeline_requests_total"
REQUESTS_HELP = "Client requests by alias, outcome and status."
ATTEMPTS = "lifeline_attempts_total"
ATTEMPTS_HELP = "Upstream attempts by target and outcome."
ATTEMPT_LATENCY = "lifeline_attempt_latency_seconds"
ATTEMPT_LATENCY_HELP = "Time of each attempt at a target, to its answer (to its first content for a stream)."
FAILOVERS = "lifeline_failovers_total"
FAILOVERS_HELP = "Requests answered after at least one failed attempt."
TOKENS = "lifeline_tokens_total"
TOKENS_HELP = "Tokens of answers."
COST = "lifeline_cost_usd_total"
COST_HELP = "Cost of answers in USD."
REQUEST_LATENCY = "lifeline_request_latency_seconds"
REQUEST_LATENCY_HELP = "Time from request to the end of the answer."
TTFT = "lifeline_ttft_seconds"
TTFT_HELP = "Time to the first content of a streamed answer."


def period_start(period: str, now: float | None = None) -> float:
    """The start (Unix time, UTC) of the budget period that contains `now`."""
    moment = dt.datetime.fromtimestamp(time.time() if now is None else now, dt.UTC)
    if period == "day":
        return moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    if period == "month":
        return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()
    return 0.0


@dataclass(slots=True)
class Admission:
    """One admitted request, carried from `admit` to `finish`."""

    request_id: str
    alias: str
    key: VirtualKey | None
    started: float  # time.monotonic()
    started_at: float  # time.time()
    #: what the TPM limit counted at admission: the prompt's upper bound plus the completion reserve
    tokens_estimate: int = 0
    #: the request's place in its key's rate windows (None when the key has no RPM or TPM limit)
    rate_entry: RateEntry | None = None
    reservation: Reservation | None = None
    finished: bool = False
    #: the request's tracing span (None when tracing is off)
    span: Any = None
    #: chosen for capture (and shadowing) at admission; None when not
    capture: Plan | None = None


@dataclass(slots=True)
class Finish:
    """How one admitted request ended, as `Accounting.finish` settles, records and counts it."""

    status: int
    #: "ok", "error", "client_closed", or how a stream ended ("broken")
    outcome: str
    streamed: bool
    #: the target that answered (None when none did)
    target: str | None = None
    model: str | None = None
    #: every attempt at a target (the ledger words them)
    attempts: AttemptLog = field(default_factory=AttemptLog)
    usage: dict[str, Any] | None = None
    usage_estimated: bool = False
    #: a streamed answer: the time to its first content
    ttft: float | None = None
    #: an answer several targets produced (a continued stream): each one's (target, prompt tokens,
    #: completion tokens), each share priced at its own target's price
    cost_parts: list[tuple[str, int, int]] | None = None
    #: the answer the client received as a `chat.completion` body (a stream's assembled), for capture
    answer: dict[str, Any] | None = None
    #: the alias that answered, when it was one of the request's fallbacks (the ledger records it)
    alias: str | None = None
    #: answered from the response cache (no target, no upstream cost): how
    cache: CacheUse | None = None


class Accounting:
    def __init__(self, config: Config, metrics: Metrics, tracing: Tracing | None = None) -> None:
        self.config = config
        self.tracing = tracing or Tracing(config.tracing)
        self.settings = config.accounting
        self.auth_enabled = config.auth.enabled
        self.metrics = metrics
        self._series = RequestMetrics(metrics)
        self.prices = PriceBook(config)
        self.keys = KeyCache()
        self.limits: LimitStore = make_limits(self.settings)
        self.ledger: Ledger | None = (
            Ledger(self.settings.ledger, self.open_db) if self.settings.ledger.enabled else None
        )
        self.captures = CaptureStore(config, self.open_db)
        #: the aliases' response caches (accounting/cache.py)
        self.cache = ResponseCache(config, metrics)
        self._db: Database | None = None
        self._responses: StoredResponses | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._pruner: asyncio.Task[None] | None = None
        if self.ledger is not None:
            metrics.inc(LEDGER_REJECTED, LEDGER_REJECTED_HELP, 0)  # shown from the start, at 0

    def open_db(self) -> Database:
        url = self.settings.database_url.get_secret_value() if self.settings.database_url else None
        return Database(url=url, data_dir=self.settings.data_dir)

    @property
    def db(self) -> Database:
        if self._db is None:
            raise RuntimeError("accounting used before start()")
        return self._db

    @property
    def store(self) -> KeyStore:
        return KeyStore(self.db)

    @property
    def responses(self) -> StoredResponses:
        """Stored Responses-API responses (accounting/responses.py)."""
        if self._responses is None:
            raise RuntimeError("accounting used before start()")
        return self._responses

    def carry_responses_from(self, old: Accounting) -> None:
        """After a reload (both started): the stored responses `old` has not written yet are read through
        here until they are."""
        if self._responses is not None and old._responses is not None:
            self._responses.carry_from(old._responses)

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self._db = await asyncio.to_thread(self.open_db)
        await asyncio.to_thread(migrate, self._db)
        await self.refresh_keys()
        settings = self.config.responses
        store = ResponseStore(self._db, settings.retention_days)
        self._responses = StoredResponses(store, settings.writes, self.open_db)
        self._responses.start()
        if self.ledger is not None:
            # The writer thread counts refused records; counters are updated on the event loop.
            loop = asyncio.get_running_loop()

            def count_rejected(n: int) -> None:
                loop.call_soon_threadsafe(self.metrics.inc, LEDGER_REJECTED, LEDGER_REJECTED_HELP, n)

            self.ledger.on_rejected = count_rejected
            self.ledger.start()
        if self.captures.active:
            self.captures.writer.start()
        self._refresher = asyncio.create_task(self._refresh_forever(), name="lifeline-key-refresh")
        self._pruner = asyncio.create_task(self._prune_responses_forever(), name="lifeline-responses-prune")

    async def close(self) -> None:
        for task in (self._refresher, self._pruner):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._responses is not None:
            await asyncio.to_thread(self._responses.close)
        if self.ledger is not None:
            await asyncio.to_thread(self.ledger.close)
        if self.captures.active:
            await asyncio.to_thread(self.captures.writer.close)
        await self.limits.close()
        await self.cache.close()
        if self._db is not None:
            self._db.close()

    async def refresh_keys(self) -> None:
        keys = await asyncio.to_thread(self.store.list)
        self.keys.replace_all(keys)

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.key_refresh_interval)
            try:
                await self.refresh_keys()
            except Exception as exc:  # a database blip must not stop the refresher
                log.warning("could not refresh keys: %s", type(exc).__name__)

    async def _prune_responses_forever(self, every: float = 3600.0) -> None:
        """Stored responses past retention, deleted once at start and then hourly (the ledger prunes alike)."""
        while True:
            try:
                await asyncio.to_thread(self.responses.prune)
            except Exception as exc:  # a database blip must not stop the pruning
                log.warning("could not prune stored responses: %s", type(exc).__name__)
            await asyncio.sleep(every)

    # --- the request path --------------------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> VirtualKey | None:
        if not self.auth_enabled:
            return None
        return self.keys.authenticate(authorization)

    def permit(self, key: VirtualKey | None, alias: str) -> None:
        """Refuse a key that may not use `alias` (403); with auth off, every key may."""
        if key is not None and not key.may_use(alias):
            raise PermissionDenied(f"This key may not use the model '{alias}'.", param="model")

    def allowed_aliases(self, key: VirtualKey | None) -> list[str]:
        return [a for a in self.config.aliases if key is None or key.may_use(a)]

    async def admit(
        self,
        key: VirtualKey | None,
        alias: str,
        body: dict[str, Any],
        max_tokens: int | None,
        request_id: str,
        operation: str = "chat",
        fallbacks: tuple[str, ...] = (),
    ) -> Admission:
        """`fallbacks`: further aliases the request named (a budget reserves for the dearest target of all)."""
        admission = Admission(request_id, alias, key, time.monotonic(), time.time())
        admission.span = self.tracing.start_request(operation, alias, request_id, body)
        try:
            try:
                if key is not None:  # no key (auth off): nothing to check or reserve
                    await self._admit(admission, key, alias, body, max_tokens, fallbacks)
            except DatabaseUnavailable as exc:  # a budget's spend is read from the ledger: not now
                log.warning("database unavailable while admitting a request: %s", exc)
                raise AccountingUnavailable() from exc
        except LifelineError as exc:
            self.tracing.end_request(
                admission.span, status=exc.status, outcome="refused", target=None, model=None, usage=None, attempts=0
            )
            raise
        if operation == "chat":
            admission.capture = self._plan_capture(key, alias, body)
        return admission

    def _plan_capture(self, key: VirtualKey | None, alias: str, body: dict[str, Any]) -> Plan | None:
        if not self.captures.active:
            return None
        too_large = self.captures.too_large.get(alias, 0)
        try:
            plan = self.captures.plan(alias, key, body)
        except Exception:  # a capture never fails a request
            log.exception("could not plan a capture")
            return None
        if self.captures.too_large.get(alias, 0) > too_large:
            self.metrics.inc(CAPTURES_SKIPPED, CAPTURES_SKIPPED_HELP, alias=alias, reason="too_large")
        return plan

    async def _admit(
        self,
        admission: Admission,
        key: VirtualKey | None,
        alias: str,
        body: dict[str, Any],
        max_tokens: int | None,
        fallbacks: tuple[str, ...] = (),
    ) -> None:
        if key is None:
            return
        self.permit(key, alias)
        # An upper bound, not a guess: concurrent requests each hold their worst case, so together they
        # cannot pass a budget or a TPM limit however their prompts tokenize.
        prompt_bound = reservation_prompt_tokens(body)
        completion_reserve = max_tokens or DEFAULT_COMPLETION_RESERVE
        admission.tokens_estimate = prompt_bound + completion_reserve
        if key.rpm is not None or key.tpm is not None:
            admission.rate_entry = await self.limits.admit(
                key.id, rpm=key.rpm, tpm=key.tpm, tokens_estimate=admission.tokens_estimate
            )
        if key.budget_usd is not None and key.budget_period is not None:
            targets = [t for name in (alias, *fallbacks) for t in self.config.aliases[name].targets]
            amount = self.prices.worst_case(targets, prompt_bound, completion_reserve)
            since = period_start(key.budget_period)
            key_id = key.id

            def seed() -> Awaitable[int]:
                return asyncio.to_thread(spent_since, self.db, key_id, since)

            try:
                admission.reservation = await self.limits.reserve(
                    key.id, limit_nusd=nusd(key.budget_usd), period=key.budget_period, amount_nusd=amount, seed=seed
                )
            except BaseException:
                # Refused (or the client left): the request counts against no rate limit.
                if admission.rate_entry is not None:
                    await self.limits.withdraw(admission.rate_entry)
                raise

    async def finish(self, admission: Admission, end: Finish) -> None:
        """Settle, record and count one request. Safe to call more than once: only the first counts."""
        if admission.finished:
            return
        admission.finished = True
        now = time.monotonic()
        prompt = int((end.usage or {}).get("prompt_tokens") or 0)
        completion = int((end.usage or {}).get("completion_tokens") or 0)
        cost = self.cost_of(end)
        try:
            if admission.reservation is not None:
                if cost or end.target:
                    await self.limits.settle(admission.reservation, cost)
                else:
                    await self.limits.release(admission.reservation)
            if admission.rate_entry is not None:
                await self.limits.settle_tokens(admission.rate_entry, prompt + completion)
        except Exception as exc:  # a limits backend failure must not lose the ledger record
            log.warning("could not settle a reservation: %s", type(exc).__name__)
        finally:
            self._record(admission, end, prompt, completion, cost, now)
            if admission.capture is not None:
                self._capture(admission, admission.capture, end, prompt, completion, cost, now)

    def cost_of(self, end: Finish) -> int:
        """What a request that ended as `end` costs, in nano-USD, as its ledger record says: each answering
        target's share at its price. Only an answer costs: failed attempts, and requests no target answered,
        cost nothing."""
        if end.cost_parts:
            return sum(self.prices.cost(t, p, c) for t, p, c in end.cost_parts)
        if not end.target:
            return 0
        prompt = int((end.usage or {}).get("prompt_tokens") or 0)
        completion = int((end.usage or {}).get("completion_tokens") or 0)
        return self.prices.cost(end.target, prompt, completion)

    def _capture(
        self, admission: Admission, plan: Plan, end: Finish, prompt: int, completion: int, cost: int, now: float
    ) -> None:
        """Queue the capture of an answered request (one that got no answer is not captured)."""
        if end.answer is None or end.target is None:
            return
        try:
            queued = self.captures.capture(
                plan,
                request_id=admission.request_id,
                key_id=admission.key.id if admission.key else None,
                captured_at=admission.started_at,
                response=end.answer,
                target=end.target,
                model=end.model,
                outcome=end.outcome,
                streamed=end.streamed,
                latency_ms=(now - admission.started) * 1000,
                ttft_ms=end.ttft * 1000 if end.ttft is not None else None,
                prompt_tokens=prompt,
                completion_tokens=completion,
                cost_nusd=cost,
            )
        except Exception:  # a capture never fails a request
            log.exception("could not queue a capture")
            return
        if queued:
            self.metrics.inc(CAPTURES, CAPTURES_HELP, alias=plan.alias)

    def _record(self, admission: Admission, end: Finish, prompt: int, completion: int, cost: int, now: float) -> None:
        status, outcome, target, model = end.status, end.outcome, end.target, end.model
        attempts, streamed, ttft = end.attempts, end.streamed, end.ttft
        alias = end.alias or admission.alias  # the fallback that answered, else the requested alias
        latency = now - admission.started
        tries = attempts.tries
        if admission.span is not None:
            self.tracing.end_request(
                admission.span,
                status=status,
                outcome=outcome,
                target=target,
                model=model,
                usage={"prompt_tokens": prompt, "completion_tokens": completion} if target else None,
                attempts=tries,
            )
        if self.ledger is not None:
            self.ledger.record(
                LedgerRecord(
                    request_id=admission.request_id,
                    key_id=admission.key.id if admission.key else None,
                    alias=alias,
                    target=target,
                    model=model,
                    outcome=outcome,
                    status=status,
                    attempts=attempts.as_ledger(),
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                    usage_estimated=end.usage_estimated,
                    cost_nusd=cost,
                    ttft_ms=ttft * 1000 if ttft is not None else None,
                    latency_ms=latency * 1000,
                    streamed=streamed,
                    started_at=admission.started_at,
                    finished_at=admission.started_at + latency,
                    cache=end.cache.value if end.cache is not None else None,
                )
            )
        if log.isEnabledFor(logging.INFO):  # the fields are gathered only for a line that is written
            log.info(
                "request finished",
                extra={
                    "request_id": admission.request_id,
                    "alias": alias,
                    "target": target,
                    "outcome": outcome,
                    "status": status,
                    "attempts": tries,
                    "stream": streamed,
                    "latency": round(latency, 4),
                },
            )
        series = self._series
        requested = series.request(alias, outcome, status)
        requested.count.inc()
        for attempt in attempts:
            if attempt.tried:
                tried = series.attempt(attempt.target, attempt.outcome.value)
                tried.count.inc()
                tried.latency.observe(round(attempt.latency, 4))
        if target:
            answered = series.answer(alias, target)
            if attempts.failed:
                answered.failovers.inc()
            answered.prompt_tokens.inc(prompt)
            answered.completion_tokens.inc(completion)
            answered.cost.inc(usd(cost))
        requested.latency.observe(latency)
        if ttft is not None:
            requested.ttft.observe(ttft)


@dataclass(slots=True)
class _RequestSeries:
    count: CounterSeries
    latency: HistogramSeries
    ttft: HistogramSeries


@dataclass(slots=True)
class _AttemptSeries:
    count: CounterSeries
    latency: HistogramSeries


@dataclass(slots=True)
class _AnswerSeries:
    failovers: CounterSeries
    prompt_tokens: CounterSeries
    completion_tokens: CounterSeries
    cost: CounterSeries


class RequestMetrics:
    """The metric series every finished request counts, each looked up once per label set (alias, outcome,
    status; target, attempt outcome; alias, target) rather than once per request. The label sets are as
    bounded as the metrics' own: aliases and targets come from the config."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._requests: dict[tuple[str, str, int], _RequestSeries] = {}
        self._attempts: dict[tuple[str, str], _AttemptSeries] = {}
        self._answers: dict[tuple[str, str], _AnswerSeries] = {}

    def request(self, alias: str, outcome: str, status: int) -> _RequestSeries:
        found = self._requests.get((alias, outcome, status))
        if found is None:
            m = self.metrics
            found = self._requests[(alias, outcome, status)] = _RequestSeries(
                m.counter_series(REQUESTS, REQUESTS_HELP, alias=alias, outcome=outcome, status=str(status)),
                m.histogram_series(REQUEST_LATENCY, REQUEST_LATENCY_HELP, alias=alias),
                m.histogram_series(TTFT, TTFT_HELP, alias=alias),
            )
        return found

    def attempt(self, target: str, outcome: str) -> _AttemptSeries:
        found = self._attempts.get((target, outcome))
        if found is None:
            m = self.metrics
            found = self._attempts[(target, outcome)] = _AttemptSeries(
                m.counter_series(ATTEMPTS, ATTEMPTS_HELP, target=target, outcome=outcome),
                m.histogram_series(ATTEMPT_LATENCY, ATTEMPT_LATENCY_HELP, target=target),
            )
        return found

    def answer(self, alias: str, target: str) -> _AnswerSeries:
        found = self._answers.get((alias, target))
        if found is None:
            m = self.metrics
            found = self._answers[(alias, target)] = _AnswerSeries(
                m.counter_series(FAILOVERS, FAILOVERS_HELP, alias=alias, target=target),
                m.counter_series(TOKENS, TOKENS_HELP, alias=alias, target=target, kind="prompt"),
                m.counter_series(TOKENS, TOKENS_HELP, alias=alias, target=target, kind="completion"),
                m.counter_series(COST, COST_HELP, alias=alias, target=target),
            )
        return found
