"""Taking over a broken stream: after a stream broke mid-answer, the same answer continued from the text the
client already has on another target that accepts an assistant prefix (`continue_stream`), or — when none
can — restarted on the next target and held back until it has reproduced that text (`replay_stream`, with
the readers of routing/replay.py). Part of the Router, which inherits it: every attempt goes through the
Router's `_attempt_once` like any other, and its record lands in the request's AttemptLog.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, TypeVar, cast

from lifeline.accounting.pricing import PriceBook
from lifeline.attempts import Attempt, AttemptLog, Outcome
from lifeline.config.schema import Alias
from lifeline.errors import Failover, UpstreamError
from lifeline.providers.base import ChatCall, EmbeddingCall, Provider
from lifeline.routing.capabilities import TargetAbilities, needs_of, why_not
from lifeline.routing.health import Health
from lifeline.routing.policy import order_targets
from lifeline.routing.replay import read_continuation, read_replay
from lifeline.routing.routed import OpenStream, Routed, read_head

log = logging.getLogger("lifeline.router")

T = TypeVar("T")
Call = ChatCall | EmbeddingCall


class Continuation:
    """The Router's continuation and replay of a broken stream (routing/router.py inherits it)."""

    if TYPE_CHECKING:  # what it uses of the Router
        health: Health
        providers: dict[str, Provider]
        permitted: dict[str, list[str]]
        abilities: dict[str, TargetAbilities]
        prices: PriceBook
        rng: random.Random

        def alias(self, name: str, kind: str | None = None) -> Alias: ...

        def _first_token_limit(self, name: str, alias: Alias, later: list[str]) -> float | None: ...

        async def _attempt_once(
            self,
            name: str,
            call: Call,
            work: Callable[[Provider, Call], Awaitable[T]],
            attempts: AttemptLog,
            answered: Outcome = Outcome.OK,
            *,
            settle: bool = False,
            claim: Callable[[], Awaitable[None]] | None = None,
        ) -> T: ...

    async def continue_stream(
        self, alias_name: str, call: ChatCall, prefill: str, tried: set[str]
    ) -> tuple[Routed[OpenStream] | None, AttemptLog]:
        """After a stream broke mid-answer: the same answer continued from `prefill` on another target that
        accepts an assistant prefix — or whose support is unknown — or None when none can; with the attempts
        made either way. Every error of a candidate only moves on to the next: the client must see the
        original failure, not that. A target of unknown support that answers the prefix with a 400 has
        refused it: it is remembered as unable (here and, through the shared state, by other replicas) and
        stays free for a replay-verified restart. One that ignored the prefix and began the answer again is
        held to it as a replay (routing/replay.py) and remembered as unable too."""
        alias = self.alias(alias_name)
        attempts = AttemptLog()

        async def first_content(provider: Provider, sent: Call) -> OpenStream | None:
            stream = provider.stream(cast(ChatCall, sent))
            if self.health.prefill_support(provider.name) is not None:
                return await read_head(stream, 0, 0.0)
            # unknown support: a server that ignores the prefix starts the answer again — checked as a replay
            read = await read_continuation(stream, prefill)
            return None if read is None else OpenStream(*read)

        def can_continue(name: str) -> bool:
            return self.health.prefill_support(name) is not False

        for name, later in self._takers(alias_name, call, tried, attempts, can_continue):
            support = self.health.prefill_support(name)
            continuation = dataclasses.replace(call, prefill=prefill, ttft=self._first_token_limit(name, alias, later))
            try:
                opened = await self._attempt_once(name, continuation, first_content, attempts, Outcome.CONTINUED)
            except UpstreamError as err:
                if support is None and err.failover is Failover.CLIENT:
                    attempts.relabel_last(Outcome.PREFILL_REFUSED)
                    self.health.refuse_prefill(name)
                    tried.discard(name)  # it may still restart the answer
                    log.info(
                        "target refused an assistant prefix; it will not be asked to continue again",
                        extra={"request_id": call.request_id, "target": name},
                    )
                continue
            if opened is None or opened.restarted:
                # it ignored the prefix: from now on it is only restarted, never asked to continue
                self.health.refuse_prefill(name)
                attempts.relabel_last(Outcome.REPLAYED if opened else Outcome.DIVERGED)
            if opened is None:
                self.health.release(name)  # it answered, differently: no verdict
                continue
            return Routed(name, self.providers[name].model, opened, attempts), attempts
        if attempts:
            log.warning("no target could continue the stream", extra={"request_id": call.request_id})
        return None, attempts

    async def replay_stream(
        self, alias_name: str, call: ChatCall, sent: str, tried: set[str]
    ) -> tuple[Routed[OpenStream] | None, AttemptLog]:
        """When no target could continue a broken stream: the request restarted on the next target that can
        serve it, its output held back until it has reproduced `sent` (the text the client has). The
        answer's remainder when it did (the attempt is recorded as replayed); None when no target could
        be asked, or the first whose regeneration was read differed (recorded as diverged) — another model
        would not reproduce the text either, and nothing different may be spliced."""
        alias = self.alias(alias_name)
        attempts = AttemptLog()

        async def regenerate(provider: Provider, restarted: Call) -> OpenStream | None:
            stream = provider.stream(cast(ChatCall, restarted))
            head = await read_replay(stream, sent)
            return None if head is None else OpenStream(head, stream)

        for name, later in self._takers(alias_name, call, tried, attempts, lambda _: True):
            restarted = dataclasses.replace(call, ttft=self._first_token_limit(name, alias, later))
            try:
                opened = await self._attempt_once(name, restarted, regenerate, attempts, Outcome.REPLAYED)
            except UpstreamError:
                continue
            if opened is None:
                attempts.relabel_last(Outcome.DIVERGED)
                self.health.release(name)  # it answered, differently: no verdict
                log.warning("the restarted answer differed from the text sent", extra={"request_id": call.request_id})
                return None, attempts
            return Routed(name, self.providers[name].model, opened, attempts), attempts
        return None, attempts

    def _takers(
        self, alias_name: str, call: ChatCall, tried: set[str], attempts: AttemptLog, usable: Callable[[str], bool]
    ) -> Iterator[tuple[str, list[str]]]:
        """The targets that may take over a broken stream, in the alias's order: not tried in this request,
        `usable`, able to serve it and available (a skip is recorded in `attempts`) — each claimed for one
        attempt and counted as tried, with the targets after it. None once the deadline has passed."""
        alias = self.alias(alias_name)
        needs = needs_of(call.request, call.body)
        order = order_targets(alias, self.permitted[alias_name], self.health, self.prices, self.rng)
        for index, name in enumerate(order):
            if name in tried or not usable(name) or why_not(needs, self.abilities[name]) is not None:
                continue
            if call.deadline.expired:
                return
            if not self.health.acquire(name):
                attempts.append(Attempt.skipped(name, self.health.why_unavailable(name)))
                continue
            tried.add(name)
            yield name, order[index + 1 :]
