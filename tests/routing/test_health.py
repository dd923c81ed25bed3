"""Circuits, driven with explicit clock values."""

from __future__ import annotations

import pytest

from lifeline.config.schema import CircuitPolicy
from lifeline.errors import (
    ContentFiltered,
    ContextLengthExceeded,
    UpstreamCutOff,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamSilent,
    UpstreamUnavailable,
)
from lifeline.routing.health import Health, State

POLICY = CircuitPolicy(failure_threshold=3, cooldown=10, cutoff_cooldown=100, rate_limit_pause=2)
T = "t"


def health() -> Health:
    return Health(POLICY)


def fail(h: Health, now: float, error: UpstreamError | None = None, target: str = T) -> None:
    h.record_failure(target, error or UpstreamUnavailable("down", upstream_status=503), now=now)


def test_new_circuit_is_closed_and_available() -> None:
    h = health()
    assert h.circuit(T).state is State.CLOSED
    assert h.available(T, now=0)
    assert h.acquire(T, now=0)
    assert h.acquire(T, now=0), "a closed circuit admits any number of requests"
    assert not h.circuit(T).probe_in_flight


def test_opens_after_threshold_consecutive_failures() -> None:
    h = health()
    fail(h, 1)
    fail(h, 2)
    assert h.circuit(T).state is State.CLOSED
    assert h.circuit(T).consecutive_failures == 2
    assert h.available(T, now=2.5)
    fail(h, 3)
    c = h.circuit(T)
    assert c.state is State.OPEN
    assert c.open_until == 13
    assert c.opened_count == 1
    assert c.last_error == "unavailable 503"
    assert not h.available(T, now=12.9)
    assert not h.acquire(T, now=12.9)


def test_success_resets_the_count() -> None:
    h = health()
    fail(h, 1)
    fail(h, 2)
    h.record_success(T)
    assert h.circuit(T).consecutive_failures == 0
    fail(h, 3)
    fail(h, 4)
    assert h.circuit(T).state is State.CLOSED


def test_cut_off_opens_at_once_with_long_cooldown() -> None:
    h = health()
    fail(h, 5, UpstreamCutOff("billing", upstream_status=402))
    c = h.circuit(T)
    assert c.state is State.OPEN
    assert c.open_until == 105
    assert c.last_error == "cut_off 402"
    assert not h.available(T, now=104)
    assert h.available(T, now=105)


def test_ordinary_failure_does_not_shorten_a_cut_off() -> None:
    h = health()
    fail(h, 0, UpstreamCutOff("billing"))
    for now in (1, 2, 3):
        fail(h, now)
    assert h.circuit(T).open_until == 100
    assert h.circuit(T).opened_count == 1


def test_silent_counts_as_failure() -> None:
    h = health()
    for now in (1, 2, 3):
        fail(h, now, UpstreamSilent("quiet"))
    assert h.circuit(T).state is State.OPEN


def test_429_sets_rate_limited_until_and_is_not_a_failure() -> None:
    h = health()
    fail(h, 10, UpstreamRateLimited("slow", retry_after=4, upstream_status=429))
    c = h.circuit(T)
    assert c.rate_limited_until == 14
    assert c.consecutive_failures == 0
    assert c.state is State.CLOSED
    assert c.last_error == "rate_limited 429"
    assert not h.available(T, now=13.9)
    assert not h.acquire(T, now=13.9)
    assert h.available(T, now=14)


def test_429_without_retry_after_pauses_for_the_policy() -> None:
    h = health()
    fail(h, 10, UpstreamRateLimited("slow"))
    assert h.circuit(T).rate_limited_until == 12


def test_429_never_shortens_an_earlier_pause() -> None:
    h = health()
    fail(h, 10, UpstreamRateLimited("slow", retry_after=30))
    fail(h, 11, UpstreamRateLimited("slow", retry_after=1))
    assert h.circuit(T).rate_limited_until == 40


def test_many_429s_never_open_the_circuit() -> None:
    h = health()
    for now in range(10):
        fail(h, now, UpstreamRateLimited("slow", retry_after=0))
    assert h.circuit(T).state is State.CLOSED


@pytest.mark.parametrize(
    "error",
    [UpstreamRejected("bad"), ContextLengthExceeded("long"), ContentFiltered("no")],
    ids=lambda e: type(e).__name__,
)
def test_client_context_and_filter_errors_do_not_count(error: UpstreamError) -> None:
    h = health()
    for now in range(10):
        fail(h, now, error)
    c = h.circuit(T)
    assert c.state is State.CLOSED
    assert c.consecutive_failures == 0
    assert c.last_failure_at == 0


def open_circuit(h: Health, at: float = 0) -> None:
    for i in range(POLICY.failure_threshold):
        fail(h, at + i * 0.001)


def test_half_open_admits_a_single_probe() -> None:
    h = health()
    open_circuit(h)
    assert not h.acquire(T, now=5)
    assert h.acquire(T, now=11)
    c = h.circuit(T)
    assert c.state is State.HALF_OPEN
    assert c.probe_in_flight
    assert not h.available(T, now=11)
    assert not h.acquire(T, now=11), "a second request while the probe is in flight is refused"
    assert not h.acquire(T, now=50)


def test_probe_success_closes() -> None:
    h = health()
    open_circuit(h)
    assert h.acquire(T, now=11)
    h.record_success(T)
    c = h.circuit(T)
    assert c.state is State.CLOSED
    assert c.consecutive_failures == 0
    assert not c.probe_in_flight
    assert h.acquire(T, now=11)
    assert h.acquire(T, now=11)


def test_probe_failure_reopens_at_once() -> None:
    h = health()
    open_circuit(h)
    assert h.acquire(T, now=11)
    fail(h, 12)
    c = h.circuit(T)
    assert c.state is State.OPEN
    assert c.open_until == 22
    assert c.opened_count == 2
    assert not c.probe_in_flight
    assert not h.acquire(T, now=21)
    assert h.acquire(T, now=22)


def test_release_frees_the_probe() -> None:
    h = health()
    open_circuit(h)
    assert h.acquire(T, now=11)
    h.release(T)
    c = h.circuit(T)
    assert c.state is State.HALF_OPEN
    assert not c.probe_in_flight
    assert h.acquire(T, now=11)


def test_force_probe_claims_an_open_circuit_before_its_cooldown() -> None:
    h = health()
    open_circuit(h)
    h.force_probe(T)
    assert h.circuit(T).state is State.HALF_OPEN
    assert h.circuit(T).probe_in_flight


def test_force_probe_leaves_a_closed_circuit_alone() -> None:
    h = health()
    h.force_probe(T)
    assert h.circuit(T).state is State.CLOSED
    assert not h.circuit(T).probe_in_flight


def test_least_recently_failed() -> None:
    h = health()
    fail(h, 5, target="a")
    fail(h, 2, target="b")
    fail(h, 9, target="c")
    assert h.least_recently_failed(["a", "b", "c"]) == "b"
    assert h.least_recently_failed(["a", "c"]) == "a"
    assert h.least_recently_failed(["c", "never"]) == "never"


def test_snapshot() -> None:
    h = health()
    open_circuit(h, at=100)
    snap = h.circuit(T).snapshot(now=105)
    assert snap["state"] == "open"
    assert snap["consecutive_failures"] == 3
    assert snap["open_for_seconds"] == pytest.approx(5.002)
    assert snap["times_opened"] == 1
    assert snap["last_error"] == "unavailable 503"


def test_a_refused_prefix_marks_only_a_target_of_unknown_support() -> None:
    h = health()
    h.prefill_declared.update({"unknown": None, "declared": True})
    told: list[str] = []
    h.prefill_listeners.append(told.append)
    for target in ("unknown", "declared"):
        h.refuse_prefill(target)
        h.refuse_prefill(target)  # told once
    assert told == ["unknown", "declared"]
    assert h.prefill_support("unknown") is False
    assert h.prefill_support("declared") is True  # the config's word wins over what was learnt
    assert [row["prefill"] for row in h.snapshot(["unknown", "declared", "other"])] == ["no", "yes", "unknown"]
