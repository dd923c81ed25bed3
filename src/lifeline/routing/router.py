"""The router: an alias's ordered targets, tried one attempt at a time under the failover policy.

`Router.complete` returns a whole answer; `Router.open_stream` returns a stream once a target has produced
its first content — until then a failure moves on to the next target invisibly. Every attempt, made by the
loop, a hedge or a continuation, goes through `_attempt_once`: its span, its time, the circuit's verdict and
its record in the request's AttemptLog (lifeline.attempts). Taking over a broken stream (`continue_stream`,
`replay_stream`) is in routing/continuation.py, which Router inherits; what routing hands back
(`Routed`, `OpenStream`) is in routing/routed.py.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar, cast

from lifeline.accounting.pricing import PriceBook
from lifeline.attempts import Attempt, AttemptLog, Outcome, SkipReason
from lifeline.config.schema import Alias, Config, OpenAITarget, Target, TracingSettings
from lifeline.errors import (
    AllTargetsBusy,
    AllTargetsFailed,
    ContextLengthExceeded,
    DeadlineExceeded,
    Failover,
    GatewayError,
    InvalidRequest,
    LifelineError,
    ModelNotFound,
    UpstreamError,
)
from lifeline.protocol.fallbacks import Fallbacks
from lifeline.providers.base import ChatCall, Completion, EmbeddingCall, EmbeddingProvider, Provider
from lifeline.providers.http import MAX_RETRY_AFTER
from lifeline.routing.capabilities import TargetAbilities, abilities, needs_of, why_not
from lifeline.routing.continuation import Continuation
from lifeline.routing.health import Health, State
from lifeline.routing.policy import Step, decide, order_targets
from lifeline.routing.routed import OpenStream as OpenStream  # routing's callers import it from here
from lifeline.routing.routed import Routed as Routed
from lifeline.routing.routed import read_head
from lifeline.tracing import Tracing

log = logging.getLogger("lifeline.router")

T = TypeVar("T")
Call = ChatCall | EmbeddingCall
#: one attempt's work at one provider, given the call as sent to that target
Work = Callable[[Provider, Call], Awaitable[T]]
#: what an alias's attempt at one target does (the alias gives e.g. a stream's hold-back window)
AliasWork = Callable[[Alias], Work[T]]

#: how an alias that could not answer ends, besides AllTargetsFailed and AllTargetsBusy: a request's next
#: fallback alias is tried after these (every target drained; none could serve this request)
_ALIAS_COULD_NOT = frozenset(
    {"all_targets_drained", "unsupported_capability", "unsupported_parameter", "context_length_exceeded"}
)


class Router(Continuation):
    def __init__(
        self,
        config: Config,
        providers: dict[str, Provider],
        health: Health,
        rng: random.Random | None = None,
        tracing: Tracing | None = None,
        prices: PriceBook | None = None,
        audits: Mapping[str, Mapping[str, float | None]] | None = None,
    ) -> None:
        """`audits`: each target's latest censorship gaps (target → language → gap), for aliases with
        max_censorship_gap (read from the accounting database by the gateway; None: not checked)."""
        self.config = config
        self.tracing = tracing or Tracing(TracingSettings())
        self.providers = providers
        self.health = health
        self.rng = rng or random.Random()
        # Resolved once: which targets each alias's constraints allow, what each target can do, its price.
        self.permitted: dict[str, list[str]] = {}
        for name, alias in config.aliases.items():
            allowed, excluded = config.permitted_targets(alias, audits)
            self.permitted[name] = allowed
            for target, reason in excluded.items():
                log.info("alias %s: target %s excluded by constraints (%s)", name, target, reason)
            if not allowed:
                log.warning("alias %s: its constraints exclude every target; its requests will fail", name)
        self.abilities = {
            name: abilities(
                t.kind,
                t.capabilities,
                providers[name].context_window if name in providers else None,
                _builtin_tools(t),
            )
            for name, t in config.targets.items()
        }
        #: each target's kind, for its attempts' spans
        self.kinds = {name: t.kind for name, t in config.targets.items()}
        self.prices = prices or PriceBook(config)
        for name, ability in self.abilities.items():
            health.prefill_declared[name] = ability.prefill
        #: the aliases with a target that passes /v1/responses through natively (whose answers are not cached)
        self.native_responses = frozenset(
            name
            for name, alias in config.aliases.items()
            if any(getattr(config.targets[t], "responses", None) == "native" for t in alias.targets)
        )

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

    def first_choice(self, alias_name: str, call: ChatCall) -> str | None:
        """The target a request to the alias would try first now (of those that can serve `call`), for what
        needs an answer from one target without routing: a token count."""
        needs = needs_of(call.request, call.body)
        names = order_targets(self.alias(alias_name), self.permitted[alias_name], self.health, self.prices, self.rng)
        return next((name for name in names if why_not(needs, self.abilities[name]) is None), None)

    def fallbacks(self, fallbacks: Fallbacks, kind: str) -> tuple[str, ...]:
        """The further aliases a request named (OpenRouter's `models`, LiteLLM's `fallbacks`), each a known alias
        of `kind`: else a 400 naming the field (an unknown requested model stays a 404)."""
        for name in fallbacks.names:
            alias = self.config.aliases.get(name)
            if alias is None:
                raise InvalidRequest(
                    f"The fallback model '{name}' in '{fallbacks.field}' does not exist. "
                    f"Known models: {', '.join(sorted(self.config.aliases))}.",
                    param=fallbacks.field,
                    code="model_not_found",
                )
            if alias.kind != kind:
                raise InvalidRequest(
                    f"The fallback model '{name}' in '{fallbacks.field}' is of kind {alias.kind}; this request "
                    f"needs a model of kind {kind}.",
                    param=fallbacks.field,
                    code="wrong_model_kind",
                )
        return fallbacks.names

    async def complete(self, alias_name: str, call: ChatCall, fallbacks: tuple[str, ...] = ()) -> Routed[Completion]:
        return await self._route(alias_name, call, lambda _: _complete, settle_on_return=True, fallbacks=fallbacks)

    async def complete_on(self, target: str, call: ChatCall) -> Routed[Completion]:
        """A whole answer from `target` alone: one attempt, no retry, no failover (a shadow call, so that what
        is recorded is that target's own answer). Its circuit is asked and told as for any attempt."""
        attempts = AttemptLog()
        why = why_not(needs_of(call.request, call.body), self.abilities[target])
        if why is not None:
            raise InvalidRequest(
                f"The target '{target}' cannot serve this request ({why[0].value}).", code="unsupported_capability"
            )
        if not self.health.acquire(target):
            why_unavailable = self.health.why_unavailable(target).value
            raise AllTargetsBusy(f"The target '{target}' is not available ({why_unavailable}).")
        try:
            result = await self._attempt_once(target, call, _complete, attempts, settle=True)
        except LifelineError as err:
            err.attempts = attempts
            raise
        return Routed(target, self.providers[target].model, result, attempts)

    async def open_stream(self, alias_name: str, call: ChatCall, fallbacks: tuple[str, ...] = ()) -> Routed[OpenStream]:
        def first_content(alias: Alias) -> Work[OpenStream]:
            async def read(provider: Provider, sent: Call) -> OpenStream:
                stream = provider.stream(cast(ChatCall, sent))
                return await read_head(stream, alias.hold_back_tokens, alias.hold_back_ms / 1000)

            return read

        # A stream's verdict on its target comes when it ends (see routing/streaming.py), not when it opens.
        return await self._route(alias_name, call, first_content, settle_on_return=False, fallbacks=fallbacks)

    async def embed(self, alias_name: str, call: EmbeddingCall, fallbacks: tuple[str, ...] = ()) -> Routed[Completion]:
        # The config allows only embedding-capable kinds in an embeddings alias (checked at load).
        return await self._route(alias_name, call, lambda _: _embed, settle_on_return=True, fallbacks=fallbacks)

    # --- the attempt loop --------------------------------------------------------------------------

    def _candidates(self, alias_name: str, alias: Alias, call: Call, attempts: AttemptLog) -> list[str]:
        """The alias's targets in the order its policy gives for this request, without those that cannot
        serve it (each skip is recorded in `attempts` with its reason)."""
        names = order_targets(alias, self.permitted[alias_name], self.health, self.prices, self.rng)
        if not isinstance(call, ChatCall):
            return names
        wants_choices = call.request.n is not None and call.request.n > 1
        if not wants_choices and call.responses is None and all(_serves_anything(self.abilities[n]) for n in names):
            return names  # no target of these can be unable to serve it: what it needs is not worked out
        needs = needs_of(call.request, call.body, call.responses)
        usable: list[str] = []
        skipped: list[Attempt] = []
        for name in names:
            why = why_not(needs, self.abilities[name])
            if why is None and wants_choices and not self.providers[name].supports_n:
                why = SkipReason.ONE_CHOICE, ""
            if why is None:
                usable.append(name)
            else:
                skipped.append(Attempt.skipped(name, *why))
                attempts.append(skipped[-1])
        if usable:
            return usable
        summary = "; ".join(f"{a.target}: {a.reason}" for a in skipped)
        if wants_choices and all(a.skip is SkipReason.ONE_CHOICE for a in skipped):
            raise InvalidRequest(
                f"No target of '{alias_name}' can return more than one choice; send n=1.",
                param="n",
                code="unsupported_parameter",
            )
        if all(a.skip is SkipReason.NO_BUILTIN_TOOLS for a in skipped):
            raise InvalidRequest(
                f"No target of '{alias_name}' runs the built-in tools this request offers ({summary}): they run "
                "only on targets that pass the Responses API through natively and list them (responses_tools).",
                param="tools",
                code="unsupported_tool",
            )
        if all(a.skip is SkipReason.CONTEXT_WINDOW for a in skipped):
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
        work: AliasWork[T],
        *,
        settle_on_return: bool,
        fallbacks: tuple[str, ...] = (),
    ) -> Routed[T]:
        """The attempt loop over `alias_name`, then over each of the request's own `fallbacks` in turn while the
        alias before could not answer (`_falls_back`). A target already tried is not tried again under a later
        alias; with fallbacks, each attempt records the alias it was made for."""
        attempts = AttemptLog()
        chain = (alias_name, *fallbacks)
        for position, name in enumerate(chain):
            start = len(attempts)
            try:
                routed = await self._attempts(
                    name,
                    call,
                    work(self.alias(name)),
                    attempts,
                    settle_on_return=settle_on_return,
                    exclude=attempts.tried_targets if position else None,
                )
            except LifelineError as err:
                if fallbacks:
                    attempts.for_alias(name, start)
                if position + 1 < len(chain) and _falls_back(err):
                    log.info(
                        "alias could not answer; trying the request's next fallback",
                        extra={"request_id": call.request_id, "alias": name, "fallback": chain[position + 1]},
                    )
                    continue
                if fallbacks and isinstance(err, AllTargetsFailed | AllTargetsBusy):
                    exhausted = _chain_exhausted(chain, attempts, err)
                    exhausted.attempts = attempts
                    raise exhausted from None
                err.attempts = attempts
                raise
            if fallbacks:
                attempts.for_alias(name, start)
            routed.alias = name
            return routed
        raise AssertionError("unreachable: the last alias of the chain returns or raises")

    async def _attempts(
        self,
        alias_name: str,
        call: Call,
        attempt: Work[T],
        attempts: AttemptLog,
        *,
        settle_on_return: bool,
        exclude: set[str] | None = None,
    ) -> Routed[T]:
        alias = self.alias(alias_name)
        candidates = self._candidates(alias_name, alias, call, attempts)
        if exclude:  # tried already under an alias before this one (a request's fallbacks)
            candidates = [name for name in candidates if name not in exclude]
            if not candidates:
                raise self._exhausted(alias_name, attempts, None)
        health = self.health
        forced = self._forced_probe(candidates)
        min_context: int | None = None
        last_error: UpstreamError | None = None
        index, retries = 0, 0
        retrying = False  # a retry of the same target was decided already: no new admission check
        hedge = alias.hedge_after_ms / 1000 if alias.hedge_after_ms is not None else None
        raced: set[str] = set()  # targets already tried as a hedge partner

        def call_for(who: str, later: list[str]) -> Call:
            # a streaming attempt's first-token limit depends on what is left after it
            if isinstance(call, ChatCall) and not settle_on_return:
                return with_ttft(call, self._first_token_limit(who, alias, later))
            return call

        while index < len(candidates):
            name = candidates[index]
            provider = self.providers[name]
            if name in raced:
                index += 1
                continue
            skip = self._admit(name, forced, retrying, min_context)
            if skip is not None:
                attempts.append(Attempt.skipped(name, skip))
                index += 1
                continue
            if call.deadline.expired:
                health.release(name)
                raise self._deadline_error(attempts)

            later = [t for t in candidates[index + 1 :] if t not in raced]
            try:
                if hedge is not None and not retrying and name != forced:
                    partner = next(iter(later), None)
                    result, name = await self._race(
                        name,
                        partner,
                        {name: call_for(name, later), **({partner: call_for(partner, later[1:])} if partner else {})},
                        attempt,
                        hedge,
                        attempts,
                        raced,
                        settle_on_return,
                    )
                else:
                    result = await self._attempt_once(
                        name, call_for(name, later), attempt, attempts, settle=settle_on_return
                    )
            except UpstreamError as err:
                last_error = err
                if call.deadline.expired:
                    raise self._deadline_error(attempts) from None
                decision = decide(err, retries, self.config.retry_for(name), alias, call.deadline)
                # A retry goes ahead unless this was a probe or the failure just opened the circuit.
                if decision.step is Step.RETRY and name != forced and health.circuit(name).state is State.CLOSED:
                    retries += 1
                    retrying = True
                    await asyncio.sleep(decision.delay)
                    continue
                if decision.step is Step.RETURN:
                    err.headers.setdefault("x-lifeline-attempts", str(attempts.tries))
                    raise
                if err.failover is Failover.CONTEXT:
                    min_context = provider.context_window or 0
                    if not any((self.providers[t].context_window or 0) > min_context for t in candidates[index + 1 :]):
                        err.headers.setdefault("x-lifeline-attempts", str(attempts.tries))
                        raise
                self._note_failover(call, alias_name, name, err, candidates[index + 1 :])
                index, retries, retrying = index + 1, 0, False
                continue
            return Routed(name, self.providers[name].model, result, attempts)

        raise self._exhausted(alias_name, attempts, last_error)

    def _admit(self, name: str, forced: str | None, retrying: bool, min_context: int | None) -> SkipReason | None:
        """None when `name` may be sent the next attempt (claiming its probe, if its circuit wants one);
        else why it is skipped. A retry of the same target was admitted already."""
        if min_context is not None and (self.providers[name].context_window or 0) <= min_context:
            return SkipReason.CONTEXT_TOO_SMALL
        if name == forced:
            self.health.force_probe(name)
        elif not retrying and not self.health.acquire(name):
            return self.health.why_unavailable(name)
        return None

    def _first_token_limit(self, name: str, alias: Alias, later: list[str]) -> float | None:
        """How long a streaming attempt at `name` may take to its first content: the target's own `ttft`
        when its config sets one (None); the alias's first-token failover while another of `later` is
        available; else the rest of the deadline (math.inf) — the last target is not cut short."""
        if self.config.targets[name].timeouts.ttft_set:
            return None
        limit = alias.first_token_failover_ms
        if limit is not None and any(self.health.available(t) for t in later if t != name):
            return limit / 1000
        return math.inf

    async def _attempt_once(
        self,
        name: str,
        call: Call,
        work: Work[T],
        attempts: AttemptLog,
        answered: Outcome = Outcome.OK,
        *,
        settle: bool = False,
        claim: Callable[[], Awaitable[None]] | None = None,
    ) -> T:
        """One attempt at one target, whoever makes it (the loop, a hedge, a continuation): its span, its
        time, the circuit's verdict and its record in `attempts` as `answered` (or as the failure).

        A failure is recorded, reported to the circuits and raised. A cancellation (the client left, a hedge
        lost) gives no verdict and no record, and frees the target's probe slot. With `settle`, an answer
        closes the circuit at once (a stream's verdict comes when it ends instead). `claim`, for a hedged
        attempt, is awaited before an answer is recorded: it cancels and records the rival first, so that
        the answering attempt is the last in the log."""
        provider = self.providers[name]
        started = time.monotonic()
        scope = self.tracing.attempt(name, self.kinds[name], provider.model, _operation(call))
        span = scope.__enter__()
        produced: list[T] = []  # the answer, once there: let go of if the attempt is cancelled after all
        try:
            produced.append(await work(provider, call))
            if claim is not None:
                await claim()
            self.tracing.attempt_outcome(span, answered, 200)
        except UpstreamError as err:
            latency = time.monotonic() - started
            self.tracing.attempt_outcome(span, err.outcome, err.upstream_status)
            attempts.append(Attempt(name, err.outcome, err.upstream_status, latency))
            self.health.record_failure(name, err)
            log.warning(
                "attempt failed",
                extra={
                    "request_id": call.request_id,
                    "target": name,
                    "outcome": err.outcome.value,
                    "status": err.upstream_status,
                    "latency": round(latency, 4),
                },
            )
            raise
        except BaseException:
            # Cancelled or a bug: no verdict on the target, but free its probe slot.
            self.tracing.attempt_outcome(span, Outcome.CANCELLED)
            self.health.release(name)
            for result in produced:
                await _close(result)
            raise
        finally:
            # The span ends without the exception: its outcome attribute says what happened.
            scope.__exit__(None, None, None)
        latency = time.monotonic() - started
        attempts.append(Attempt(name, answered, 200, latency))
        if answered is Outcome.OK:  # a continuation's time after a prefill says little of the target's pace
            self.health.observe_latency(name, latency)
        if settle:
            self.health.record_success(name)
        return produced[0]

    async def _race(
        self,
        name: str,
        partner: str | None,
        calls: dict[str, Call],
        work: Work[T],
        hedge: float,
        attempts: AttemptLog,
        raced: set[str],
        settle: bool,
    ) -> tuple[T, str]:
        """A hedged attempt: if `name` has not answered (first content, for a stream) within `hedge`
        seconds, start `partner` too, keep whichever answers first and cancel the other, which is recorded
        as hedge_lost with no verdict. A failure of either is recorded as it happens; if both fail, `name`'s
        error is raised (and the partner is not tried again)."""
        entrants: dict[str, asyncio.Future[T]] = {}

        def enter(who: str) -> asyncio.Future[T]:
            async def claim() -> None:
                for rival, task in list(entrants.items()):
                    if rival != who and not task.done():
                        await _cancel(task)
                        self.health.release(rival)  # already freed, unless it was cancelled before it started
                        attempts.append(Attempt(rival, Outcome.HEDGE_LOST))

            entrants[who] = asyncio.ensure_future(
                self._attempt_once(who, calls[who], work, attempts, settle=settle, claim=claim)
            )
            return entrants[who]

        first = enter(name)
        try:
            done, _ = await asyncio.wait({first}, timeout=hedge)
            if done or partner is None or not self.health.acquire(partner):
                return await first, name
            raced.add(partner)
            racing = {first: name, enter(partner): partner}
            first_error: BaseException | None = None
            while racing:
                finished, _ = await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    who = racing.pop(task)
                    if task.cancelled():
                        continue  # lost to the winner, which recorded it
                    error = task.exception()
                    if error is None:
                        return task.result(), who
                    if who == name:
                        first_error = error  # wait for the partner; raised if it fails too
                    elif not isinstance(error, UpstreamError):
                        raise error
            assert first_error is not None
            raise first_error
        finally:
            # The client left, or a bug: neither attempt may run on unwatched.
            for task in entrants.values():
                if not task.done():
                    await _cancel(task)

    def _forced_probe(self, candidates: list[str]) -> str | None:
        """When no target is available, the least recently failed open one is probed rather than failing
        the request outright. When every target is merely rate-limited, the client is told to come back."""
        now = time.monotonic()
        for t in candidates:
            if self.health.available(t, now):
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

    def _note_failover(self, call: Call, alias: str, target: str, err: UpstreamError, remaining: list[str]) -> None:
        self.health.note_failover(
            {
                "at": time.time(),
                "request_id": call.request_id,
                "alias": alias,
                "from": target,
                "outcome": err.outcome.value,
                "status": err.upstream_status,
                "remaining": remaining,
            }
        )

    def _deadline_error(self, attempts: AttemptLog) -> LifelineError:
        return DeadlineExceeded(
            f"The request's deadline passed after {attempts.tries} attempt(s): {attempts.summary}.",
            headers={"x-lifeline-attempts": str(attempts.tries)},
        )

    def _exhausted(self, alias: str, attempts: AttemptLog, last: UpstreamError | None) -> LifelineError:
        headers = {"x-lifeline-attempts": str(attempts.tries)}
        if attempts.all_busy:
            headers["retry-after"] = retry_after_header(last.retry_after if last and last.retry_after else 1.0)
            return AllTargetsBusy(f"Every target of '{alias}' is busy: {attempts.summary}.", headers=headers)
        return AllTargetsFailed(f"Every target of '{alias}' failed: {attempts.summary}.", headers=headers)


def _falls_back(err: LifelineError) -> bool:
    """Whether a request's next fallback alias is tried after its alias ended with `err`: when the alias could
    not answer — every target failed, busy or drained; none could serve this request (capabilities, context
    window, n); the last one refused the prompt for its length. Not for the client's own mistake, a content
    filter's refusal that the alias returns, nor a deadline that has passed."""
    if isinstance(err, AllTargetsFailed | AllTargetsBusy | ContextLengthExceeded):
        return True
    return not isinstance(err, UpstreamError) and err.code in _ALIAS_COULD_NOT


def _chain_exhausted(chain: tuple[str, ...], attempts: AttemptLog, err: LifelineError) -> LifelineError:
    """The error of a request whose alias and every fallback failed, naming them all."""
    names = ", ".join(f"'{name}'" for name in chain)
    if isinstance(err, AllTargetsBusy):
        return AllTargetsBusy(f"Every target of {names} is busy: {attempts.summary}.", headers=err.headers)
    return AllTargetsFailed(f"Every target of {names} failed: {attempts.summary}.", headers=err.headers)


async def _cancel(task: asyncio.Future[Any]) -> None:
    """Cancel a hedged attempt; if it had already opened a stream, close that stream."""
    task.cancel()
    try:
        result = await task
    except BaseException:  # a cancelled or failed loser has nothing left to release
        return
    await _close(result)


async def _close(result: object) -> None:
    """Let go of what an attempt produced and nobody will read: an opened stream is closed."""
    if isinstance(result, OpenStream):
        await result.rest.aclose()  # type: ignore[attr-defined]


def with_ttft(call: ChatCall, ttft: float | None) -> ChatCall:
    """`call` for one attempt with its first-token limit: a copy, as `dataclasses.replace` makes it (the
    request's own call keeps its limit), built directly at a fifth of replace's cost (one per streaming
    attempt). tests/routing/test_router.py checks that it copies every field."""
    return ChatCall(call.body, call.request, call.request_id, call.deadline, call.prefill, call.responses, ttft)


def _serves_anything(target: TargetAbilities) -> bool:
    """Whether `why_not` finds no reason to skip the target for any request that offers no built-in tool."""
    return target.tools and target.json_schema and target.vision and target.context_window is None


def _builtin_tools(target: Target) -> frozenset[str]:
    """The built-in Responses tools a target runs: those a native Responses target lists."""
    if isinstance(target, OpenAITarget) and target.responses == "native":
        return frozenset(target.responses_tools)
    return frozenset()


async def _complete(provider: Provider, call: Call) -> Completion:
    return await provider.complete(cast(ChatCall, call))


async def _embed(provider: Provider, call: Call) -> Completion:
    return await cast(EmbeddingProvider, provider).embed(cast(EmbeddingCall, call))


def _operation(call: Call) -> str:
    return "chat" if isinstance(call, ChatCall) else "embeddings"


def retry_after_header(seconds: float) -> str:
    """Whole seconds, at least 1, and finite whatever an upstream claimed."""
    if not math.isfinite(seconds):
        seconds = MAX_RETRY_AFTER
    return str(max(1, math.ceil(min(seconds, MAX_RETRY_AFTER))))
