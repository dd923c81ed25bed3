"""Rate limits and budget reservations, on both stores: in process and a real Redis (several "replicas"
sharing one, and one that goes away)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar

import pytest

from lifeline.accounting.limits import (
    InProcessLimits,
    LimitStore,
    RateEntry,
    RedisLimits,
    Reservation,
    format_usd,
    make_limits,
    period_end,
    period_id,
)
from lifeline.accounting.records import NANO
from lifeline.config.schema import AccountingSettings
from lifeline.errors import BudgetExceeded, LimitBackendUnavailable, RateLimitExceeded
from tests.fixtures.redis import (  # noqa: F401
    RedisServer,
    fresh_redis_url,
    private_redis,
    redis_session_server,
    redis_url,
)

T = TypeVar("T")
StoreFactory = Callable[..., LimitStore]
KEY = "key_1"
USD = NANO


@pytest.fixture
def shared_url(request: pytest.FixtureRequest) -> str:
    """The session's Redis, emptied for this test (by name: a parameter named like the imported fixture
    would shadow the import)."""
    url: str = request.getfixturevalue("fresh_redis_url")
    return url


@pytest.fixture
def own_redis(request: pytest.FixtureRequest) -> RedisServer:
    """A Redis server of this test's own, to stop, restart and pause."""
    server: RedisServer = request.getfixturevalue("private_redis")
    return server


@pytest.fixture(params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest) -> StoreFactory:
    """Builds a store of either kind; Redis ones fail closed, so a Redis problem fails the test."""
    if request.param == "redis":
        url: str = request.getfixturevalue("fresh_redis_url")
        return lambda **kw: RedisLimits(url, "closed", **kw)
    return lambda **kw: InProcessLimits(**kw)


def run(factory: StoreFactory, body: Callable[[LimitStore], Awaitable[T]], **kw: Any) -> T:
    async def main() -> T:
        store = factory(**kw)
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


class Moment:
    """When something happened, as the interval of the test's clock it happened in. Sliding windows are
    checked against these — a Retry-After must fall between the bounds the events themselves set, however
    long a busy machine took between them — rather than against fixed durations."""

    def __init__(self) -> None:
        self.start = self.stop = time.monotonic()

    def end(self) -> None:
        self.stop = time.monotonic()

    def leaves_window(self, window: float, seen: Moment, wait: float) -> bool:
        """`wait`, given during `seen`, is when what happened now leaves a `window` (5 ms of rounding)."""
        return self.start + window - seen.stop - 0.005 <= wait <= self.stop + window - seen.start + 0.005

    def inside_window(self, window: float) -> bool:
        """What happened now is certainly still inside a `window` that ends `window` seconds later."""
        return time.monotonic() < self.start + window - 0.05


class Ledger:
    """A stand-in for the ledger's "spent so far this period", counting how often it is asked."""

    def __init__(self, spent: int = 0) -> None:
        self.spent = spent
        self.calls = 0

    async def __call__(self) -> int:
        self.calls += 1
        await asyncio.sleep(0.01)  # a real read takes a moment: lets concurrent callers pile up behind it
        return self.spent


async def reserve(store: LimitStore, amount: int, ledger: Ledger, limit: int = 5 * USD, **kw: Any) -> Reservation:
    kw.setdefault("period", "day")
    return await store.reserve(KEY, limit_nusd=limit, amount_nusd=amount, seed=ledger, **kw)


@pytest.fixture
def limits_warnings() -> Iterator[list[logging.LogRecord]]:
    """Warnings from the limits module, collected directly (the lifeline logger may not propagate)."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(logging.WARNING)
    logger = logging.getLogger("lifeline.accounting.limits")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


# --- requests per minute -----------------------------------------------------------------------------


def test_rpm_admits_exactly_n_then_refuses_with_retry_after(make_store: StoreFactory) -> None:
    async def body(store: LimitStore) -> None:
        oldest = Moment()
        for i in range(10):
            await store.admit(KEY, rpm=10, tpm=None, tokens_estimate=0)
            if i == 0:
                oldest.end()
        refusal = Moment()
        with pytest.raises(RateLimitExceeded) as refused:
            await store.admit(KEY, rpm=10, tpm=None, tokens_estimate=0)
        refusal.end()
        err = refused.value
        assert (err.status, err.type, err.code, err.limit) == (429, "rate_limit_error", "rate_limit_exceeded", "rpm")
        assert "requests per minute limit of 10 reached" in err.message.lower()
        # when the oldest request leaves the 60 s window; the header rounds that up, never down
        assert err.retry_after is not None and oldest.leaves_window(60.0, refusal, err.retry_after)
        assert err.headers == {"retry-after": str(math.ceil(err.retry_after))}
        # other keys have limits of their own
        await store.admit("other", rpm=10, tpm=None, tokens_estimate=0)

    run(make_store, body)


def test_rpm_slot_frees_when_the_oldest_request_leaves_the_window(make_store: StoreFactory) -> None:
    async def body(store: LimitStore) -> None:
        first = Moment()
        for _ in range(3):
            await store.admit(KEY, rpm=5, tpm=None, tokens_estimate=0)
        first.end()
        await asyncio.sleep(0.5)
        later = Moment()
        for _ in range(2):
            await store.admit(KEY, rpm=5, tpm=None, tokens_estimate=0)
        later.end()
        refusal = Moment()
        for _ in range(3):  # refused requests count for nothing: they must not push the window along
            with pytest.raises(RateLimitExceeded) as refused:
                await store.admit(KEY, rpm=5, tpm=None, tokens_estimate=0)
        refusal.end()
        wait = refused.value.retry_after
        assert wait is not None
        assert first.leaves_window(1.0, refusal, wait), "the first three leave the window first"
        assert refused.value.headers["retry-after"] == "1"
        await asyncio.sleep(wait + 0.05)
        for _ in range(3):  # the first three have left, however slow the machine
            await store.admit(KEY, rpm=5, tpm=None, tokens_estimate=0)
        if later.inside_window(1.0):  # the later two are still in it (unless the machine stalled past them)
            with pytest.raises(RateLimitExceeded):
                await store.admit(KEY, rpm=5, tpm=None, tokens_estimate=0)

    run(make_store, body, window=1.0)


# --- tokens per minute -------------------------------------------------------------------------------


def test_tpm_admits_up_to_the_limit_exactly(make_store: StoreFactory) -> None:
    async def body(store: LimitStore) -> None:
        await store.admit(KEY, rpm=None, tpm=100, tokens_estimate=60)
        await store.admit(KEY, rpm=None, tpm=100, tokens_estimate=40)  # 100 of 100
        with pytest.raises(RateLimitExceeded) as refused:
            await store.admit(KEY, rpm=None, tpm=100, tokens_estimate=1)
        err = refused.value
        assert (err.status, err.code, err.limit) == (429, "rate_limit_exceeded", "tpm")
        assert "tokens per minute limit of 100 reached" in err.message.lower()
        assert err.headers == {"retry-after": "60"}

    run(make_store, body)


def test_tpm_retry_after_is_when_enough_tokens_have_left(make_store: StoreFactory) -> None:
    async def body(store: LimitStore) -> None:
        thirty = Moment()
        await store.admit(KEY, rpm=None, tpm=100, tokens_estimate=30)
        thirty.end()
        await asyncio.sleep(0.4)
        seventy = Moment()
        await store.admit(KEY, rpm=None, tpm=100, tokens_estimate=70)
        seventy.end()
        refusals = Moment()
        with pytest.raises(RateLimitExceeded) as small:
            await store.admit(KEY, rpm=None, tpm=100, tokens_estimate=30)  # fits once the first 30 leave
        with pytest.raises(RateLimitExceeded) as large:
            await store.admit(KEY, rpm=None, tpm=100, tokens_estimate=31)  # needs the 70 gone too
        refusals.end()
        assert small.value.retry_after is not None and large.value.retry_after is not None
        assert thirty.leaves_window(1.0, refusals, small.value.retry_after)
        assert seventy.leaves_window(1.0, refusals, large.value.retry_after)
        await asyncio.sleep(small.value.retry_after + 0.05)
        await store.admit(KEY, rpm=None, tpm=100, tokens_estimate=30)

    run(make_store, body, window=1.0)


def test_tpm_refusal_consumes_no_request_slot_and_no_tokens(make_store: StoreFactory) -> None:
    async def body(store: LimitStore) -> None:
        await store.admit(KEY, rpm=3, tpm=10, tokens_estimate=10)
        for _ in range(5):
            with pytest.raises(RateLimitExceeded) as refused:
                await store.admit(KEY, rpm=3, tpm=10, tokens_estimate=5)
            assert refused.value.limit == "tpm"
        await store.admit(KEY, rpm=3, tpm=10, tokens_estimate=0)
        await store.admit(KEY, rpm=3, tpm=10, tokens_estimate=0)
        with pytest.raises(RateLimitExceeded) as refused:
            await store.admit(KEY, rpm=3, tpm=10, tokens_estimate=0)
        assert refused.value.limit == "rpm"

    run(make_store, body)


def test_a_request_larger_than_the_tpm_limit_gets_no_retry_after(make_store: StoreFactory) -> None:
    async def body(store: LimitStore) -> None:
        with pytest.raises(RateLimitExceeded) as refused:
            await store.admit(KEY, rpm=None, tpm=100, tokens_estimate=101)
        assert "retry-after" not in refused.value.headers, "waiting would not help"
        assert "more than the limit allows" in refused.value.message
        await store.admit(KEY, rpm=None, tpm=100, tokens_estimate=100)

    run(make_store, body)


def test_settled_tokens_replace_the_estimate_where_it_stands(make_store: StoreFactory) -> None:
    async def body(store: LimitStore) -> None:
        first = await store.admit(KEY, rpm=None, tpm=100, tokens_estimate=80)
        await store.settle_tokens(first, 30)  # the answer was shorter than the bound: 30 counted
        await store.admit(KEY, rpm=None, tpm=100, tokens_estimate=70)
        with pytest.raises(RateLimitExceeded):
            await store.admit(KEY, rpm=None, tpm=100, tokens_estimate=1)
        await store.settle_tokens(first, 0)  # a second settlement changes nothing: 100 counted still
        with pytest.raises(RateLimitExceeded) as refused:
            await store.admit(KEY, rpm=None, tpm=100, tokens_estimate=1)
        # the 30 leave the window with their request's admission: then one more token fits
        assert refused.value.retry_after is not None and 0 < refused.value.retry_after <= 60

    run(make_store, body)


def test_tokens_settled_after_their_entry_left_the_window_are_not_counted_again(make_store: StoreFactory) -> None:
    async def body(store: LimitStore) -> None:
        long_request = await store.admit(KEY, rpm=None, tpm=100, tokens_estimate=100)
        await asyncio.sleep(0.35)  # longer than the window: its bound was counted for a whole window
        await store.settle_tokens(long_request, 90)
        await store.admit(KEY, rpm=None, tpm=100, tokens_estimate=100)

    run(make_store, body, window=0.3)


def test_a_withdrawn_request_counts_against_no_rate_limit(make_store: StoreFactory) -> None:
    async def body(store: LimitStore) -> None:
        refused_later = await store.admit(KEY, rpm=2, tpm=100, tokens_estimate=90)
        await store.withdraw(refused_later)  # e.g. its budget refused it
        await store.withdraw(refused_later)  # twice is once
        await store.settle_tokens(refused_later, 50)  # and a settlement after it changes nothing
        await store.admit(KEY, rpm=2, tpm=100, tokens_estimate=60)
        await store.admit(KEY, rpm=2, tpm=100, tokens_estimate=40)
        with pytest.raises(RateLimitExceeded) as refused:
            await store.admit(KEY, rpm=3, tpm=100, tokens_estimate=1)
        assert refused.value.limit == "tpm"
        with pytest.raises(RateLimitExceeded) as refused:
            await store.admit(KEY, rpm=2, tpm=None, tokens_estimate=0)  # 2 requests counted, not 3
        assert refused.value.limit == "rpm"

        only_requests = await store.admit("other", rpm=1, tpm=None, tokens_estimate=5)
        assert only_requests.tokens is None
        await store.withdraw(only_requests)
        await store.admit("other", rpm=1, tpm=None, tokens_estimate=5)

    run(make_store, body)


# --- budgets -----------------------------------------------------------------------------------------


def test_concurrent_reservations_never_overspend(make_store: StoreFactory) -> None:
    ledger = Ledger(spent=70 * USD // 100)  # $0.70 of $1.00 already spent
    amount = 7 * USD // 1000  # $0.007 each: room for floor(0.30 / 0.007) = 42

    async def body(store: LimitStore) -> None:
        results = await asyncio.gather(
            *(reserve(store, amount, ledger, limit=USD) for _ in range(50)), return_exceptions=True
        )
        granted = [r for r in results if isinstance(r, Reservation)]
        refused = [r for r in results if isinstance(r, BudgetExceeded)]
        assert len(granted) == 42 and len(refused) == 8, results
        assert ledger.spent + sum(r.amount_nusd for r in granted) <= USD
        assert ledger.calls == 1, "concurrent requests share one read of the ledger"
        assert await store.spent(KEY, "day") == (ledger.spent, 42 * amount)

    run(make_store, body)


def test_settle_and_release_are_exact_and_idempotent(make_store: StoreFactory) -> None:
    ledger = Ledger()

    async def body(store: LimitStore) -> None:
        first = await reserve(store, 2 * USD, ledger)
        second = await reserve(store, 2 * USD, ledger)
        assert (first.key_id, first.amount_nusd) == (KEY, 2 * USD)
        assert await store.spent(KEY, "day") == (0, 4 * USD)
        with pytest.raises(BudgetExceeded) as refused:
            await reserve(store, 2 * USD, ledger)
        err = refused.value
        assert (err.status, err.type, err.code) == (429, "budget_exceeded", "budget_exceeded")
        assert err.message == (
            "Budget of $5.00 per day for this key is exhausted ($0.00 spent, $4.00 reserved in flight; "
            "this request needs up to $2.00)."
        )
        await store.settle(first, USD // 2)
        assert await store.spent(KEY, "day") == (USD // 2, 2 * USD)
        await store.settle(first, 3 * USD)  # a second settle does nothing
        await store.release(first)  # nor does a release after it
        assert await store.spent(KEY, "day") == (USD // 2, 2 * USD)
        await store.release(second)
        await store.release(second)
        await store.settle(second, USD)  # released first: it ended there
        assert await store.spent(KEY, "day") == (USD // 2, 0)
        last = await reserve(store, 4 * USD + USD // 2, ledger)  # exactly to the limit is allowed
        with pytest.raises(BudgetExceeded):
            await reserve(store, 1, ledger)
        await store.settle(last, 0)
        assert await store.spent(KEY, "day") == (USD // 2, 0)
        assert ledger.calls == 1

    run(make_store, body)


def test_seed_comes_from_the_ledger_once_per_period(make_store: StoreFactory) -> None:
    ledger = Ledger(spent=499 * USD // 100)

    async def body(store: LimitStore) -> None:
        assert await store.spent(KEY, "day") == (0, 0), "nothing counted before the first reservation"
        with pytest.raises(BudgetExceeded) as refused:
            await reserve(store, 2 * USD // 100, ledger)
        assert "($4.99 spent, $0.00 reserved in flight; this request needs up to $0.02)" in refused.value.message
        r = await reserve(store, USD // 100, ledger)
        await store.settle(r, USD // 100)
        assert await store.spent(KEY, "day") == (5 * USD, 0)
        assert ledger.calls == 1
        # another period has a counter of its own, seeded once too
        r = await reserve(store, USD, ledger, limit=100 * USD, period="month")
        await reserve(store, USD, ledger, limit=100 * USD, period="month")
        assert ledger.calls == 2
        assert await store.spent(KEY, "month") == (ledger.spent, 2 * USD)
        assert await store.spent(KEY, "day") == (5 * USD, 0)

    run(make_store, body)


def test_a_failed_ledger_read_reserves_nothing_and_is_retried(make_store: StoreFactory) -> None:
    calls = 0

    async def broken() -> int:
        nonlocal calls
        calls += 1
        raise RuntimeError("ledger down")

    async def body(store: LimitStore) -> None:
        with pytest.raises(RuntimeError, match="ledger down"):
            await store.reserve(KEY, limit_nusd=USD, period="day", amount_nusd=1, seed=broken)
        with pytest.raises(RuntimeError):
            await store.reserve(KEY, limit_nusd=USD, period="day", amount_nusd=1, seed=broken)
        assert calls == 2
        await reserve(store, USD, Ledger())
        assert await store.spent(KEY, "day") == (0, USD)

    run(make_store, body)


def test_period_ids_are_utc_and_roll_over_at_the_boundary() -> None:
    last = datetime(2024, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    first = last + timedelta(microseconds=1)
    assert [period_id(p, last) for p in ("day", "month", "total")] == ["d:2024-12-31", "m:2024-12", "t"]
    assert [period_id(p, first) for p in ("day", "month", "total")] == ["d:2025-01-01", "m:2025-01", "t"]
    assert period_id("day", datetime(2024, 2, 29, 12)) == "d:2024-02-29", "naive times are UTC"
    paris = timezone(timedelta(hours=2))
    assert period_id("day", datetime(2025, 6, 1, 1, 0, tzinfo=paris)) == "d:2025-05-31"
    assert period_end("day", last) == first
    assert period_end("month", datetime(2025, 1, 31, 12, tzinfo=UTC)) == datetime(2025, 2, 1, tzinfo=UTC)
    assert period_end("month", datetime(2025, 12, 5, tzinfo=UTC)) == datetime(2026, 1, 1, tzinfo=UTC)
    assert period_end("total", last) is None


def test_a_new_period_starts_a_new_counter(make_store: StoreFactory) -> None:
    clock = [datetime(2031, 1, 31, 23, 59, 58, tzinfo=UTC)]
    ledger = Ledger()

    async def body(store: LimitStore) -> None:
        r = await reserve(store, 4 * USD, ledger, period="month")
        assert r.period_id == "m:2031-01"
        await store.settle(r, 4 * USD)
        with pytest.raises(BudgetExceeded):
            await reserve(store, 2 * USD, ledger, period="month")
        clock[0] += timedelta(seconds=3)
        assert await store.spent(KEY, "month") == (0, 0)
        r = await reserve(store, 5 * USD, ledger, period="month")
        assert r.period_id == "m:2031-02"
        assert ledger.calls == 2, "the new period's counter is seeded from the ledger"

    run(make_store, body, utcnow=lambda: clock[0])


def test_an_abandoned_reservation_expires(make_store: StoreFactory) -> None:
    async def body(store: LimitStore) -> None:
        held = await reserve(store, 5 * USD, Ledger())
        with pytest.raises(BudgetExceeded):
            await reserve(store, USD, Ledger())
        await asyncio.sleep(0.45)
        assert await store.spent(KEY, "day") == (0, 0)
        late = await reserve(store, 2 * USD, Ledger())
        # settled after its hold expired: the money was still spent and still counts
        await store.settle(held, USD)
        assert await store.spent(KEY, "day") == (USD, 2 * USD)
        await store.release(late)

    run(make_store, body, reservation_ttl=0.4)


def test_format_usd() -> None:
    assert [format_usd(n) for n in (0, 5 * USD, 499 * USD // 100, 123_000, -USD // 2, 1)] == [
        "$0.00", "$5.00", "$4.99", "$0.000123", "-$0.50", "$0.00",
    ]  # fmt: skip


def test_make_limits_picks_the_store_from_settings(shared_url: str) -> None:
    assert isinstance(make_limits(AccountingSettings()), InProcessLimits)
    store = make_limits(AccountingSettings.model_validate({"redis_url": shared_url, "redis_failure": "closed"}))
    assert isinstance(store, RedisLimits) and store.failure == "closed"
    asyncio.run(store.close())
    slow = make_limits(AccountingSettings.model_validate({"redis_url": shared_url, "redis_timeout": 7}))
    assert isinstance(slow, RedisLimits)
    kwargs = slow._redis.connection_pool.connection_kwargs
    assert (kwargs["socket_connect_timeout"], kwargs["socket_timeout"]) == (7, 7)
    asyncio.run(slow.close())


# --- several replicas on one Redis -------------------------------------------------------------------


def test_two_replicas_enforce_one_limit_not_two(shared_url: str) -> None:
    ledger = Ledger(spent=USD // 10)

    async def main() -> None:
        a, b = RedisLimits(shared_url, "closed"), RedisLimits(shared_url, "closed")
        try:
            admitted = await asyncio.gather(
                *(s.admit(KEY, rpm=10, tpm=None, tokens_estimate=0) for _ in range(10) for s in (a, b)),
                return_exceptions=True,
            )
            assert sum(isinstance(r, RateEntry) for r in admitted) == 10
            assert all(isinstance(r, RateLimitExceeded) for r in admitted if not isinstance(r, RateEntry))

            await store_reserve(a, USD // 10)
            assert ledger.calls == 1
            await store_reserve(b, USD // 10)
            assert ledger.calls == 1, "the second replica finds the counter the first one seeded"
            results = await asyncio.gather(
                *(store_reserve(s, 3 * USD // 10) for _ in range(5) for s in (a, b)), return_exceptions=True
            )
            # $0.10 spent + $0.20 held leaves $0.70 of $1.00: two of ten $0.30 holds, on whichever replica
            granted = [r for r in results if isinstance(r, Reservation)]
            assert len(granted) == 2
            await a.settle(granted[0], USD // 10)
            assert await b.spent(KEY, "day") == (2 * USD // 10, 5 * USD // 10)
        finally:
            await a.close()
            await b.close()

    async def store_reserve(store: RedisLimits, amount: int) -> Reservation:
        return await reserve(store, amount, ledger, limit=USD)

    asyncio.run(main())


def test_a_dead_replicas_reservations_expire(shared_url: str) -> None:
    async def main() -> None:
        dying = RedisLimits(shared_url, "closed", reservation_ttl=0.4)
        await reserve(dying, 4 * USD, Ledger())
        await dying.close()  # gone without settling
        survivor = RedisLimits(shared_url, "closed")
        try:
            with pytest.raises(BudgetExceeded) as refused:
                await reserve(survivor, 2 * USD, Ledger())
            assert refused.value.reserved_nusd == 4 * USD
            await asyncio.sleep(0.45)
            await reserve(survivor, 5 * USD, Ledger())
        finally:
            await survivor.close()

    asyncio.run(main())


# --- Redis goes away ---------------------------------------------------------------------------------


def record_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits asked of asyncio.sleep from now on (each still waited)."""
    asked: list[float] = []
    real_sleep = asyncio.sleep

    async def recorded(delay: float, result: Any = None) -> Any:
        asked.append(delay)
        return await real_sleep(delay, result)

    monkeypatch.setattr(asyncio, "sleep", recorded)
    return asked


def test_fail_open_serves_without_limits_and_warns_once(
    own_redis: RedisServer, limits_warnings: list[logging.LogRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        store = RedisLimits(own_redis.url, "open")
        try:
            await store.admit(KEY, rpm=1, tpm=None, tokens_estimate=0)
            own_redis.stop()
            sleeps = record_sleeps(monkeypatch)
            for _ in range(5):
                await store.admit(KEY, rpm=1, tpm=None, tokens_estimate=0)
            held = await reserve(store, USD, Ledger())
            assert not held.recorded
            await store.settle(held, USD)
            unrecorded = await store.admit(KEY, rpm=1, tpm=10, tokens_estimate=5)
            assert (unrecorded.in_requests, unrecorded.tokens) == (False, None)
            await store.settle_tokens(unrecorded, 3)  # nothing to settle, no Redis call
            # an unreachable Redis does not hold requests up: one try each (counted below), no waiting
            assert sleeps == [], "no backoff on the request path"
            with pytest.raises(LimitBackendUnavailable):
                await store.spent(KEY, "day")
            assert store.redis_errors == 8
            assert len(limits_warnings) == 1, [r.getMessage() for r in limits_warnings]
            assert "serving requests without limits" in limits_warnings[0].getMessage()

            own_redis.start()  # an empty Redis on the same port: limits apply again
            await store.admit(KEY, rpm=1, tpm=None, tokens_estimate=0)
            with pytest.raises(RateLimitExceeded):
                await store.admit(KEY, rpm=1, tpm=None, tokens_estimate=0)
            assert store.redis_errors == 8
        finally:
            await store.close()

    asyncio.run(main())


def test_fail_closed_refuses_with_503_and_recovers(own_redis: RedisServer) -> None:
    async def main() -> None:
        store = RedisLimits(own_redis.url, "closed")
        try:
            held = await reserve(store, USD, Ledger())
            entry = await store.admit(KEY, rpm=10, tpm=10, tokens_estimate=5)
            refused_entry = await store.admit(KEY, rpm=10, tpm=10, tokens_estimate=5)
            own_redis.stop()
            with pytest.raises(LimitBackendUnavailable) as refused:
                await store.admit(KEY, rpm=10, tpm=None, tokens_estimate=0)
            err = refused.value
            assert (err.status, err.type, err.code) == (503, "api_error", "limits_unavailable")
            with pytest.raises(LimitBackendUnavailable):
                await reserve(store, USD, Ledger())
            # the answer was already given: finishing a request never raises
            await store.settle(held, USD)
            await store.settle_tokens(entry, 3)
            await store.withdraw(refused_entry)
            assert store.redis_errors == 5

            own_redis.start()
            await store.admit(KEY, rpm=10, tpm=None, tokens_estimate=0)
            await reserve(store, USD, Ledger())
        finally:
            await store.close()

    asyncio.run(main())


def test_a_hung_redis_times_out_quickly_and_missed_costs_are_reread_from_the_ledger(
    own_redis: RedisServer,
) -> None:
    ledger = Ledger()

    async def main() -> None:
        store = RedisLimits(own_redis.url, "closed", op_timeout=0.2)
        try:
            held = await reserve(store, 2 * USD, ledger)
            own_redis.pause()
            errors = store.redis_errors
            with pytest.raises(LimitBackendUnavailable):
                await store.admit(KEY, rpm=10, tpm=None, tokens_estimate=0)
            await store.settle(held, 2 * USD)  # lost on the way: Redis never counts it
            # each call gave up at its op_timeout once (a call that waited on would hang the test instead)
            assert store.redis_errors == errors + 2
            ledger.spent = 2 * USD  # ... but the ledger has it
            own_redis.resume()
            with pytest.raises(BudgetExceeded) as refused:
                await reserve(store, 4 * USD, ledger)
            assert ledger.calls == 2, "the counter that missed a cost is read again from the ledger"
            assert refused.value.spent_nusd == 2 * USD
        finally:
            own_redis.resume()
            await store.close()

    asyncio.run(main())
