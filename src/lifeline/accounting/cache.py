"""The response cache: an alias's complete answers, kept for exact repeats of a request (docs/continuity.md
"Response cache").

An alias with `cache:` keeps each answer that ended normally under a digest of its normalised request: the
alias, the body without the fields that cannot change the answer (`IGNORED_FIELDS`), and the virtual key
unless the alias shares answers across keys. In `hit` mode a deterministic repeat (temperature 0, or a seed)
is answered from the cache without asking a target; in `stale_on_failure` mode the last good answer is served
only when every target failed. Entries live `ttl` seconds, within `max_entries` and `max_bytes` per alias,
the least recently used evicted first — in this process's memory, or in Redis when `accounting.redis_url` is
set, where every replica reads and writes the same entries. The cache is advice: an unreachable Redis is a
miss (warned about, counted), never a failed request.

The exchange (server/exchange.py) asks `ResponseCache.lookup` once per chat request for a `Lookup`: for a
hit before routing, for a stale answer when routing failed, and to keep the answer that came.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from lifeline.accounting.keys import VirtualKey
from lifeline.config.schema import CacheSettings, Config
from lifeline.errors import AllTargetsBusy, AllTargetsFailed, DeadlineExceeded
from lifeline.metrics import Metrics
from lifeline.protocol.chat import ChatCompletionRequest

log = logging.getLogger("lifeline.cache")

LOOKUPS = "lifeline_cache_lookups_total"
LOOKUPS_HELP = (
    "Response cache lookups by alias and outcome: hit, stale (served after every target failed), miss, "
    "bypass (a request that is not deterministic, on an alias that serves hits)."
)
STORED = "lifeline_cache_stored_total"
STORED_HELP = "Answers kept in the response cache, by alias."
EVICTED = "lifeline_cache_evicted_total"
EVICTED_HELP = "Answers evicted from the response cache to stay within its bounds, by alias."
UNAVAILABLE = "lifeline_cache_unavailable_total"
UNAVAILABLE_HELP = "Response cache operations that failed because its Redis could not be reached."

#: request fields that cannot change the answer: left out of the digest
IGNORED_FIELDS = frozenset({"stream", "stream_options", "user", "metadata", "store"})
#: finish reasons of an answer that ended normally (not cut by max_tokens, not filtered)
COMPLETE_FINISH = frozenset({"stop", "tool_calls", "function_call"})
#: routing failures a stale answer may stand in for: every target failed, was busy, or the deadline passed
RESCUED = (AllTargetsFailed, AllTargetsBusy, DeadlineExceeded)
#: at most one "Redis unreachable" warning per this many seconds
WARN_EVERY = 10.0


def request_digest(alias: str, scope: str, body: dict[str, Any]) -> str:
    """The digest an answer is kept under: `scope` (the key's id, or "" when shared) and the body as the alias
    sees it, keys sorted at every depth, without the fields that cannot change the answer."""
    normal = {k: v for k, v in body.items() if k not in IGNORED_FIELDS}
    normal["model"] = alias
    return hashlib.sha256(orjson.dumps([scope, normal], option=orjson.OPT_SORT_KEYS)).hexdigest()


def deterministic(request: ChatCompletionRequest) -> bool:
    """Whether the client asked for a repeatable answer: temperature 0, or a seed."""
    return request.temperature == 0 or request.seed is not None


def complete(body: dict[str, Any]) -> bool:
    """Whether every choice of a `chat.completion` body ended normally (never a truncated answer)."""
    choices = body.get("choices")
    return (
        isinstance(choices, list)
        and bool(choices)
        and all(isinstance(c, dict) and c.get("finish_reason") in COMPLETE_FINISH for c in choices)
    )


@dataclass(frozen=True, slots=True)
class Cached:
    """A kept answer: the `chat.completion` body a client received, its model and usage, when it was stored."""

    body: dict[str, Any]
    model: str
    usage: dict[str, Any]
    usage_estimated: bool
    stored_at: float

    def dumps(self) -> bytes:
        return orjson.dumps(
            {
                "body": self.body,
                "model": self.model,
                "usage": self.usage,
                "usage_estimated": self.usage_estimated,
                "stored_at": self.stored_at,
            }
        )

    @classmethod
    def loads(cls, raw: bytes) -> Cached | None:
        """The answer `dumps` wrote; None for anything else (an entry of another version reads as a miss)."""
        try:
            data = orjson.loads(raw)
            return cls(
                dict(data["body"]),
                str(data["model"]),
                dict(data["usage"]),
                bool(data["usage_estimated"]),
                float(data["stored_at"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


class Store(Protocol):
    """Where entries live: `space` is one alias's, `now` the cache's clock (Unix seconds)."""

    async def get(self, space: str, digest: str, now: float) -> bytes | None:
        """The entry, if there is one that has not expired; it becomes the most recently used."""
        ...

    async def put(self, space: str, digest: str, value: bytes, now: float, settings: CacheSettings) -> int:
        """Keep `value` until `now + settings.ttl`; how many entries were evicted to stay within the bounds
        (-1: `value` alone is over max_bytes, so it is not kept)."""
        ...

    async def close(self) -> None: ...


@dataclass
class _Space:
    #: digest → (expires at, value), least recently used first
    entries: OrderedDict[str, tuple[float, bytes]] = field(default_factory=OrderedDict)
    size: int = 0

    def drop(self, digest: str) -> None:
        entry = self.entries.pop(digest, None)
        if entry is not None:
            self.size -= len(entry[1])


class MemoryStore:
    """Entries in this process's memory (lost when it stops; a reload keeps them)."""

    def __init__(self) -> None:
        self._spaces: dict[str, _Space] = {}

    async def get(self, space: str, digest: str, now: float) -> bytes | None:
        entries = self._spaces.get(space)
        entry = entries.entries.get(digest) if entries is not None else None
        if entries is None or entry is None:
            return None
        if entry[0] <= now:
            entries.drop(digest)
            return None
        entries.entries.move_to_end(digest)
        return entry[1]

    async def put(self, space: str, digest: str, value: bytes, now: float, settings: CacheSettings) -> int:
        if len(value) > settings.max_bytes:
            return -1
        entries = self._spaces.setdefault(space, _Space())
        entries.drop(digest)
        entries.entries[digest] = (now + settings.ttl, value)
        entries.size += len(value)
        evicted = 0
        while len(entries.entries) > settings.max_entries or entries.size > settings.max_bytes:
            entries.drop(next(iter(entries.entries)))
            evicted += 1
        return evicted

    async def close(self) -> None:
        pass


# One alias's entries in Redis under KEYS[1] (the base): each value at <base>:e:<digest> (with a PX backstop),
# the recency order in the sorted set <base>:lru (scores from the counter <base>:seq), the expiry times in
# <base>:exp (ms on the cache's clock), each entry's size in the hash <base>:size and their total in
# <base>:bytes. Each script is one atomic step, so replicas never see an entry half kept or half evicted.
_DROP = """
local function drop(base, digest)
  redis.call('DEL', base .. ':e:' .. digest)
  redis.call('ZREM', base .. ':lru', digest)
  redis.call('ZREM', base .. ':exp', digest)
  local size = redis.call('HGET', base .. ':size', digest)
  if size then
    redis.call('DECRBY', base .. ':bytes', size)
    redis.call('HDEL', base .. ':size', digest)
  end
end
"""

# ARGV: digest, now (ms)
_GET = (
    _DROP
    + """
local base, digest = KEYS[1], ARGV[1]
local expires = redis.call('ZSCORE', base .. ':exp', digest)
if not expires then return false end
local value = redis.call('GET', base .. ':e:' .. digest)
if tonumber(expires) <= tonumber(ARGV[2]) or not value then
  drop(base, digest)
  return false
end
redis.call('ZADD', base .. ':lru', redis.call('INCR', base .. ':seq'), digest)
return value
"""
)

# ARGV: digest, value, now (ms), expires (ms), max_entries, max_bytes, backstop PX (ms)
_PUT = (
    _DROP
    + """
local base, digest, value = KEYS[1], ARGV[1], ARGV[2]
for _, old in ipairs(redis.call('ZRANGEBYSCORE', base .. ':exp', '-inf', ARGV[3])) do drop(base, old) end
drop(base, digest)
local size = string.len(value)
if size > tonumber(ARGV[6]) then return -1 end
redis.call('SET', base .. ':e:' .. digest, value, 'PX', ARGV[7])
redis.call('ZADD', base .. ':lru', redis.call('INCR', base .. ':seq'), digest)
redis.call('ZADD', base .. ':exp', ARGV[4], digest)
redis.call('HSET', base .. ':size', digest, size)
redis.call('INCRBY', base .. ':bytes', size)
local evicted = 0
while redis.call('ZCARD', base .. ':lru') > tonumber(ARGV[5])
    or tonumber(redis.call('GET', base .. ':bytes') or '0') > tonumber(ARGV[6]) do
  local oldest = redis.call('ZRANGE', base .. ':lru', 0, 0)[1]
  if not oldest then break end
  drop(base, oldest)
  evicted = evicted + 1
end
return evicted
"""
)


class RedisStore:
    """Entries in Redis, shared by every replica pointed at it (see the scripts above)."""

    def __init__(self, url: str, prefix: str = "lifeline:", *, timeout: float = 0.5) -> None:
        self.prefix = prefix
        # No retries inside the client: a request must not wait through a backoff schedule for a cache.
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=Retry(NoBackoff(), 0)
        )
        self._get = self._redis.register_script(_GET)
        self._put = self._redis.register_script(_PUT)

    def _base(self, space: str) -> str:
        return f"{self.prefix}cache:{space}"

    async def get(self, space: str, digest: str, now: float) -> bytes | None:
        value = await self._get(keys=[self._base(space)], args=[digest, math.floor(now * 1000)])
        return bytes(value) if value is not None else None

    async def put(self, space: str, digest: str, value: bytes, now: float, settings: CacheSettings) -> int:
        now_ms = math.floor(now * 1000)
        ttl_ms = math.ceil(settings.ttl * 1000)
        args: list[bytes | str | int] = [
            digest,
            value,
            now_ms,
            now_ms + ttl_ms,
            settings.max_entries,
            settings.max_bytes,
            ttl_ms,
        ]
        return int(await self._put(keys=[self._base(space)], args=args))

    async def close(self) -> None:
        await self._redis.aclose()


class ResponseCache:
    """The response caches of a gateway's aliases (those with `cache:`), over one store."""

    def __init__(self, config: Config, metrics: Metrics, clock: Callable[[], float] = time.time) -> None:
        self.settings = {name: alias.cache for name, alias in config.aliases.items() if alias.cache is not None}
        self.metrics = metrics
        #: Unix seconds; the tests move it instead of waiting
        self.clock = clock
        self.store: Store | None = None
        url = config.accounting.redis_url
        if self.settings:
            self.store = (
                RedisStore(url.get_secret_value(), timeout=config.accounting.redis_timeout) if url else MemoryStore()
            )
        self._last_warning = -math.inf

    def lookup(
        self, alias: str, key: VirtualKey | None, body: dict[str, Any], request: ChatCompletionRequest
    ) -> Lookup | None:
        """This request's use of its alias's cache; None when the alias has none."""
        settings = self.settings.get(alias)
        if settings is None:
            return None
        scope = "" if key is None or settings.shared_across_keys else key.id
        return Lookup(self, alias, settings, request_digest(alias, scope, body), deterministic(request))

    def carry_from(self, old: ResponseCache) -> None:
        """Keep the entries of the gateway this one replaces (a reload), when both keep them in memory."""
        if isinstance(self.store, MemoryStore) and isinstance(old.store, MemoryStore):
            self.store = old.store

    async def get(self, alias: str, digest: str) -> Cached | None:
        if self.store is None:
            return None
        try:
            raw = await self.store.get(quote(alias, safe=""), digest, self.clock())
        except (RedisError, OSError) as exc:
            self._unavailable(exc)
            return None
        return Cached.loads(raw) if raw is not None else None

    async def put(self, alias: str, digest: str, cached: Cached, settings: CacheSettings) -> None:
        if self.store is None:
            return
        try:
            evicted = await self.store.put(quote(alias, safe=""), digest, cached.dumps(), self.clock(), settings)
        except (RedisError, OSError) as exc:
            self._unavailable(exc)
            return
        if evicted >= 0:
            self.metrics.inc(STORED, STORED_HELP, alias=alias)
        if evicted > 0:
            self.metrics.inc(EVICTED, EVICTED_HELP, evicted, alias=alias)

    def count(self, alias: str, outcome: str) -> None:
        self.metrics.inc(LOOKUPS, LOOKUPS_HELP, alias=alias, outcome=outcome)

    def _unavailable(self, exc: BaseException) -> None:
        self.metrics.inc(UNAVAILABLE, UNAVAILABLE_HELP)
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY:
            self._last_warning = now
            log.warning("response cache: Redis unreachable, treated as a miss (%s)", type(exc).__name__)

    async def close(self) -> None:
        if self.store is not None:
            await self.store.close()


class Lookup:
    """One chat request's use of its alias's cache."""

    def __init__(
        self, cache: ResponseCache, alias: str, settings: CacheSettings, digest: str, deterministic: bool
    ) -> None:
        self.cache = cache
        self.alias = alias
        self.settings = settings
        self.digest = digest
        self.deterministic = deterministic
        #: the answer `rescue` found, for the exchange to serve
        self.stale: Cached | None = None

    async def hit(self) -> Cached | None:
        """The kept answer to serve instead of asking a target: in hit mode, to a deterministic request."""
        if not self.settings.hits:
            return None
        if not self.deterministic:
            self.cache.count(self.alias, "bypass")
            return None
        found = await self.cache.get(self.alias, self.digest)
        self.cache.count(self.alias, "miss" if found is None else "hit")
        return found

    async def rescue(self, exc: BaseException) -> bool:
        """Whether the routing's failure `exc` is answered from the cache (the answer is then in `stale`): the
        alias serves stale answers, every target failed, and the cache holds an answer to this request."""
        if not self.settings.stale or not isinstance(exc, RESCUED):
            return False
        self.stale = await self.cache.get(self.alias, self.digest)
        self.cache.count(self.alias, "miss" if self.stale is None else "stale")
        return self.stale is not None

    async def keep(self, body: dict[str, Any], model: str, usage: dict[str, Any], usage_estimated: bool) -> None:
        """Keep a whole answer (`chat.completion` body) if it ended normally — and, on an alias that only serves
        hits, if the request was deterministic (no other could ever be served)."""
        if (self.settings.mode == "hit" and not self.deterministic) or not complete(body):
            return
        cached = Cached(body, model, usage, usage_estimated, self.cache.clock())
        await self.cache.put(self.alias, self.digest, cached, self.settings)
