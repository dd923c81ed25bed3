"""Per-key limits: requests per minute, tokens per minute, and budget reservations.

One interface (``LimitStore``), two stores. ``InProcessLimits`` keeps everything in this process and is
right for a single replica. ``RedisLimits`` keeps it in Redis, each check-and-update one Lua script, so
that any number of replicas enforce *one* limit between them rather than one each.

Rate limits are exact sliding windows: a request is admitted when fewer than ``rpm`` requests were admitted
in the last window, and when the tokens counted in the last window plus this request's estimate (an upper
bound) fit in ``tpm``. Admitting returns the request's ``RateEntry``: once the answer is known its tokens are
settled to the actual count at the time it was admitted (``settle_tokens``), and a request that a later check
refuses (its budget) is taken out of both windows again (``withdraw``). A refused request consumes nothing.

Budgets are reserved before the upstream call (``reserve``) and settled with the actual cost afterwards
(``settle``) or released if nothing was spent (``release``): concurrent requests cannot together overspend,
because each one holds its worst case until it is done. Each period's counter starts from what the ledger
says was spent (``seed``), so a restart or a new replica starts from the truth. Reservations expire on their
own, so those of a replica that died stop counting.

Money is integer nano-USD throughout (lifeline.accounting.records).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import math
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from lifeline.accounting.records import NANO
from lifeline.config.schema import AccountingSettings
from lifeline.errors import BudgetExceeded, LimitBackendUnavailable, RateLimitExceeded, whole_seconds

log = logging.getLogger(__name__)

Period = Literal["day", "month", "total"]
FailureMode = Literal["open", "closed"]

#: how long a reservation holds its amount if it is never settled or released (its process died)
RESERVATION_TTL = 15 * 60.0
#: a period's counter outlives the period by this much, so that requests still in flight when it ends settle
#: into the counter they reserved from
COUNTER_GRACE = timedelta(hours=1)
#: at most one "store unreachable" warning per this many seconds
WARN_EVERY = 10.0

_PERIOD_PREFIX: dict[Period, str] = {"day": "d", "month": "m", "total": "t"}
_PERIOD_WORDS: dict[Period, str] = {"day": "per day", "month": "per month", "total": "in total"}


def format_usd(nusd: int) -> str:
    """$4.99, $5.00, $0.000123: cents when that is exact, more digits when a small amount needs them."""
    text = f"{abs(nusd) / NANO:.6f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"{'-' if nusd < 0 else ''}${whole}.{frac.ljust(2, '0')}"


def _rpm_refused(rpm: int, wait: float) -> RateLimitExceeded:
    return RateLimitExceeded(
        f"Requests per minute limit of {rpm} reached for this key; try again in {whole_seconds(wait)} s.",
        limit="rpm",
        retry_after=wait,
    )


def _tpm_refused(tpm: int, counted: int, estimate: int, wait: float | None) -> RateLimitExceeded:
    if wait is None:
        # No amount of waiting helps: the request alone is over the limit (OpenAI answers this with a 429
        # too), so there is no Retry-After to give.
        return RateLimitExceeded(
            f"Tokens per minute limit of {tpm} reached for this key: this request needs about {estimate} "
            "tokens, more than the limit allows in a minute.",
            limit="tpm",
            retry_after=None,
        )
    return RateLimitExceeded(
        f"Tokens per minute limit of {tpm} reached for this key ({counted} counted in the last minute, this "
        f"request needs about {estimate}); try again in {whole_seconds(wait)} s.",
        limit="tpm",
        retry_after=wait,
    )


def _budget_refused(
    *, limit_nusd: int, period: Period, spent_nusd: int, reserved_nusd: int, amount_nusd: int
) -> BudgetExceeded:
    return BudgetExceeded(
        f"Budget of {format_usd(limit_nusd)} {_PERIOD_WORDS[period]} for this key is exhausted "
        f"({format_usd(spent_nusd)} spent, {format_usd(reserved_nusd)} reserved in flight; "
        f"this request needs up to {format_usd(amount_nusd)}).",
        limit_nusd=limit_nusd,
        period=period,
        spent_nusd=spent_nusd,
        reserved_nusd=reserved_nusd,
        amount_nusd=amount_nusd,
    )


# --- periods -----------------------------------------------------------------------------------------


def _as_utc(now: datetime) -> datetime:
    # A naive datetime is taken to be UTC already rather than local time: periods are UTC everywhere.
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def period_id(period: Period, now: datetime) -> str:
    """The id of the budget period containing ``now``: "d:2025-03-31", "m:2025-03" or "t" (UTC)."""
    now = _as_utc(now)
    if period == "day":
        return f"d:{now:%Y-%m-%d}"
    if period == "month":
        return f"m:{now:%Y-%m}"
    return "t"


def period_end(period: Period, now: datetime) -> datetime | None:
    """When the period containing ``now`` ends (UTC); None for "total", which never does."""
    now = _as_utc(now)
    if period == "day":
        return datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
    if period == "month":
        return datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    return None


def _utcnow() -> datetime:
    return datetime.now(UTC)


# --- the interface -----------------------------------------------------------------------------------


@dataclass(eq=False)
class RateEntry:
    """One admitted request's place in its key's rate windows: one request in the RPM window, its tokens in
    the TPM window, both under one id, so that they can be settled or withdrawn exactly."""

    key_id: str
    id: str
    #: counted in the requests-per-minute window
    in_requests: bool
    #: what the tokens-per-minute window holds for it; None when it is not counted there
    tokens: int | None
    #: set by the first settle_tokens or withdraw; any later one does nothing
    finished: bool = False


@dataclass(eq=False)
class Reservation:
    """Money held for one request until it is settled or released."""

    key_id: str
    period_id: str
    amount_nusd: int
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: False when the store could not record it (Redis unreachable, failing open): settling it spends
    #: nothing in the store, and the period's counter is re-read from the ledger once Redis is back
    recorded: bool = True
    #: set by the first settle or release; any later one does nothing
    finished: bool = False


class LimitStore(Protocol):
    async def admit(self, key_id: str, *, rpm: int | None, tpm: int | None, tokens_estimate: int) -> RateEntry:
        """Count one request against the key's rate limits, or raise RateLimitExceeded (counting nothing)."""
        ...

    async def settle_tokens(self, entry: RateEntry, actual_tokens: int) -> None:
        """Replace the request's token estimate by its actual count, at the time it was admitted. An entry that
        has left the window already stays out: it was counted at its estimate for a whole window."""
        ...

    async def withdraw(self, entry: RateEntry) -> None:
        """Take the request out of both windows: a later check (its budget) refused it, so it counts against
        no rate limit."""
        ...

    async def reserve(
        self,
        key_id: str,
        *,
        limit_nusd: int,
        period: Period,
        amount_nusd: int,
        seed: Callable[[], Awaitable[int]],
    ) -> Reservation:
        """Hold ``amount_nusd`` of the key's budget for this period, or raise BudgetExceeded. ``seed`` gives
        the ledger's spend in the current period; it is awaited only when the store has no counter yet."""
        ...

    async def settle(self, reservation: Reservation, actual_nusd: int) -> None:
        """Replace the hold with the actual cost. A second settle (or a settle after release) does nothing."""
        ...

    async def release(self, reservation: Reservation) -> None:
        """Drop the hold; nothing was spent."""
        ...

    async def spent(self, key_id: str, period: Period) -> tuple[int, int]:
        """(spent, reserved) in nano-USD for the key's current period, as this store counts them."""
        ...

    async def close(self) -> None: ...


def make_limits(settings: AccountingSettings) -> LimitStore:
    """Redis when a URL is configured (replicas share limits), else this process's memory."""
    if settings.redis_url is not None:
        timeout = settings.redis_timeout
        return RedisLimits(
            settings.redis_url.get_secret_value(), settings.redis_failure, connect_timeout=timeout, op_timeout=timeout
        )
    return InProcessLimits()


class _SeedOnce:
    """Concurrent requests that find no counter share one call to the ledger instead of making one each."""

    def __init__(self) -> None:
        self._pending: dict[str, asyncio.Future[int]] = {}

    async def __call__(self, name: str, seed: Callable[[], Awaitable[int]]) -> int:
        pending = self._pending.get(name)
        if pending is None:
            pending = self._pending[name] = asyncio.ensure_future(seed())

            def forget(done: asyncio.Future[int]) -> None:
                if self._pending.get(name) is done:
                    del self._pending[name]

            pending.add_done_callback(forget)
        # shield: one waiter being cancelled must not cancel the ledger read the others are waiting for
        return int(await asyncio.shield(pending))


# --- in process --------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    id: str
    at: float
    amount: int


class _Window:
    """A sliding window of entries (requests count 1 each, tokens their number), their running total, and
    the entries still in it by id, to settle or withdraw one."""

    def __init__(self) -> None:
        self.entries: collections.deque[_Entry] = collections.deque()
        self.live: dict[str, _Entry] = {}
        self.total = 0

    def expire(self, horizon: float) -> None:
        while self.entries and self.entries[0].at <= horizon:
            entry = self.entries.popleft()
            self.total -= entry.amount
            del self.live[entry.id]

    def add(self, entry_id: str, now: float, amount: int) -> None:
        entry = _Entry(entry_id, now, amount)
        self.entries.append(entry)
        self.live[entry_id] = entry
        self.total += amount

    def correct(self, entry_id: str, amount: int) -> None:
        """Give a live entry a new amount, where it stands in the window; nothing once it has left it."""
        entry = self.live.get(entry_id)
        if entry is not None:
            self.total += amount - entry.amount
            entry.amount = amount

    def wait_until_fits(self, allowed: int, window: float, now: float) -> float:
        """Seconds until the counted total falls to ``allowed`` or below as old entries leave the window."""
        left = self.total
        for entry in self.entries:
            left -= entry.amount
            if max(left, 0) <= allowed:
                return entry.at + window - now
        return window


@dataclass
class _Budget:
    period_id: str
    spent: int
    #: reservation id -> (amount, monotonic deadline)
    held: dict[str, tuple[int, float]] = field(default_factory=dict)

    def reserved(self, now: float) -> int:
        for rid in [rid for rid, (_, deadline) in self.held.items() if deadline <= now]:
            del self.held[rid]
        return sum(amount for amount, _ in self.held.values())


class InProcessLimits:
    """Limits kept in this process's memory. Safe for any number of tasks on one event loop: every
    check-and-update runs without an await in between, so it cannot interleave with another."""

    def __init__(
        self,
        *,
        window: float = 60.0,
        reservation_ttl: float = RESERVATION_TTL,
        utcnow: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._window = window
        self._reservation_ttl = reservation_ttl
        self._utcnow = utcnow
        self._requests: dict[str, _Window] = {}
        self._tokens: dict[str, _Window] = {}
        self._sequence = itertools.count()
        # Keyed by (key, period kind) rather than period id, so the previous period's counter is replaced
        # when a new one starts instead of piling up.
        self._budgets: dict[tuple[str, str], _Budget] = {}
        self._seed_once = _SeedOnce()

    async def admit(self, key_id: str, *, rpm: int | None, tpm: int | None, tokens_estimate: int) -> RateEntry:
        now = time.monotonic()
        horizon = now - self._window
        estimate = max(0, tokens_estimate)
        requests = tokens = None
        if rpm is not None:
            requests = self._requests.setdefault(key_id, _Window())
            requests.expire(horizon)
            if requests.total >= rpm:
                # The request that frees a slot is the one `rpm` places from the newest.
                wait = requests.wait_until_fits(rpm - 1, self._window, now) if rpm > 0 else self._window
                raise _rpm_refused(rpm, wait)
        if tpm is not None:
            tokens = self._tokens.setdefault(key_id, _Window())
            tokens.expire(horizon)
            counted = max(tokens.total, 0)
            if counted + estimate > tpm:
                fits_in = tokens.wait_until_fits(tpm - estimate, self._window, now) if estimate <= tpm else None
                raise _tpm_refused(tpm, counted, estimate, fits_in)
        entry = RateEntry(key_id, str(next(self._sequence)), in_requests=requests is not None, tokens=None)
        if requests is not None:
            requests.add(entry.id, now, 1)
        if tokens is not None:
            tokens.add(entry.id, now, estimate)
            entry.tokens = estimate
        return entry

    async def settle_tokens(self, entry: RateEntry, actual_tokens: int) -> None:
        if entry.finished:
            return
        entry.finished = True
        tokens = self._tokens.get(entry.key_id)
        if tokens is not None and entry.tokens is not None:
            tokens.correct(entry.id, max(0, actual_tokens))

    async def withdraw(self, entry: RateEntry) -> None:
        if entry.finished:
            return
        entry.finished = True
        # Amount 0 rather than removal: the deque stays in time order without a search through it.
        for windows, counted in ((self._requests, entry.in_requests), (self._tokens, entry.tokens is not None)):
            window = windows.get(entry.key_id)
            if window is not None and counted:
                window.correct(entry.id, 0)

    async def reserve(
        self,
        key_id: str,
        *,
        limit_nusd: int,
        period: Period,
        amount_nusd: int,
        seed: Callable[[], Awaitable[int]],
    ) -> Reservation:
        pid = period_id(period, self._utcnow())
        slot = (key_id, _PERIOD_PREFIX[period])
        budget = self._budgets.get(slot)
        if budget is None or budget.period_id != pid:
            spent = await self._seed_once(f"{key_id}|{pid}", seed)
            budget = self._budgets.get(slot)
            # Another task may have created the counter while this one awaited the ledger.
            if budget is None or budget.period_id != pid:
                budget = self._budgets[slot] = _Budget(pid, spent)
        now = time.monotonic()
        reserved = budget.reserved(now)
        if budget.spent + reserved + amount_nusd > limit_nusd:
            raise _budget_refused(
                limit_nusd=limit_nusd,
                period=period,
                spent_nusd=budget.spent,
                reserved_nusd=reserved,
                amount_nusd=amount_nusd,
            )
        reservation = Reservation(key_id, pid, amount_nusd)
        budget.held[reservation.id] = (amount_nusd, now + self._reservation_ttl)
        return reservation

    def has_counter(self, key_id: str, period: Period) -> bool:
        """Whether the key has a counter for the current period (a reserve would not await its seed)."""
        budget = self._budgets.get((key_id, _PERIOD_PREFIX[period]))
        return budget is not None and budget.period_id == period_id(period, self._utcnow())

    def _budget_of(self, reservation: Reservation) -> _Budget | None:
        budget = self._budgets.get((reservation.key_id, reservation.period_id.split(":", 1)[0]))
        return budget if budget is not None and budget.period_id == reservation.period_id else None

    async def settle(self, reservation: Reservation, actual_nusd: int) -> None:
        if reservation.finished:
            return
        reservation.finished = True
        budget = self._budget_of(reservation)
        if budget is not None:
            budget.held.pop(reservation.id, None)
            # Counted even when the hold already expired: the money was spent all the same.
            budget.spent += actual_nusd

    async def release(self, reservation: Reservation) -> None:
        if reservation.finished:
            return
        reservation.finished = True
        budget = self._budget_of(reservation)
        if budget is not None:
            budget.held.pop(reservation.id, None)

    async def spent(self, key_id: str, period: Period) -> tuple[int, int]:
        budget = self._budgets.get((key_id, _PERIOD_PREFIX[period]))
        if budget is None or budget.period_id != period_id(period, self._utcnow()):
            return 0, 0
        return budget.spent, budget.reserved(time.monotonic())

    async def close(self) -> None:
        return None


# --- Redis -------------------------------------------------------------------------------------------

# Every script reads the time from Redis itself, so replicas with drifting clocks still share one window.
# Times are integer microseconds. Entries that carry an amount are "<id>:<amount>" so the amount travels
# with the entry; amounts are passed in as strings and never formatted by Lua, whose tostring would turn
# large numbers into 1e+15.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
"""

_AMOUNT = """
local function amount(entry) return tonumber(string.match(entry, ':([^:]+)$')) end
"""

# KEYS: request log (zset), token log (zset), token total
# ARGV: window µs, rpm (-1: none), tpm (-1: none), estimate, entry id
# -> {0} admitted | {1, µs until a request slot frees} | {2, µs until the tokens fit, counted}
#    | {3, 0, counted} the estimate alone is over tpm
_ADMIT = (
    _NOW
    + _AMOUNT
    + """
local window = tonumber(ARGV[1])
local rpm = tonumber(ARGV[2])
local tpm = tonumber(ARGV[3])
local estimate = tonumber(ARGV[4])
local horizon = now - window
local ttl = math.ceil(window / 1000) + 1000
if rpm >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', horizon)
  local n = redis.call('ZCARD', KEYS[1])
  if n >= rpm then
    if rpm == 0 then return {1, window} end
    local frees = redis.call('ZRANGE', KEYS[1], n - rpm, n - rpm, 'WITHSCORES')
    return {1, tonumber(frees[2]) + window - now}
  end
end
if tpm >= 0 then
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', horizon)
  if #expired > 0 then
    local gone = 0
    for _, entry in ipairs(expired) do gone = gone + amount(entry) end
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', horizon)
    redis.call('DECRBY', KEYS[3], gone)
  end
  local total = tonumber(redis.call('GET', KEYS[3]) or '0')
  -- an evicted or expired log with a surviving total would otherwise count tokens forever
  if redis.call('EXISTS', KEYS[2]) == 0 then total = 0 end
  local counted = math.max(total, 0)
  if counted + estimate > tpm then
    if estimate > tpm then return {3, 0, counted} end
    local entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
    local left = total
    for i = 1, #entries, 2 do
      left = left - amount(entries[i])
      if math.max(left, 0) + estimate <= tpm then return {2, tonumber(entries[i + 1]) + window - now, counted} end
    end
    return {2, window, counted}
  end
  redis.call('ZADD', KEYS[2], now, ARGV[5] .. ':' .. ARGV[4])
  if total == 0 then redis.call('SET', KEYS[3], ARGV[4]) else redis.call('INCRBY', KEYS[3], ARGV[4]) end
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('PEXPIRE', KEYS[3], ttl)
end
if rpm >= 0 then
  redis.call('ZADD', KEYS[1], now, ARGV[5])
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return {0}
"""
)

# A token entry is settled where it stands in the window (same score, new amount); one that has left the
# window stays out. The total is only ever changed when it exists: a DECRBY or INCRBY on a missing key would
# create one without its expiry.
# KEYS: token log, token total; ARGV: the entry as it stands, the entry settled, actual - estimate
_SETTLE_TOKENS = """
local at = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not at then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], at, ARGV[2])
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('INCRBY', KEYS[2], ARGV[3]) end
return 1
"""

# KEYS: request log, token log, token total; ARGV: request entry ('' = none), token entry ('' = none), tokens
_WITHDRAW = """
if ARGV[1] ~= '' then redis.call('ZREM', KEYS[1], ARGV[1]) end
if ARGV[2] ~= '' and redis.call('ZREM', KEYS[2], ARGV[2]) == 1 and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('DECRBY', KEYS[3], ARGV[3])
end
return 1
"""

# KEYS: spent counter, holds (zset: "<id>:<amount>" scored by deadline µs)
# ARGV: limit, amount, hold entry, hold ttl µs, seed ('' = none), counter ttl ms ('' = never expires)
# -> {-1} no counter, seed needed | {0, spent, reserved} refused | {1, spent, reserved} held
_RESERVE = (
    _NOW
    + _AMOUNT
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[5] == '' then return {-1} end
  if ARGV[6] == '' then redis.call('SET', KEYS[1], ARGV[5]) else redis.call('SET', KEYS[1], ARGV[5], 'PX', ARGV[6]) end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local reserved = 0
for _, entry in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do reserved = reserved + amount(entry) end
local spent = tonumber(redis.call('GET', KEYS[1]))
if spent + reserved + tonumber(ARGV[2]) > tonumber(ARGV[1]) then return {0, spent, reserved} end
local ttl = tonumber(ARGV[4])
redis.call('ZADD', KEYS[2], now + ttl, ARGV[3])
redis.call('PEXPIRE', KEYS[2], math.ceil(ttl / 1000) + 60000)
return {1, spent, reserved + tonumber(ARGV[2])}
"""
)

# KEYS: spent counter, holds; ARGV: hold entry, actual cost
_SETTLE = """
redis.call('ZREM', KEYS[2], ARGV[1])
-- No counter means the period is over or the counter was dropped: the ledger has the cost, and the next
-- seed reads it from there. INCRBY here would create a counter without its expiry and without the past.
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('INCRBY', KEYS[1], ARGV[2]) end
return 1
"""

# KEYS: spent counter, holds -> {spent, reserved}
_SPENT = (
    _NOW
    + _AMOUNT
    + """
local reserved = 0
for _, entry in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], now + 1, '+inf')) do reserved = reserved + amount(entry) end
return {tonumber(redis.call('GET', KEYS[1]) or '0'), reserved}
"""
)


class RedisLimits:
    """Limits kept in Redis and shared by every replica pointed at it.

    Each check-and-update is one Lua script (EVALSHA, loaded on first use and again after a Redis restart),
    so two replicas admitting at the same moment cannot both take the last slot. When Redis cannot be
    reached within the short timeouts, ``failure="open"`` lets requests through unlimited (a warning at most
    every 10 s, ``redis_errors`` counts them) and ``failure="closed"`` refuses them with
    LimitBackendUnavailable. Settling, releasing and token corrections never raise: the answer has already
    been given by then.
    """

    def __init__(
        self,
        url: str,
        failure: FailureMode = "open",
        prefix: str = "lifeline:",
        *,
        window: float = 60.0,
        reservation_ttl: float = RESERVATION_TTL,
        connect_timeout: float = 0.5,
        op_timeout: float = 0.5,
        utcnow: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.failure = failure
        self.prefix = prefix
        #: Redis calls that failed (unreachable, timed out, refused)
        self.redis_errors = 0
        self._window_us = round(window * 1_000_000)
        self._reservation_ttl_us = round(reservation_ttl * 1_000_000)
        self._utcnow = utcnow
        # No retries inside the client: a request must not wait through a backoff schedule for a store that is
        # down; the failure mode decides what happens instead.
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=connect_timeout,
            socket_timeout=op_timeout,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )
        self._admit = self._redis.register_script(_ADMIT)
        self._settle_tokens = self._redis.register_script(_SETTLE_TOKENS)
        self._withdraw = self._redis.register_script(_WITHDRAW)
        self._reserve = self._redis.register_script(_RESERVE)
        self._settle = self._redis.register_script(_SETTLE)
        self._spent = self._redis.register_script(_SPENT)
        # Entry ids unique across replicas without a round trip for a Redis-side sequence.
        self._origin = f"{uuid.uuid4().hex[:12]}-{os.getpid()}"
        self._sequence = itertools.count()
        self._seed_once = _SeedOnce()
        # Counters that missed a cost while Redis was unreachable: dropped when it is back, so the next
        # reservation re-reads them from the ledger instead of under-counting for the rest of the period.
        self._stale: set[str] = set()
        self._last_warning = -math.inf
        self._unwarned = 0

    def _entry_id(self) -> str:
        return f"{self._origin}-{next(self._sequence)}"

    def _budget_keys(self, key_id: str, pid: str) -> list[str]:
        counter = f"{self.prefix}budget:{key_id}:{pid}"
        return [counter, f"{counter}:held"]

    def _unreachable(self, op: str, exc: BaseException, *, refuse: bool) -> None:
        self.redis_errors += 1
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY:
            self._last_warning = now
            also = f" ({self._unwarned} more since the last warning)" if self._unwarned else ""
            then = "serving requests without limits" if self.failure == "open" else "refusing requests"
            log.warning(
                "Redis for limits is unreachable during %s: %s%s; %s",
                op,
                exc.__class__.__name__ + (f": {exc}" if str(exc) else ""),
                also,
                then,
                extra={"redis_errors": self.redis_errors},
            )
            self._unwarned = 0
        else:
            self._unwarned += 1
        if refuse and self.failure == "closed":
            raise LimitBackendUnavailable() from exc

    def _rate_keys(self, key_id: str) -> list[str]:
        return [f"{self.prefix}rpm:{key_id}", f"{self.prefix}tpm:{key_id}", f"{self.prefix}tpm:{key_id}:total"]

    async def admit(self, key_id: str, *, rpm: int | None, tpm: int | None, tokens_estimate: int) -> RateEntry:
        # Until Redis has counted it (failing open), the entry is in neither window.
        entry = RateEntry(key_id, self._entry_id(), in_requests=False, tokens=None)
        if rpm is None and tpm is None:
            return entry
        estimate = max(0, tokens_estimate)
        args: list[int | str] = [
            self._window_us,
            -1 if rpm is None else rpm,
            -1 if tpm is None else tpm,
            estimate,
            entry.id,
        ]
        try:
            result: list[Any] = await self._admit(keys=self._rate_keys(key_id), args=args)
        except (RedisError, OSError) as exc:
            self._unreachable("admit", exc, refuse=True)
            return entry
        verdict = int(result[0])
        if verdict == 1:
            assert rpm is not None
            raise _rpm_refused(rpm, int(result[1]) / 1_000_000)
        if verdict in (2, 3):
            assert tpm is not None
            wait = int(result[1]) / 1_000_000 if verdict == 2 else None
            raise _tpm_refused(tpm, int(result[2]), estimate, wait)
        entry.in_requests = rpm is not None
        entry.tokens = estimate if tpm is not None else None
        return entry

    async def settle_tokens(self, entry: RateEntry, actual_tokens: int) -> None:
        if entry.finished:
            return
        entry.finished = True
        if entry.tokens is None:
            return
        actual = max(0, actual_tokens)
        if actual == entry.tokens:
            return
        keys = self._rate_keys(entry.key_id)[1:]
        args: list[str | int] = [f"{entry.id}:{entry.tokens}", f"{entry.id}:{actual}", actual - entry.tokens]
        try:
            await self._settle_tokens(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            # The estimate stays counted until it leaves the window: an upper bound, on the side of the limit.
            self._unreachable("settle_tokens", exc, refuse=False)

    async def withdraw(self, entry: RateEntry) -> None:
        if entry.finished:
            return
        entry.finished = True
        if not entry.in_requests and entry.tokens is None:
            return
        tokens = entry.tokens or 0
        token_entry = f"{entry.id}:{tokens}" if entry.tokens is not None else ""
        args: list[str | int] = [entry.id if entry.in_requests else "", token_entry, tokens]
        try:
            await self._withdraw(keys=self._rate_keys(entry.key_id), args=args)
        except (RedisError, OSError) as exc:
            # The entries leave the window by themselves; until then they count, on the side of the limit.
            self._unreachable("withdraw", exc, refuse=False)

    async def reserve(
        self,
        key_id: str,
        *,
        limit_nusd: int,
        period: Period,
        amount_nusd: int,
        seed: Callable[[], Awaitable[int]],
    ) -> Reservation:
        now = self._utcnow()
        pid = period_id(period, now)
        end = period_end(period, now)
        keys = self._budget_keys(key_id, pid)
        reservation = Reservation(key_id, pid, amount_nusd)
        args: list[Any] = [limit_nusd, amount_nusd, f"{reservation.id}:{amount_nusd}", self._reservation_ttl_us, "", ""]
        result = await self._try_reserve(keys, args)
        if result is not None and int(result[0]) == -1:
            # The ledger is another database, so it is read outside the script; the script then creates the
            # counter only if no other task or replica did so meanwhile (SET NX in effect) and reserves at once.
            spent = await self._seed_once(keys[0], seed)
            ttl_ms = "" if end is None else max(1, math.ceil((end + COUNTER_GRACE - now).total_seconds() * 1000))
            args[4:] = [spent, ttl_ms]
            result = await self._try_reserve(keys, args)
        if result is None:
            self._stale.add(keys[0])
            reservation.recorded = False
            return reservation
        if int(result[0]) != 1:
            raise _budget_refused(
                limit_nusd=limit_nusd,
                period=period,
                spent_nusd=int(result[1]),
                reserved_nusd=int(result[2]),
                amount_nusd=amount_nusd,
            )
        return reservation

    async def _try_reserve(self, keys: list[str], args: list[Any]) -> list[Any] | None:
        """The reserve script's answer, or None when Redis is unreachable and failing open."""
        try:
            if self._stale:
                stale = list(self._stale)
                await self._redis.delete(*stale)
                self._stale.difference_update(stale)
            result: list[Any] = await self._reserve(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            self._unreachable("reserve", exc, refuse=True)
            return None
        return result

    async def settle(self, reservation: Reservation, actual_nusd: int) -> None:
        if reservation.finished:
            return
        reservation.finished = True
        keys = self._budget_keys(reservation.key_id, reservation.period_id)
        if not reservation.recorded:
            self._stale.add(keys[0])
            return
        try:
            await self._settle(keys=keys, args=[f"{reservation.id}:{reservation.amount_nusd}", actual_nusd])
        except (RedisError, OSError) as exc:
            self._unreachable("settle", exc, refuse=False)
            self._stale.add(keys[0])

    async def release(self, reservation: Reservation) -> None:
        if reservation.finished:
            return
        reservation.finished = True
        if not reservation.recorded:
            return
        _, held = self._budget_keys(reservation.key_id, reservation.period_id)
        try:
            await self._redis.zrem(held, f"{reservation.id}:{reservation.amount_nusd}")
        except (RedisError, OSError) as exc:
            # The hold expires by itself; until then it keeps counting, which errs on the side of the budget.
            self._unreachable("release", exc, refuse=False)

    async def spent(self, key_id: str, period: Period) -> tuple[int, int]:
        keys = self._budget_keys(key_id, period_id(period, self._utcnow()))
        try:
            result: list[Any] = await self._spent(keys=keys)
        except (RedisError, OSError) as exc:
            # An admin view has no request to let through: say that the numbers are unavailable.
            self._unreachable("spent", exc, refuse=False)
            raise LimitBackendUnavailable() from exc
        return int(result[0]), int(result[1])

    async def close(self) -> None:
        await self._redis.aclose()
