"""Circuits shared across replicas: several Health objects ("replicas"), each with SharedCircuits on one real
Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest

from lifeline.config.schema import CircuitPolicy
from lifeline.errors import UpstreamCutOff, UpstreamUnavailable
from lifeline.routing.health import Health, State
from lifeline.routing.shared import SharedCircuits
from tests.fixtures.redis import (  # noqa: F401
    RedisServer,
    fresh_redis_url,
    private_redis,
    redis_session_server,
    redis_url,
)

POLICY = CircuitPolicy(failure_threshold=2, cooldown=10, cutoff_cooldown=100)
FAST_BACKOFF = (0.05, 0.2)


@pytest.fixture
def shared_url(request: pytest.FixtureRequest) -> str:
    """The session's Redis, emptied for this test."""
    url: str = request.getfixturevalue("fresh_redis_url")
    return url


@pytest.fixture
def own_redis(request: pytest.FixtureRequest) -> RedisServer:
    """A Redis server of this test's own, to stop and restart."""
    server: RedisServer = request.getfixturevalue("private_redis")
    return server


@asynccontextmanager
async def replica(url: str) -> AsyncIterator[tuple[Health, SharedCircuits]]:
    health = Health(POLICY)
    shared = SharedCircuits(health, url, backoff=FAST_BACKOFF)
    await shared.start()
    try:
        yield health, shared
    finally:
        await shared.close()


async def eventually(check: Callable[[], bool], polls: int = 3000) -> None:
    """Wait for `check` to hold; a guard against hanging, not a measure of speed (a busy machine is slow)."""
    for _ in range(polls):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("it never happened")


def ends_with(health: Health, other: Health, target: str) -> bool:
    """`target`'s circuit is open on both and its cooldown ends when the other's does: what was left of it
    travelled, not a fresh cooldown. Two moments are compared, not a duration measured; the slack is the
    few milliseconds between opening and publishing, which a loaded machine does not stretch to a second."""
    mine, theirs = health.circuit(target), other.circuit(target)
    return mine.state is theirs.state is State.OPEN and abs(mine.open_until - theirs.open_until) < 1.0


async def published(shared: SharedCircuits) -> None:
    """Wait until `shared` has told Redis of every open so far (publishing runs in the background)."""
    await eventually(lambda: not shared._publishing)


def cut_off(health: Health, target: str) -> None:
    health.record_failure(target, UpstreamCutOff("denied", target=target, upstream_status=403))


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(main())


def test_an_open_circuit_reaches_the_other_replica_with_its_remaining_cooldown(shared_url: str) -> None:
    async def main() -> None:
        async with replica(shared_url) as (h1, s1), replica(shared_url) as (h2, s2):
            cut_off(h1, "t")
            assert h1.circuit("t").state is State.OPEN
            await eventually(lambda: h2.circuit("t").state is State.OPEN)
            assert ends_with(h2, h1, "t")
            assert h2.circuit("t").last_error == "cut_off 403 (on another replica)"
            assert not h2.available("t")
            assert h2.available("other"), "only the target that failed"
            await asyncio.sleep(0.2)
            assert s2.received == 1
            assert s1.received == 0, "a replica ignores its own messages"
            assert h1.circuit("t").opened_count == 1 and h2.circuit("t").opened_count == 1

    run(main)


def test_a_replica_started_later_picks_up_open_circuits_at_start(shared_url: str) -> None:
    async def main() -> None:
        async with replica(shared_url) as (h1, s1):
            for _ in range(POLICY.failure_threshold):
                h1.record_failure("t", UpstreamUnavailable("down", target="t", upstream_status=503))
            assert h1.circuit("t").state is State.OPEN
            await published(s1)
            await asyncio.sleep(0.3)  # a fresh cooldown started now would end 0.3 s later than h1's
            async with replica(shared_url) as (late, shared):
                # start() returns once the opens already in Redis are applied, with what is left of them
                assert ends_with(late, h1, "t")
                assert late.circuit("t").open_until < h1.circuit("t").open_until + 0.3
                assert shared.received == 1

    run(main)


def test_a_shorter_open_does_not_cut_a_longer_one_short(shared_url: str) -> None:
    async def main() -> None:
        async with replica(shared_url) as (h1, s1), replica(shared_url) as (_, s2):
            cut_off(h1, "t")
            await eventually(lambda: s2.received == 1)
            # a circuit on h1 opening again for 5 s: other replicas already know of a longer open
            for listener in h1.open_listeners:
                listener("t", 5.0, "unavailable 503")
            await published(s1)
            await asyncio.sleep(0.2)
            assert s2.received == 1
            async with replica(shared_url) as (late, _):
                assert ends_with(late, h1, "t")  # the 100 s cut-off, not the later 5 s

    run(main)


def test_close_detaches_the_listener(shared_url: str) -> None:
    async def main() -> None:
        health = Health(POLICY)
        shared = SharedCircuits(health, shared_url)
        await shared.start()
        assert len(health.open_listeners) == 1
        await shared.close()
        assert health.open_listeners == []
        cut_off(health, "t")  # nothing to publish to, and no error
        assert health.circuit("t").state is State.OPEN

    run(main)


def test_redis_down_leaves_circuits_local_and_sharing_resumes_when_it_is_back(own_redis: RedisServer) -> None:
    async def main() -> None:
        async with replica(own_redis.url) as (h1, s1), replica(own_redis.url) as (h2, _):
            own_redis.stop()
            cut_off(h1, "t")  # the publish fails in the background; the request path does not notice
            assert h1.circuit("t").state is State.OPEN
            await eventually(lambda: s1.redis_errors > 0)
            assert h2.circuit("t").state is State.CLOSED

            own_redis.start()  # empty, on the same port
            cut_off(h2, "u")
            # h1 hears of it live if it has resubscribed already, else from the key when it does
            await eventually(lambda: h1.circuit("u").state is State.OPEN)
            assert ends_with(h1, h2, "u")
            cut_off(h1, "v")
            await eventually(lambda: h2.circuit("v").state is State.OPEN)

    run(main)


def test_a_refused_prefix_reaches_the_other_replicas_and_those_started_later(shared_url: str) -> None:
    async def main() -> None:
        async with replica(shared_url) as (h1, s1), replica(shared_url) as (h2, _):
            h1.prefill_declared["t"] = h2.prefill_declared["t"] = None  # unknown support
            told: list[str] = []
            h2.prefill_listeners.append(told.append)
            h1.refuse_prefill("t")
            await eventually(lambda: h2.prefill_support("t") is False)
            assert h2.prefill_support("other") is None, "only the target that refused"
            assert told == [], "a refusal learnt from another replica is not announced again"
            await published(s1)
            async with replica(shared_url) as (late, _):
                assert late.prefill_support("t") is False  # read from Redis at start
                assert late.snapshot(["t"])[0]["prefill"] == "no"

    run(main)
