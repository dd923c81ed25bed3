"""Circuit state shared across replicas through Redis.

When a circuit opens on one replica (a cut-off, a run of failures), the others should not each have to
spend their own requests finding out. ``SharedCircuits`` listens for circuits opening locally and writes
each open to Redis twice: as a key ``<prefix>circuit:<target>`` that lives as long as the cooldown (for
replicas that start later or were disconnected), and as a message on ``<prefix>circuits`` (for replicas
running now). Every replica applies what others report through ``Health.apply_remote_open``, which opens
the circuit locally without announcing it again, so opens do not echo between replicas.

Targets that refused an assistant prefix (their prefill support was unknown, routing/router.py) travel the
same way: a key ``<prefix>prefill:<target>`` kept for ``PREFILL_TTL`` and a message on ``<prefix>prefill``;
each replica marks the target unable with ``Health.refuse_prefill`` (without announcing it again).

Sharing is an optimisation: each replica still keeps its own circuits, so while Redis is unreachable
everything carries on with local knowledge only, and the subscriber reconnects with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
import uuid
from collections.abc import Coroutine
from typing import Any, Literal

import orjson
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from lifeline.routing.health import Health

log = logging.getLogger(__name__)

#: at most one "Redis unreachable" warning per this many seconds
WARN_EVERY = 10.0
#: how long Redis remembers that a target refused a prefix, for replicas that start later (seconds)
PREFILL_TTL = 24 * 3600

# Keep the longer open: a replica's ordinary 30 s open must not shorten another's 10 min cut-off in the key
# that later replicas read. ARGV: the message, its open-until (ms), its cooldown (ms), the channel.
_PUBLISH_OPEN = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, open = pcall(cjson.decode, current)
  local until_ms = ok and type(open) == 'table' and tonumber(open['until_ms'])
  if until_ms and until_ms >= tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[1])
return 1
"""


class SharedCircuits:
    """Tells other replicas when a circuit opens here, and opens circuits here when they say so.

    ``failure`` is accepted for symmetry with the limits store, but both modes behave alike: a circuit is
    advice, not a limit, so an unreachable Redis never refuses a request here.
    """

    def __init__(
        self,
        health: Health,
        url: str,
        failure: Literal["open", "closed"] = "open",
        *,
        prefix: str = "lifeline:",
        connect_timeout: float = 0.5,
        op_timeout: float = 0.5,
        backoff: tuple[float, float] = (0.1, 5.0),
    ) -> None:
        self.health = health
        self.failure = failure
        self.prefix = prefix
        self.channel = f"{prefix}circuits"
        self.prefill_channel = f"{prefix}prefill"
        #: Redis calls that failed (unreachable, timed out)
        self.redis_errors = 0
        #: opens received from other replicas (applied unless the circuit here was already open for longer)
        self.received = 0
        # Tells this process's own messages apart when they come back on the channel.
        self.origin = f"{uuid.uuid4().hex[:12]}-{os.getpid()}"
        self._backoff_min, self._backoff_max = backoff
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=connect_timeout,
            socket_timeout=op_timeout,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )
        self._publish_open = self._redis.register_script(_PUBLISH_OPEN)
        self._subscriber: asyncio.Task[None] | None = None
        # The listener is synchronous, so each publish runs as a task; held here so none is garbage-collected
        # half-way.
        self._publishing: set[asyncio.Task[None]] = set()
        self._first_attempt = asyncio.Event()
        self._last_warning = -math.inf
        self._unwarned = 0

    def _key(self, target: str) -> str:
        return f"{self.prefix}circuit:{target}"

    def _prefill_key(self, target: str) -> str:
        return f"{self.prefix}prefill:{target}"

    async def start(self, wait: float = 2.0) -> None:
        """Start listening, and wait (up to ``wait`` seconds) until the opens already in Redis are applied,
        so that a replica starting now does not send its first requests to a target others have given up on.
        """
        if self._subscriber is not None:
            return
        self.health.open_listeners.append(self._on_open)
        self.health.prefill_listeners.append(self._on_prefill_refused)
        self._subscriber = asyncio.create_task(self._subscribe_forever(), name="lifeline-shared-circuits")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first_attempt.wait(), wait)

    async def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.health.open_listeners.remove(self._on_open)
        with contextlib.suppress(ValueError):
            self.health.prefill_listeners.remove(self._on_prefill_refused)
        if self._subscriber is not None:
            self._subscriber.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._subscriber
            self._subscriber = None
        if self._publishing:
            # Opens already announced locally get a brief chance to reach the others.
            await asyncio.wait(list(self._publishing), timeout=1.0)
            for task in self._publishing:
                task.cancel()
        await self._redis.aclose()

    # --- telling the others --------------------------------------------------------------------------

    def _on_open(self, target: str, cooldown: float, reason: str) -> None:
        self._in_background(self._publish(target, cooldown, reason))

    def _on_prefill_refused(self, target: str) -> None:
        self._in_background(self._publish_prefill_refused(target))

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # Health driven outside an event loop (a script, a unit test): nobody to publish for.
            work.close()
            return
        task = loop.create_task(work)
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def _publish_prefill_refused(self, target: str) -> None:
        message = orjson.dumps({"origin": self.origin, "target": target}).decode()
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.set(self._prefill_key(target), message, ex=PREFILL_TTL)
            pipe.publish(self.prefill_channel, message)
            await pipe.execute()
        except (RedisError, OSError) as exc:
            self._unreachable("publishing a refused prefix", exc)

    async def _publish(self, target: str, cooldown: float, reason: str) -> None:
        if cooldown <= 0:
            return
        cooldown_ms = max(1, math.ceil(cooldown * 1000))
        until_ms = int(time.time() * 1000) + cooldown_ms
        message = orjson.dumps(
            {
                "origin": self.origin,
                "target": target,
                "until_ms": until_ms,
                "cooldown_ms": cooldown_ms,
                "reason": reason,
            }
        ).decode()
        try:
            await self._publish_open(keys=[self._key(target)], args=[message, until_ms, cooldown_ms, self.channel])
        except (RedisError, OSError) as exc:
            self._unreachable("publishing an open circuit", exc)

    # --- hearing from the others ---------------------------------------------------------------------

    async def _subscribe_forever(self) -> None:
        delay = self._backoff_min
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    # Subscribed before reading the keys, so an open published in between is not missed.
                    await pubsub.subscribe(self.channel, self.prefill_channel)
                    await self._apply_existing()
                    self._first_attempt.set()
                    delay = self._backoff_min
                    await self._listen(pubsub)
            except (RedisError, OSError) as exc:
                self._unreachable("listening for open circuits", exc)
            self._first_attempt.set()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._backoff_max)

    async def _listen(self, pubsub: PubSub) -> None:
        while True:
            # A timeout rather than blocking for ever: a read that waited past the socket timeout would be
            # taken for a dead connection.
            message = await pubsub.get_message(timeout=1.0)
            if message is not None and message.get("type") == "message":
                if message.get("channel") == self.prefill_channel:
                    self._apply_prefill_refused(message["data"])
                else:
                    self._apply(message["data"], seconds_left=None)

    async def _apply_existing(self) -> None:
        """Apply every open circuit another replica left in Redis: on start, and after a reconnect, which may
        have missed messages."""
        pattern = f"{_glob_escape(self.prefix)}circuit:*"
        async for key in self._redis.scan_iter(match=pattern, count=100):
            pipe = self._redis.pipeline(transaction=False)
            pipe.get(key)
            pipe.pttl(key)
            value, pttl = await pipe.execute()
            if value is not None and isinstance(pttl, int) and pttl > 0:
                # PTTL is measured by Redis itself: no clock of any replica comes into it.
                self._apply(value, seconds_left=pttl / 1000)
        async for key in self._redis.scan_iter(match=f"{_glob_escape(self.prefix)}prefill:*", count=100):
            refused = await self._redis.get(key)
            if isinstance(refused, str):
                self._apply_prefill_refused(refused)

    def _apply_prefill_refused(self, raw: str) -> None:
        try:
            refused: dict[str, Any] = orjson.loads(raw)
            origin, target = str(refused["origin"]), str(refused["target"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed shared prefill message")
            return
        if origin != self.origin:
            self.health.refuse_prefill(target, announce=False)

    def _apply(self, raw: str, *, seconds_left: float | None) -> None:
        try:
            open_: dict[str, Any] = orjson.loads(raw)
            origin, target, reason = str(open_["origin"]), str(open_["target"]), str(open_.get("reason") or "")
            if seconds_left is None:
                # The sender's wall clock says until when; the cooldown bounds it, so a receiver whose clock is
                # behind cannot be told to wait longer than the sender did.
                seconds_left = min(float(open_["until_ms"]) / 1000 - time.time(), float(open_["cooldown_ms"]) / 1000)
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed shared circuit message")
            return
        if origin == self.origin or seconds_left <= 0:
            return
        self.received += 1
        self.health.apply_remote_open(target, seconds_left, f"{reason} (on another replica)".lstrip())

    def _unreachable(self, doing: str, exc: BaseException) -> None:
        self.redis_errors += 1
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY:
            self._last_warning = now
            also = f" ({self._unwarned} more since the last warning)" if self._unwarned else ""
            log.warning(
                "Redis for shared circuits is unreachable while %s: %s%s; circuits stay local until it is back",
                doing,
                exc.__class__.__name__ + (f": {exc}" if str(exc) else ""),
                also,
                extra={"redis_errors": self.redis_errors},
            )
            self._unwarned = 0
        else:
            self._unwarned += 1


def _glob_escape(text: str) -> str:
    """Escape SCAN MATCH's glob characters, so a prefix is matched literally."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)
