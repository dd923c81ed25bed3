"""The router: an alias's ordered targets, tried one attempt at a time under the failover policy.

`Router.complete` returns a whole answer; `Router.open_stream` returns a stream once a target has produced
its first content — until then a failure moves on to the next target invisibly. Each attempt is recorded
(target, outcome, status, latency) and every failed one is reported to the circuits.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from lifeline.accounting.pricing import PriceBook
from lifeline.config.schema import Alias, Config, TracingSettings
from lifeline.errors import (
    AllTargetsBusy,
    AllTargetsFailed,
    DeadlineExceeded,
    Failover,
    GatewayError,
    InvalidRequest,
    LifelineError,
    ModelNotFound,
    UpstreamError,
)
from lifeline.providers.base import ChatCall, Chunk, Completion, EmbeddingCall, EmbeddingProvider, Provider
from lifeline.providers.http import MAX_RETRY_AFTER
from lifeline.routing.capabilities import abilities, needs_of, why_not
from lifeline.routing.health import Health, State
from lifeline.routing.policy import Step, decide, order_targets
from lifeline.tracing import Tracing

log = logging.getLogger("lifeline.router")

T = TypeVar("T")
Call = ChatCall | EmbeddingCall

# Outcomes that mean "busy, come back later" rather than "broken".
_BUSY = frozenset({"rate_limited", "overloaded", "pool_full"})


@dataclass(slots=True)
class Attempt:
    target: str
    outcome: str  # "ok", an UpstreamError outcome, or "skipped: <why>"
    status: int | None = None
    latency: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "outcome": self.outcome,
            "status": self.status,
            "latency": round(self.latency, 4),
        }


@dataclass(slots=True)
class Routed(Generic[T]):
    target: str
    model: str
    result: T
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def tries(self) -> int:
        return _tries(self.attempts)


@dataclass(slots=True)
class OpenStream:
    """A stream that has produced its first content: `head` is what was read so far, `rest` the remainder."""

    head: list[Chunk]
    rest: AsyncIterator[Chunk]


class Router:
    def __init__(
        self,
        config: Config,
        providers: dict[str, Provider],
        health: Health,
        rng: random.Random | None = None,
        tracing: Tracing | None = None,
        prices: PriceBook | None = None,
    ) -> None:
        self.config = config
        self.tracing = tracing or Tracing(TracingSettings())
        self.providers = providers
        self.health = health
        self.rng = rng or random.Random()
        # Resolved once: which targets each alias's constraints allow, what each target can do, its price.
        self.permitted: dict[str, list[str]] = {}
        for name, alias in config.aliases.items():
            allowed, excluded = config.permitted_targets(alias)
            self.permitted[name] = allowed
            for target, reason in excluded.items():
                log.info("alias %s: target %s excluded by constraints (%s)", name, target, reason)
        self.abilities = {
            name: abilities(t.kind, t.capabilities, providers[name].context_window if name in providers else None)
            for name, t in config.targets.items()
        }
        self.prices = prices or PriceBook(config)

    def alias(self, name: str, kind: str | None = None) -> Alias:
        """The alias a client named; with `kind`, it must be of that kind (chat or embeddings)."""
        alias = self.config.aliases.get(name)
        if alias is None:
            raise ModelNotFound(
                f"The model '{name}' does not exist. Known models: {', '.join(sorted(self.config.aliases))}."
            )
        if kind is not None and alias.kind != kind:
            endpoint = "/v1/embeddings" if alias.kind == "embeddings" else "/v1/chat/completions"
            raise InvalidRequest(
                f"The model '{name}' is {'an' if alias.kind == 'embeddings' else 'a'} {alias.kind} model; "
                f"use it with {endpoint}.",
                param="model",
                code="wrong_model_kind",
            )
        return alias

    async def complete(self, alias_name: str, call: ChatCall) -> Routed[Completion]:
        return await self._route(alias_name, call, lambda p: p.complete(call), settle_on_return=True)

    async def open_stream(self, alias_name: str, call: ChatCall) -> Routed[OpenStream]:
        alias = self.alias(alias_name)

        async def first_content(provider: Provider) -> OpenStream:
            return await _read_head(provider.stream(call), alias.hold_back_tokens, alias.hold_back_ms / 1000)

        # A stream's verdict on its target comes when it ends (see routing/streaming.py), not when it opens.
        return await self._route(alias_name, call, first_content, settle_on_return=False)

    async def continue_stream(
        self, alias_name: str, call: ChatCall, prefill: str, tried: set[str]
    ) -> Routed[OpenStream] | None:
        """After a stream broke mid-answer: the same answer continued from `prefill` on another target that
        accepts an assistant prefix, or None when none can. Every error of a candidate — a 400 refusing the
        prefix included — only moves on to the next: the client must see the original failure, not that."""
        alias = self.alias(alias_name)
        continuation = ChatCall(
            body=call.body, request=call.request, request_id=call.request_id, deadline=call.deadline, prefill=prefill
        )
        needs = needs_of(call.request, call.body)
        attempts: list[Attempt] = []
        for name in order_targets(alias, self.permitted[alias_name], self.health, self.prices, self.rng):
            ability = self.abilities[name]
            if name in tried or not ability.prefill or why_not(needs, ability) is not None:
                continue
            if call.deadline.expired:
                break
            if not self.health.acquire(name):
                attempts.append(Attempt(name, f"skipped: {self._why_unavailable(name)}"))
                continue
            tried.add(name)
            provider = self.providers[name]
            started = time.monotonic()
            try:
                with self.tracing.attempt(name, self.config.targets[name].kind, provider.model) as span:
                    try:
                        opened = await _read_head(provider.stream(continuation), 0, 0.0)
                    except UpstreamError as err:
                        self.tracing.attempt_outcome(span, err.outcome, err.upstream_status)
                        raise
                    self.tracing.attempt_outcome(span, "continued", 200)
            except UpstreamError as err:
                self.health.record_failure(name, err)
                attempts.append(Attempt(name, err.outcome, err.upstream_status, time.monotonic() - started))
                continue
            except BaseException:
                self.health.release(name)
                raise
            attempts.append(Attempt(name, "continued", 200, time.monotonic() - started))
            return Routed(name, provider.model, opened, attempts)
        if attempts:
            log.warning("no target could continue the stream", extra={"request_id": call.request_id})
        return None

    async def embed(self, alias_name: str, call: EmbeddingCall) -> Routed[Completion]:
        # The config allows only embedding-capable kinds in an embeddings alias (checked at load).
        return await self._route(
            alias_name, call, lambda p: cast(EmbeddingProvider, p).embed(call), settle_on_return=True
        )

    # --- the attempt loop --------------------------------------------------------------------------

    def _candidates(self, alias_name: str, alias: Alias, call: Call, attempts: list[Attempt]) -> list[str]:
        """The alias's targets in the order its policy gives for this request, without those that cannot
        serve it (each skip is recorded in `attempts` with its reason)."""
        names = order_targets(alias, self.permitted[alias_name], self.health, self.prices, self.rng)
        if not isinstance(call, ChatCall):
            return names
        needs = needs_of(call.request, call.body)
        wants_choices = call.request.n is not None and call.request.n > 1
        usable: list[str] = []
        reasons: dict[str, str] = {}
        for name in names:
            reason = why_not(needs, self.abilities[name])
            if reason is None and wants_choices and not self.providers[name].supports_n:
                reason = "one choice only (n=1)"
            if reason is None:
                usable.append(name)
            else:
                reasons[name] = reason
                attempts.append(Attempt(name, f"skipped: {reason}"))
        if usable:
            return usable
        summary = "; ".join(f"{t}: {r}" for t, r in reasons.items())
        if wants_choices and all(r.startswith("one choice") for r in reasons.values()):
            raise InvalidRequest(
                f"No target of '{alias_name}' can return more than one choice; send n=1.",
                param="n",
                code="unsupported_parameter",
            )
        if all(r.startswith("context window") for r in reasons.values()):
            raise InvalidRequest(
                f"The request does not fit the context window of any target of '{alias_name}' ({summary}).",
                param="messages",
                code="context_length_exceeded",
            )
        raise InvalidRequest(
            f"No target of '{alias_name}' can serve this request ({summary}).", code="unsupported_capability"
        )

    async def _route(
        self,
        alias_name: str,
        call: Call,
        attempt: Callable[[Provider], Awaitable[T]],
        *,
        settle_on_return: bool,
    ) -> Routed[T]:
        attempts: list[Attempt] = []
        try:
            return await self._attempts(alias_name, call, attempt, attempts, settle_on_return=settle_on_return)
        except LifelineError as err:
            err.attempts = [a.as_dict() for a in attempts]
            raise

    async def _attempts(
        self,
        alias_name: str,
        call: Call,
        attempt: Callable[[Provider], Awaitable[T]],
        attempts: list[Attempt],
        *,
        settle_on_return: bool,
    ) -> Routed[T]:
        alias = self.alias(alias_name)
        candidates = self._candidates(alias_name, alias, call, attempts)
        health = self.health
        forced = self._forced_probe(candidates)
        min_context: int | None = None
        last_error: UpstreamError | None = None
        index, retries = 0, 0
        retrying = False  # a retry of the same target was decided already: no new admission check
        hedge = alias.hedge_after_ms / 1000 if alias.hedge_after_ms is not None else None
        raced: set[str] = set()  # targets already tried as a hedge partner

        while index < len(candidates):
            name = candidates[index]
            provider = self.providers[name]
            if name in raced:
                index += 1
                continue
            if min_context is not None and (provider.context_window or 0) <= min_context:
                attempts.append(Attempt(name, "skipped: context window too small"))
                index += 1
                continue
            if name == forced:
                health.force_probe(name)
            elif not retrying and not health.acquire(name):
                attempts.append(Attempt(name, f"skipped: {self._why_unavailable(name)}"))
                index += 1
                continue
            if call.deadline.expired:
                health.release(name)
                raise self._deadline_error(call, attempts)

            started = time.monotonic()
            span_scope = self.tracing.attempt(name, self.config.targets[name].kind, provider.model, _operation(call))
            span = span_scope.__enter__()
            try:
                if hedge is not None and not retrying and name != forced:
                    partner = next((t for t in candidates[index + 1 :] if t not in raced), None)
                    result, winner = await self._race(name, partner, attempt, hedge, attempts, raced)
                    if winner != name:
                        name, provider = winner, self.providers[winner]
                else:
                    result = await attempt(provider)
            except UpstreamError as err:
                self.tracing.attempt_outcome(span, err.outcome, err.upstream_status)
                span_scope.__exit__(None, None, None)
                record = Attempt(name, err.outcome, err.upstream_status, time.monotonic() - started)
                attempts.append(record)
                health.record_failure(name, err)
                last_error = err
                log.warning(
                    "attempt failed",
                    extra={
                        "request_id": call.request_id,
                        "target": name,
                        "outcome": err.outcome,
                        "status": err.upstream_status,
                        "latency": round(record.latency, 4),
                    },
                )
                if call.deadline.expired:
                    raise self._deadline_error(call, attempts) from None
                decision = decide(err, retries, self.config.retry_for(name), alias, call.deadline)
                # A retry goes ahead unless this was a probe or the failure just opened the circuit.
                if decision.step is Step.RETRY and name != forced and health.circuit(name).state is State.CLOSED:
                    retries += 1
                    retrying = True
                    await asyncio.sleep(decision.delay)
                    continue
                if decision.step is Step.RETURN:
                    err.headers.setdefault("x-lifeline-attempts", str(_tries(attempts)))
                    raise
                if err.failover is Failover.CONTEXT:
                    min_context = provider.context_window or 0
                    if not any((self.providers[t].context_window or 0) > min_context for t in candidates[index + 1 :]):
                        err.headers.setdefault("x-lifeline-attempts", str(_tries(attempts)))
                        raise
                self._note_failover(call, alias_name, record, candidates[index + 1 :])
                index, retries, retrying = index + 1, 0, False
                continue
            except BaseException:
                # Cancelled (client gone) or a bug: no verdict on the target, but free its probe slot.
                self.tracing.attempt_outcome(span, "cancelled")
                span_scope.__exit__(None, None, None)
                health.release(name)
                raise
            self.tracing.attempt_outcome(span, "ok", 200)
            span_scope.__exit__(None, None, None)
            latency = time.monotonic() - started
            attempts.append(Attempt(name, "ok", 200, latency))
            health.observe_latency(name, latency)
            if settle_on_return:
                health.record_success(name)
            return Routed(name, provider.model, result, attempts)

        raise self._exhausted(alias_name, attempts, last_error)

    async def _race(
        self,
        name: str,
        partner: str | None,
        attempt: Callable[[Provider], Awaitable[T]],
        hedge: float,
        attempts: list[Attempt],
        raced: set[str],
    ) -> tuple[T, str]:
        """A hedged attempt: if `name` has not answered (first content, for a stream) within `hedge`
        seconds, start `partner` too, keep whichever answers first and cancel the other. The loser is
        recorded as "hedge_lost" and gets no verdict. If both fail, `name`'s error is raised (the partner's
        failure is recorded here, and the partner is not tried again)."""
        first = asyncio.ensure_future(attempt(self.providers[name]))
        done, _ = await asyncio.wait({first}, timeout=hedge)
        if done or partner is None or not self.health.acquire(partner):
            return await first, name
        raced.add(partner)
        started = time.monotonic()
        racing = {first: name, asyncio.ensure_future(attempt(self.providers[partner])): partner}
        first_error: BaseException | None = None
        try:
            while racing:
                finished, _ = await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    who = racing.pop(task)
                    error = task.exception()
                    if error is None:
                        if first_error is not None and isinstance(first_error, UpstreamError):
                            # `name` failed before the partner won: that failure counts (and frees a probe)
                            self.health.record_failure(name, first_error)
                            attempts.append(
                                Attempt(
                                    name, first_error.outcome, first_error.upstream_status, time.monotonic() - started
                                )
                            )
                        for loser, loser_name in list(racing.items()):
                            await _cancel(loser)
                            self.health.release(loser_name)
                            attempts.append(Attempt(loser_name, "hedge_lost"))
                        racing.clear()
                        return task.result(), who
                    if who == name:
                        first_error = error  # wait for the partner; raised if it fails too
                    elif isinstance(error, UpstreamError):
                        self.health.record_failure(partner, error)
                        attempts.append(
                            Attempt(partner, error.outcome, error.upstream_status, time.monotonic() - started)
                        )
                    else:
                        self.health.release(partner)
                        raise error
            assert first_error is not None
            raise first_error
        finally:
            for task in racing:
                await _cancel(task)

    def _forced_probe(self, candidates: list[str]) -> str | None:
        """When no target is available, the least recently failed open one is probed rather than failing
        the request outright. When every target is merely rate-limited, the client is told to come back."""
        now = time.monotonic()
        if any(self.health.available(t, now) for t in candidates):
            return None
        live = [t for t in candidates if t not in self.health.drained]
        if not live:
            raise GatewayError(
                "Every target of this model is drained by an operator.", status=503, code="all_targets_drained"
            )
        tripped = [t for t in live if self.health.circuit(t).state is not State.CLOSED]
        if not tripped:
            wait = min(self.health.circuit(t).rate_limited_until for t in candidates) - now
            raise AllTargetsBusy(
                "Every target of this model is rate-limited; retry later.",
                headers={"retry-after": retry_after_header(wait)},
            )
        return self.health.least_recently_failed(tripped)

    def _why_unavailable(self, name: str) -> str:
        return self.health.why_unavailable(name)

    def _note_failover(self, call: Call, alias: str, failed: Attempt, remaining: list[str]) -> None:
        self.health.note_failover(
            {
                "at": time.time(),
                "request_id": call.request_id,
                "alias": alias,
                "from": failed.target,
                "outcome": failed.outcome,
                "status": failed.status,
                "remaining": remaining,
            }
        )

    def _deadline_error(self, call: Call, attempts: list[Attempt]) -> LifelineError:
        return DeadlineExceeded(
            f"The request's deadline passed after {_tries(attempts)} attempt(s): {_summary(attempts)}.",
            headers={"x-lifeline-attempts": str(_tries(attempts))},
        )

    def _exhausted(self, alias: str, attempts: list[Attempt], last: UpstreamError | None) -> LifelineError:
        headers = {"x-lifeline-attempts": str(_tries(attempts))}
        tried = [a for a in attempts if not a.outcome.startswith("skipped")]
        if tried and all(a.outcome in _BUSY for a in tried):
            headers["retry-after"] = retry_after_header(last.retry_after if last and last.retry_after else 1.0)
            return AllTargetsBusy(f"Every target of '{alias}' is busy: {_summary(attempts)}.", headers=headers)
        return AllTargetsFailed(f"Every target of '{alias}' failed: {_summary(attempts)}.", headers=headers)


async def _cancel(task: asyncio.Future[Any]) -> None:
    """Cancel a hedged attempt; if it had already opened a stream, close that stream."""
    task.cancel()
    try:
        result = await task
    except BaseException:  # a cancelled or failed loser has nothing left to release
        return
    if isinstance(result, OpenStream):
        await result.rest.aclose()  # type: ignore[attr-defined]


async def _read_head(rest: AsyncIterator[Chunk], hold_tokens: int, hold_seconds: float) -> OpenStream:
    """Read a stream up to its first content — or, with a hold-back window, until `hold_tokens` content
    events and `hold_seconds` since the first have passed (or it finished) — so that a failure until then
    can still move to another target unseen."""
    head: list[Chunk] = []
    seen = 0
    first_at: float | None = None
    try:
        async for chunk in rest:
            head.append(chunk)
            if chunk.finish:
                break
            if chunk.content:
                seen += 1
                first_at = first_at or time.monotonic()
                if seen >= max(1, hold_tokens) and time.monotonic() - first_at >= hold_seconds:
                    break
    except BaseException:
        await rest.aclose()  # type: ignore[attr-defined]
        raise
    return OpenStream(head, rest)


def _operation(call: Call) -> str:
    return "chat" if isinstance(call, ChatCall) else "embeddings"


def retry_after_header(seconds: float) -> str:
    """Whole seconds, at least 1, and finite whatever an upstream claimed."""
    if not math.isfinite(seconds):
        seconds = MAX_RETRY_AFTER
    return str(max(1, math.ceil(min(seconds, MAX_RETRY_AFTER))))


def _tries(attempts: list[Attempt]) -> int:
    return sum(1 for a in attempts if not a.outcome.startswith("skipped"))


def _summary(attempts: list[Attempt]) -> str:
    return "; ".join(f"{a.target}: {a.outcome}" + (f" ({a.status})" if a.status else "") for a in attempts) or "none"
