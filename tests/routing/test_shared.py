"""Circuits shared across replicas: several Health objects ("replicas"), each with SharedCircuits on one real
Redis."""

from __future__ import annotations

import asyncio
import time
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


async def eventually(check: Callable[[], bool], within: float = 1.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.01)


def open_for(health: Health, target: str) -> float:
    return float(health.snapshot([target])[0]["open_for_seconds"])


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
            assert 98 < open_for(h2, "t") <= 100
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
        async with replica(shared_url) as (h1, _):
            for _ in range(POLICY.failure_threshold):
                h1.record_failure("t", UpstreamUnavailable("down", target="t", upstream_status=503))
            assert h1.circuit("t").state is State.OPEN
            await asyncio.sleep(0.3)  # the open is published in the background
            async with replica(shared_url) as (late, shared):
                # start() returns once the opens already in Redis are applied
                assert late.circuit("t").state is State.OPEN
                assert 9 < open_for(late, "t") <= 9.75
                assert shared.received == 1

    run(main)


def test_a_shorter_open_does_not_cut_a_longer_one_short(shared_url: str) -> None:
    async def main() -> None:
        async with replica(shared_url) as (h1, _), replica(shared_url) as (_, s2):
            cut_off(h1, "t")
            await eventually(lambda: s2.received == 1)
            # a circuit on h1 opening again for 5 s: other replicas already know of a longer open
            for listener in h1.open_listeners:
                listener("t", 5.0, "unavailable 503")
            await asyncio.sleep(0.2)
            assert s2.received == 1
            async with replica(shared_url) as (late, _):
                assert open_for(late, "t") > 95

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
            await eventually(lambda: h1.circuit("u").state is State.OPEN, within=3.0)
            assert 95 < open_for(h1, "u") <= 100
            cut_off(h1, "v")
            await eventually(lambda: h2.circuit("v").state is State.OPEN, within=3.0)

    run(main)
