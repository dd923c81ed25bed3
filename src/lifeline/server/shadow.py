"""Shadow traffic: a sampled request sent again, after its client's answer is complete, to an alias's
candidates — each target alone (no retry, no failover), or each candidate alias as it routes — with the
answers, latency, usage, cost and errors stored beside the incumbent's in the capture store.

The client never waits for a shadow call nor sees one: it starts from the exchange's after-response hook
(server/middleware.py), runs as a task of its own, and any failure ends there. Each alias has its own
concurrency limit (a call beyond it is dropped, counted) and a hard daily cap in USD: a call whose worst case
could pass it is not made (counted). Shadow calls are written to the ledger marked `shadow`, under no key,
so no virtual key's budget or rate limit sees them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lifeline.accounting.captures import Plan
from lifeline.accounting.ledger import spent_shadow_since
from lifeline.accounting.records import LedgerRecord, usd
from lifeline.accounting.service import DEFAULT_COMPLETION_RESERVE, Accounting, period_start
from lifeline.attempts import AttemptLog
from lifeline.config.schema import Config, ShadowSettings
from lifeline.errors import LifelineError
from lifeline.metrics import Metrics
from lifeline.protocol.parse import validate_chat_request
from lifeline.protocol.usage import reply_usage, reservation_prompt_tokens
from lifeline.providers.base import ChatCall, Completion, Deadline
from lifeline.routing.router import Routed, Router

log = logging.getLogger("lifeline.shadow")

CALLS = "lifeline_shadow_calls_total"
CALLS_HELP = "Shadow calls made, by alias, candidate and outcome (ok or error)."
DROPPED = "lifeline_shadow_dropped_total"
DROPPED_HELP = "Shadow calls not made, by alias and reason (concurrency: the limit was full; daily_cap)."
COST = "lifeline_shadow_cost_usd_total"
COST_HELP = "Cost of shadow calls in USD, by alias and candidate."


@dataclass(slots=True)
class _Day:
    """An alias's shadow spending on one UTC day: committed, and reserved by calls under way (nano-USD)."""

    start: float
    spent: int = 0
    reserved: int = 0


class Shadows:
    """The shadow calls of one gateway."""

    def __init__(self, config: Config, router: Router, accounting: Accounting, metrics: Metrics) -> None:
        self.config = config
        self.router = router
        self.accounting = accounting
        self.metrics = metrics
        self.running: dict[str, int] = {}
        self._days: dict[str, _Day] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        for name, alias in config.aliases.items():
            if alias.shadow is not None:
                for reason in ("concurrency", "daily_cap"):  # shown from the start, at 0
                    metrics.inc(DROPPED, DROPPED_HELP, 0, alias=name, reason=reason)

    def start(self, plan: Plan) -> None:
        """After the client's answer is complete: one task per candidate (or a drop, counted). Only a request
        whose capture was queued is shadowed (its answers are stored beside that capture)."""
        spec = self.config.aliases[plan.alias].shadow
        if self._closed or spec is None or not plan.shadow or not plan.recorded:
            return
        for candidate in spec.candidates:
            if self.running.get(plan.alias, 0) >= spec.max_concurrency:
                self.metrics.inc(DROPPED, DROPPED_HELP, alias=plan.alias, reason="concurrency")
                continue
            self.running[plan.alias] = self.running.get(plan.alias, 0) + 1
            task = asyncio.ensure_future(self._run(plan, spec, candidate))
            self._tasks.add(task)
            task.add_done_callback(self._done(plan.alias))

    def _done(self, alias: str) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            self.running[alias] -= 1

        return done

    async def close(self) -> None:
        """Cancel the shadow calls under way (a shadow answer is expendable) and wait for them to end."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    async def wait_idle(self) -> None:
        """Wait until no shadow call is running (tests, and a drain before shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # --- one call ----------------------------------------------------------------------------------

    async def _run(self, plan: Plan, spec: ShadowSettings, candidate: str) -> None:
        try:
            await self._call(plan, spec, candidate)
        except asyncio.CancelledError:
            raise
        except Exception:  # a shadow call never reaches a client: its failures end here
            log.exception("shadow call failed", extra={"alias": plan.alias, "target": candidate})

    async def _call(self, plan: Plan, spec: ShadowSettings, candidate: str) -> None:
        body = {k: v for k, v in plan.request.items() if k not in ("stream", "stream_options")}
        chat = validate_chat_request(body)
        targets = self.config.aliases[candidate].targets if candidate in self.config.aliases else [candidate]
        worst = self.accounting.prices.worst_case(
            list(targets), reservation_prompt_tokens(body), chat.token_limit or DEFAULT_COMPLETION_RESERVE
        )
        day = await self._day(plan.alias)
        if day.spent + day.reserved + worst > round(spec.max_usd_per_day * 1e9):
            self.metrics.inc(DROPPED, DROPPED_HELP, alias=plan.alias, reason="daily_cap")
            return
        day.reserved += worst
        cost = 0
        try:
            cost = await self._ask(plan, candidate, body, chat)
        finally:
            day.reserved -= worst
            day.spent += cost

    async def _day(self, alias: str) -> _Day:
        """This UTC day's spending of the alias, read from the ledger once a day (so a restart or another
        replica's spending counts)."""
        start = period_start("day")
        day = self._days.get(alias)
        if day is None or day.start != start:
            day = _Day(start)
            self._days[alias] = day
            try:
                day.spent = await asyncio.to_thread(spent_shadow_since, self.accounting.db, alias, start)
            except Exception as exc:  # the cap then counts from this replica's calls only
                log.warning("could not read today's shadow spending: %s", type(exc).__name__)
        return self._days[alias]

    async def _ask(self, plan: Plan, candidate: str, body: dict[str, Any], chat: Any) -> int:
        """Call the candidate, store its answer (or error) and its ledger record; return its cost."""
        request_id = f"shadow-{plan.id}-{candidate}"
        call = ChatCall(
            body=body, request=chat, request_id=request_id, deadline=Deadline.after(self.config.server.request_timeout)
        )
        started, started_at = time.monotonic(), time.time()
        done: Routed[Completion] | None = None
        error: dict[str, Any] | None = None
        status, attempts = 200, AttemptLog()
        try:
            if candidate in self.config.aliases:
                done = await self.router.complete(candidate, call)
            else:
                done = await self.router.complete_on(candidate, call)
            attempts = done.attempts
        except LifelineError as exc:
            status, attempts = exc.status, exc.attempts
            error = {"status": exc.status, "code": exc.code, "message": exc.message}
        latency = time.monotonic() - started
        prompt = completion = cost = 0
        estimated = False
        response: dict[str, Any] | None = None
        if done is not None:
            usage, estimated = reply_usage(body, done.result.usage, done.result.body)
            prompt = int(usage.get("prompt_tokens") or 0)
            completion = int(usage.get("completion_tokens") or 0)
            cost = self.accounting.prices.cost(done.target, prompt, completion)
            response = {**done.result.body, "usage": usage}
        self.accounting.captures.shadow_answer(
            plan,
            candidate=candidate,
            target=done.target if done else None,
            started_at=started_at,
            response=response,
            error=error,
            latency_ms=latency * 1000,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost_nusd=cost,
        )
        ledger = self.accounting.ledger
        if ledger is not None:
            ledger.record(
                LedgerRecord(
                    request_id=request_id,
                    key_id=None,  # billed to no virtual key
                    alias=plan.alias,
                    target=done.target if done else None,
                    model=done.result.model if done else None,
                    outcome="ok" if done else "error",
                    status=status,
                    attempts=attempts.as_ledger(),
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                    usage_estimated=estimated,
                    cost_nusd=cost,
                    ttft_ms=None,
                    latency_ms=latency * 1000,
                    streamed=False,
                    started_at=started_at,
                    finished_at=started_at + latency,
                    shadow=True,
                )
            )
        outcome = "ok" if done else "error"
        self.metrics.inc(CALLS, CALLS_HELP, alias=plan.alias, candidate=candidate, outcome=outcome)
        self.metrics.inc(COST, COST_HELP, usd(cost), alias=plan.alias, candidate=candidate)
        return cost
