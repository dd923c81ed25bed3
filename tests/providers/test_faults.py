"""Fault injection in front of a provider, and the operator's overrides in the circuits, in-process.

The same faults through a real gateway, with the fault wall upstream, are in
tests/integration/test_runtime_control.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from lifeline.attempts import Outcome, SkipReason
from lifeline.config import parse_config
from lifeline.config.schema import CircuitPolicy, Timeouts
from lifeline.errors import UpstreamCutOff, UpstreamError, UpstreamSilent, UpstreamUnavailable
from lifeline.protocol.parse import validate_chat_request
from lifeline.providers.base import ChatCall, Chunk, Completion, Deadline, EmbeddingCall, inspect_chunk
from lifeline.providers.faults import EmbeddingFaultInjector, Fault, FaultInjector, inject_faults
from lifeline.routing.health import Health, State
from lifeline.routing.router import Router

TIMEOUTS = Timeouts(first_byte=0.05, response=0.1)


class Upstream:
    """A provider that answers at once: a completion, or a stream of `pieces` content chunks."""

    def __init__(self, name: str = "t", pieces: int = 5) -> None:
        self.name = name
        self.model = f"{name}-model"
        self.context_window: int | None = 1000
        self.supports_n = True
        self.pieces = pieces
        self.calls = 0
        self.closed_streams = 0
        self.queue_depth = 7

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def complete(self, call: ChatCall) -> Completion:
        self.calls += 1
        return Completion(body={"answered_by": self.name}, model=self.model, usage=None)

    async def stream(self, call: ChatCall) -> AsyncIterator[Chunk]:
        self.calls += 1
        try:
            yield chunk({"role": "assistant"})
            for i in range(self.pieces):
                yield chunk({"content": f"w{i} "})
            yield chunk({}, finish="stop")
        finally:
            self.closed_streams += 1


class Embedder(Upstream):
    async def embed(self, call: EmbeddingCall) -> Completion:
        self.calls += 1
        return Completion(body={"data": []}, model=self.model, usage=None)


def chunk(delta: dict[str, Any], finish: str | None = None) -> Chunk:
    return inspect_chunk({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}, b"{}")


def make_call(seconds: float = 10.0) -> ChatCall:
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
    return ChatCall(body=body, request=validate_chat_request(body), request_id="r1", deadline=Deadline.after(seconds))


def injected(upstream: Upstream, fault: Fault | None = None) -> tuple[FaultInjector, dict[str, Fault]]:
    faults: dict[str, Fault] = {}
    if fault is not None:
        faults[upstream.name] = fault
    return inject_faults(upstream, faults, TIMEOUTS), faults  # type: ignore[arg-type]


async def read(stream: AsyncIterator[Chunk]) -> list[Chunk]:
    return [c async for c in stream]


# --- transparent without a fault --------------------------------------------------------------------


def test_without_a_fault_every_call_reaches_the_provider_unchanged() -> None:
    upstream = Upstream()
    wrapper, _ = injected(upstream)
    assert (wrapper.name, wrapper.model, wrapper.context_window, wrapper.supports_n) == ("t", "t-model", 1000, True)
    assert wrapper.queue_depth == 7  # whatever else the provider offers reads through
    wrapper.model = "renamed"
    assert upstream.model == "renamed"
    call = make_call()
    assert asyncio.run(wrapper.complete(call)).body == {"answered_by": "t"}
    stream = wrapper.stream(call)
    assert cast(Any, stream).ag_code is Upstream.stream.__code__  # the provider's own stream, not a wrapper
    assert len(asyncio.run(read(stream))) == 7


def test_a_fault_on_another_target_changes_nothing() -> None:
    upstream = Upstream("t")
    faults: dict[str, Fault] = {"other": Fault("forbidden")}
    wrapper = inject_faults(upstream, faults, TIMEOUTS)  # type: ignore[arg-type]
    assert asyncio.run(wrapper.complete(make_call())).body == {"answered_by": "t"}


def test_the_wrapper_embeds_exactly_when_the_provider_can() -> None:
    chat_only, _ = injected(Upstream())
    assert not isinstance(chat_only, EmbeddingFaultInjector)
    assert not hasattr(Upstream(), "embed")
    embedder = Embedder()
    wrapper, faults = injected(embedder)
    assert isinstance(wrapper, EmbeddingFaultInjector)
    call = EmbeddingCall(body={"input": "x"}, request_id="r1", deadline=Deadline.after(5))
    assert asyncio.run(wrapper.embed(call)).body == {"data": []}
    faults["t"] = Fault("unavailable")
    with pytest.raises(UpstreamUnavailable):
        asyncio.run(wrapper.embed(call))
    assert embedder.calls == 1


# --- the faults -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "error", "status"), [("forbidden", UpstreamCutOff, 403), ("unavailable", UpstreamUnavailable, 503)]
)
def test_forbidden_and_unavailable_fail_without_touching_the_upstream(
    kind: str, error: type[UpstreamError], status: int
) -> None:
    upstream = Upstream()
    wrapper, _ = injected(upstream, Fault(kind))  # type: ignore[arg-type]
    with pytest.raises(error) as raised:
        asyncio.run(wrapper.complete(make_call()))
    assert raised.value.upstream_status == status
    assert raised.value.target == "t"
    assert "(injected)" in raised.value.message
    with pytest.raises(error):
        asyncio.run(read(wrapper.stream(make_call())))
    assert upstream.calls == 0


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits asked of asyncio.sleep, each passed at once: what is waited, not how long it took."""
    asked: list[float] = []
    real_sleep = asyncio.sleep

    async def recorded(delay: float, result: Any = None) -> Any:
        asked.append(delay)
        return await real_sleep(0, result)

    monkeypatch.setattr(asyncio, "sleep", recorded)
    return asked


def test_timeout_waits_for_the_phase_timeout_then_is_silent(sleeps: list[float]) -> None:
    upstream = Upstream()
    wrapper, _ = injected(upstream, Fault("timeout"))
    with pytest.raises(UpstreamSilent, match="response timeout"):
        asyncio.run(wrapper.complete(make_call()))
    assert sleeps == [pytest.approx(TIMEOUTS.response, abs=1e-3)]
    with pytest.raises(UpstreamSilent, match="first_byte timeout"):
        asyncio.run(read(wrapper.stream(make_call())))
    assert sleeps[1:] == [pytest.approx(TIMEOUTS.first_byte, abs=1e-3)]
    assert upstream.calls == 0


def test_timeout_is_bounded_by_the_request_deadline(sleeps: list[float]) -> None:
    wrapper, _ = injected(Upstream(), Fault("timeout"))
    with pytest.raises(UpstreamSilent):
        asyncio.run(wrapper.complete(make_call(seconds=0.02)))
    # what was left of the 0.02 s deadline, not the 0.1 s response timeout
    assert len(sleeps) == 1 and sleeps[0] <= 0.02


def test_stream_cut_passes_the_real_answer_through_then_breaks() -> None:
    upstream = Upstream(pieces=5)
    wrapper, _ = injected(upstream, Fault("stream_cut", after=2))

    async def consume() -> list[Chunk]:
        seen: list[Chunk] = []
        with pytest.raises(UpstreamUnavailable, match=r"stream cut \(injected\)"):
            async for c in wrapper.stream(make_call()):
                seen.append(c)
        return seen

    seen = asyncio.run(consume())
    assert [c.data["choices"][0]["delta"].get("content") for c in seen] == [None, "w0 ", "w1 "]
    assert upstream.calls == 1
    assert upstream.closed_streams == 1  # the real stream was released


def test_stream_cut_after_zero_breaks_before_any_content() -> None:
    wrapper, _ = injected(Upstream(), Fault("stream_cut", after=0))

    async def consume() -> list[Chunk]:
        seen: list[Chunk] = []
        with pytest.raises(UpstreamUnavailable):
            async for c in wrapper.stream(make_call()):
                seen.append(c)
        return seen

    assert not any(c.content for c in asyncio.run(consume()))


def test_stream_cut_fails_a_whole_answer_before_it_starts() -> None:
    upstream = Upstream()
    wrapper, _ = injected(upstream, Fault("stream_cut"))
    with pytest.raises(UpstreamUnavailable, match="before the answer"):
        asyncio.run(wrapper.complete(make_call()))
    assert upstream.calls == 0


def test_a_stream_shorter_than_the_cut_completes() -> None:
    wrapper, _ = injected(Upstream(pieces=2), Fault("stream_cut", after=3))
    assert asyncio.run(read(wrapper.stream(make_call())))[-1].finish


def test_a_fault_applies_to_attempts_that_start_after_it_is_set() -> None:
    upstream = Upstream(pieces=4)
    wrapper, faults = injected(upstream)

    async def consume() -> list[Chunk]:
        stream = wrapper.stream(make_call())
        first = await anext(stream)
        faults["t"] = Fault("stream_cut", after=0)  # cut while this stream runs: it is not affected
        return [first, *[c async for c in stream]]

    assert len(asyncio.run(consume())) == 6
    with pytest.raises(UpstreamUnavailable):
        asyncio.run(read(wrapper.stream(make_call())))


# --- the overrides in the circuits ------------------------------------------------------------------

POLICY = CircuitPolicy(failure_threshold=3, cooldown=10, cutoff_cooldown=100, rate_limit_pause=2)


def test_a_drained_target_is_unavailable_and_says_why() -> None:
    h = Health(POLICY)
    h.drain("t")
    assert not h.available("t", now=0)
    assert not h.acquire("t", now=0)
    assert h.why_unavailable("t") is SkipReason.DRAINED
    assert h.override("t") == "drained"
    assert h.snapshot(["t"])[0]["override"] == "drained"
    assert h.snapshot(["u"])[0]["override"] is None


def test_a_cut_target_stays_available_so_the_fault_is_met() -> None:
    h = Health(POLICY)
    h.cut("t", Fault("timeout"))
    assert h.available("t", now=0)
    assert h.snapshot(["t"])[0]["override"] == "cut:timeout"
    h.drain("t")
    assert h.faults == {} and h.override("t") == "drained"  # one override at a time
    h.cut("t", Fault("forbidden"))
    assert h.drained == set() and h.override("t") == "cut:forbidden"


def test_heal_clears_the_override_and_closes_the_circuit() -> None:
    h = Health(POLICY)
    h.cut("t", Fault("forbidden"))
    h.record_failure("t", UpstreamCutOff("no", upstream_status=403), now=1)
    h.record_failure("t", UpstreamUnavailable("slow down"), now=1)
    assert h.circuit("t").state is State.OPEN
    h.heal("t")
    c = h.circuit("t")
    assert (c.state, c.consecutive_failures, c.probe_in_flight) == (State.CLOSED, 0, False)
    assert h.override("t") is None
    assert h.available("t", now=2)
    assert c.opened_count == 1  # history stays


def test_a_drained_target_is_not_the_one_force_probed() -> None:
    h = Health(POLICY)
    for target, at in (("a", 1.0), ("b", 2.0)):
        h.record_failure(target, UpstreamCutOff("no", upstream_status=403), now=at)
    h.drain("a")
    assert h.least_recently_failed(["a", "b"]) == "b"
    assert h.least_recently_failed(["a"]) == "a"  # nothing else at all


# --- through the router -----------------------------------------------------------------------------


def make_router(*upstreams: Upstream, retries: int = 2) -> Router:
    config = parse_config(
        {
            "targets": {
                u.name: {"kind": "openai", "base_url": "http://unused.invalid", "model": u.model} for u in upstreams
            },
            "aliases": {"chat": {"targets": [u.name for u in upstreams]}},
            "retry": {"max_retries": retries, "backoff_base": 0.001, "backoff_max": 0.002},
        },
        env={},
    )
    health = Health(config.circuit)
    providers = {u.name: inject_faults(u, health.faults, TIMEOUTS) for u in upstreams}  # type: ignore[arg-type]
    return Router(config, providers, health)  # type: ignore[arg-type]


def test_the_router_meets_a_cut_as_a_real_cut_off() -> None:
    primary, backup = Upstream("primary"), Upstream("backup")
    router = make_router(primary, backup)
    router.health.cut("primary", Fault("forbidden"))
    done = asyncio.run(router.complete("chat", make_call()))
    assert done.target == "backup"
    first = done.attempts[0]
    assert (first.target, first.outcome, first.status) == ("primary", Outcome.CUT_OFF, 403)
    assert router.health.circuit("primary").state is State.OPEN
    assert primary.calls == 0
    (event,) = router.health.recent_failovers
    assert (event["from"], event["outcome"]) == ("primary", "cut_off")


def test_the_router_retries_an_unavailable_cut_then_moves_on() -> None:
    primary, backup = Upstream("primary"), Upstream("backup")
    router = make_router(primary, backup, retries=2)
    router.health.cut("primary", Fault("unavailable"))
    done = asyncio.run(router.complete("chat", make_call()))
    assert [a.outcome for a in done.attempts] == [Outcome.UNAVAILABLE] * 3 + [Outcome.OK]
    assert primary.calls == 0


def test_the_router_skips_a_drained_target() -> None:
    primary, backup = Upstream("primary"), Upstream("backup")
    router = make_router(primary, backup)
    router.health.drain("primary")
    done = asyncio.run(router.complete("chat", make_call()))
    assert done.target == "backup"
    assert done.attempts[0].target == "primary" and done.attempts[0].skip is SkipReason.DRAINED
    assert done.tries == 1
    assert primary.calls == 0
