"""What the worker processes of one machine share (`lifeline serve --workers N`, server/workers.py), without Redis.

The supervisor runs a `StateService` on a Unix socket in a private directory; every worker holds one
`StateLink` to it. The service keeps the machine's rate-limit windows and budget reservations in one
`InProcessLimits` (so one key has one limit across the workers, with the exact semantics of a single
process), and relays circuits: a worker whose circuit opens (a cut-off above all) tells the service, which
remembers the open for its cooldown (for a worker that starts later) and passes it on to every other worker
at once; the same goes for targets that refused an assistant prefix, for an operator's drain, cut or heal
of a target (POST /admin/targets/{name}, the console) and for a reload (POST /admin/reload). This is the
replica mechanism of routing/shared.py with the supervisor in Redis's place, and for circuits and limits it
stands aside whenever `accounting.redis_url` is set: then Redis is shared by every worker of every machine already.

The wire is a frame per message: a 4-byte big-endian length and an orjson object. A request carrying an
"id" is answered with that id; everything else (settling tokens and money, announcing an open) is one-way,
and ordered on the one connection, so a settle always lands after the admit it settles. Each side queues the
frames it sends during one turn of its event loop and writes them at the end of the turn as one write (one
system call for every admit, settle and answer of that turn, in their order), and reads whatever has arrived
at once, splitting it into frames (`_Frames`) rather than reading each frame's length and body apart. Each worker talks
over one connection, so what a request costs is one round trip on a Unix socket for each check that admits
(only keys with rpm/tpm or a budget pay it): bench/workers_state.py measures it. The budget reservations a
worker holds are kept per connection: when a worker's link closes (it exited, or was killed outright), what it
still held is released at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from lifeline.accounting.limits import (
    FailureMode,
    InProcessLimits,
    Period,
    RateEntry,
    Reservation,
    _SeedOnce,
)
from lifeline.errors import BudgetExceeded, LimitBackendUnavailable, RateLimitExceeded
from lifeline.metrics import Family, Labels, Metrics, render_families
from lifeline.routing.health import Health

log = logging.getLogger("lifeline.server")

_LENGTH = struct.Struct(">I")
#: at most one "supervisor unreachable" warning per this many seconds
WARN_EVERY = 10.0
#: how long a scrape waits for the other workers' metrics; one that has not answered by then is left out
SCRAPE_WAIT = 2.0
#: header naming the worker that answered (its number, 1..N: nothing secret); uvicorn adds it to every
#: response as a default header, at no cost per request
WORKER_HEADER = "x-lifeline-worker"


def _frame(message: dict[str, Any]) -> bytes:
    body = orjson.dumps(message)
    return _LENGTH.pack(len(body)) + body


#: how much one read takes from the socket at most (every whole frame in it is handled before the next read)
READ_CHUNK = 256 * 1024


class _Frames:
    """Splits what arrives on a link into messages: any number of frames per read, a frame across reads."""

    __slots__ = ("_rest",)

    def __init__(self) -> None:
        #: the start of a frame not yet complete
        self._rest = b""

    @property
    def partial(self) -> bool:
        return bool(self._rest)

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        if self._rest:
            data = self._rest + data
        messages: list[dict[str, Any]] = []
        start, end = 0, len(data)
        unpack = _LENGTH.unpack_from
        while end - start >= 4:
            (size,) = unpack(data, start)
            body = start + 4
            if end - body < size:
                break
            messages.append(orjson.loads(data[body : body + size]))
            start = body + size
        self._rest = data[start:] if start < end else b""
        return messages


class _Outbox:
    """The frames one side sends during a turn of the event loop, written as one at the end of the turn."""

    __slots__ = ("_frames", "_loop", "_writer")

    def __init__(self, writer: asyncio.StreamWriter, loop: asyncio.AbstractEventLoop) -> None:
        self._writer = writer
        self._loop = loop
        self._frames: list[bytes] = []

    def put(self, message: dict[str, Any]) -> None:
        if not self._frames:
            self._loop.call_soon(self.flush)
        self._frames.append(_frame(message))

    def flush(self) -> None:
        frames, self._frames = self._frames, []
        if frames and not self._writer.is_closing():
            self._writer.write(frames[0] if len(frames) == 1 else b"".join(frames))


# --- the supervisor's side -------------------------------------------------------------------------


class _Peer:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.outbox = _Outbox(writer, asyncio.get_running_loop())
        self.worker: int | None = None
        #: budget reservations this worker holds (not yet settled or released): id -> the reservation
        self.held: dict[str, Reservation] = {}

    def send(self, message: dict[str, Any]) -> None:
        if not self.writer.is_closing():
            self.outbox.put(message)

    def close(self) -> None:
        self.outbox.flush()
        self.writer.close()


class StateService:
    """The machine's limits and circuits, served to the workers over a Unix socket at `path`."""

    def __init__(
        self,
        path: str,
        *,
        on_ready: Callable[[int], None] | None = None,
        on_reload: Callable[[int], None] | None = None,
        on_engine: Callable[[int, dict[str, Any]], Awaitable[dict[str, Any]]] | None = None,
        on_engine_keys: Callable[[int, list[str]], Awaitable[None]] | None = None,
        engine_metrics: Callable[[], Awaitable[list[Family]]] | None = None,
    ) -> None:
        self.path = path
        #: a worker's reload asks which of its `llamacpp` targets the engine process serves, and under what name
        self._on_engine = on_engine
        #: a worker says which engine names its gateway uses after a reload's swap
        self._on_engine_keys = on_engine_keys
        #: the engine process's metrics, for a scrape (once for the machine)
        self._engine_metrics = engine_metrics
        self.limits = InProcessLimits()
        #: operators' overrides (drain, cut) made on one worker, for every worker: target -> the request's fields
        self.overrides: dict[str, dict[str, Any]] = {}
        self._on_reload = on_reload
        #: open circuits: target -> (monotonic deadline, reason)
        self.opens: dict[str, tuple[float, str]] = {}
        self.prefill_refused: set[str] = set()
        self._on_ready = on_ready
        self._peers: set[_Peer] = set()
        self._server: asyncio.AbstractServer | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        #: scrapes under way: ticket -> each worker asked -> its families
        self._scrapes: dict[int, dict[_Peer, asyncio.Future[Any]]] = {}
        self._tickets = itertools.count(1)

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, path=self.path)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for peer in list(self._peers):
            peer.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        peer = _Peer(writer)
        self._peers.add(peer)
        frames = _Frames()
        try:
            # Every whole frame that has arrived is handled in order, its answer queued (peer.send): the answers
            # of one read leave together at the end of the turn. A frame cut off by the link closing (a worker
            # killed mid-write) is dropped; the ones before it count.
            while data := await reader.read(READ_CHUNK):
                for message in frames.feed(data):
                    reply = await self._handle(peer, message)
                    if reply is not None:
                        reply["id"] = message["id"]
                        peer.send(reply)
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:  # a malformed frame: that worker's link is closed, the others go on
            log.exception("worker state: a message could not be handled")
        finally:
            self._peers.discard(peer)
            peer.close()
            await self._forget(peer)
            if task is not None:
                self._handlers.discard(task)

    async def _forget(self, peer: _Peer) -> None:
        """A worker's link is gone (it exited, or was killed): what it still held is released at once rather
        than when each hold expires. A worker that ends normally has settled everything before its link closes
        (one connection, in order), so this releases only what a killed worker left. Its rate-limit entries
        stay: the requests they count were made."""
        held = list(peer.held.values())
        peer.held.clear()
        for reservation in held:
            await self.limits.release(reservation)
        if held:
            log.warning(
                "worker %s is gone: released the %d budget reservation(s) it held", peer.worker or "?", len(held)
            )

    def _broadcast(self, origin: _Peer, message: dict[str, Any]) -> None:
        for peer in self._peers:
            if peer is not origin:
                peer.send(message)

    async def _handle(self, peer: _Peer, m: dict[str, Any]) -> dict[str, Any] | None:
        op = m["op"]
        limits = self.limits
        if op == "admit":
            try:
                entry = await limits.admit(m["key"], rpm=m["rpm"], tpm=m["tpm"], tokens_estimate=m["estimate"])
            except RateLimitExceeded as exc:
                return {"rate": [exc.message, exc.limit, exc.retry_after]}
            return {"ok": [entry.id, entry.in_requests, entry.tokens]}
        if op == "settle_tokens":
            await limits.settle_tokens(_entry(m["entry"]), m["actual"])
        elif op == "withdraw":
            await limits.withdraw(_entry(m["entry"]))
        elif op == "reserve":
            return await self._reserve(peer, m)
        elif op == "settle":
            peer.held.pop(m["reservation"][3], None)
            await limits.settle(_reservation(m["reservation"]), m["actual"])
        elif op == "release":
            peer.held.pop(m["reservation"][3], None)
            await limits.release(_reservation(m["reservation"]))
        elif op == "spent":
            return {"ok": list(await limits.spent(m["key"], m["period"]))}
        elif op == "open":
            self._open(peer, m["target"], float(m["cooldown"]), str(m["reason"]))
        elif op == "prefill":
            if m["target"] not in self.prefill_refused:
                self.prefill_refused.add(m["target"])
                self._broadcast(peer, {"event": "prefill", "target": m["target"]})
        elif op == "hello":
            peer.worker = int(m["worker"])
            self._tell_known(peer)
            return {"ok": True}
        elif op == "ready" and self._on_ready is not None and peer.worker is not None:
            self._on_ready(peer.worker)
        elif op == "override":
            target, fields = str(m["target"]), dict(m["fields"])
            if fields.get("state") == "healthy":
                self.overrides.pop(target, None)
            else:
                self.overrides[target] = fields
            self._broadcast(peer, {"event": "override", "target": target, "fields": fields})
        elif op == "reload" and self._on_reload is not None and peer.worker is not None:
            self._on_reload(peer.worker)
        elif op == "scrape":
            # Not awaited here: the asking worker's limits go on being answered while the others reply.
            self._spawn(self._scrape(peer, m["id"]))
        elif op == "engine" and self._on_engine is not None and peer.worker is not None:
            # Not awaited here either: a model may be loading meanwhile, and the worker's limits go on.
            self._spawn(self._engine(peer, peer.worker, m))
        elif op == "engine_keys" and self._on_engine_keys is not None and peer.worker is not None:
            self._spawn(self._on_engine_keys(peer.worker, list(m["keys"])))
        elif op == "scraped":
            answer = self._scrapes.get(m["ticket"], {}).get(peer)
            if answer is not None and not answer.done():
                answer.set_result(m["families"])
        return None

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _engine(self, peer: _Peer, worker: int, m: dict[str, Any]) -> None:
        assert self._on_engine is not None
        try:
            answer = await self._on_engine(worker, dict(m["targets"]))
        except Exception as exc:  # a fault of the supervisor's: the worker's reload fails, saying so
            log.exception("worker state: the engine process could not be asked for worker %d", worker)
            answer = {"error": type(exc).__name__}
        peer.send({**answer, "id": m["id"]})

    async def _scrape(self, asking: _Peer, request_id: int) -> None:
        """Every other worker's metrics, for the one scraped (so that /metrics on any worker shows them all)."""
        ticket = next(self._tickets)
        loop = asyncio.get_running_loop()
        answers = {peer: loop.create_future() for peer in self._peers if peer is not asking and peer.worker}
        self._scrapes[ticket] = answers
        engine = asyncio.ensure_future(self._engine_metrics()) if self._engine_metrics is not None else None
        try:
            for peer in answers:
                peer.send({"event": "scrape", "ticket": ticket})
            waiting = [*answers.values(), *([engine] if engine is not None else [])]
            if waiting:
                await asyncio.wait(waiting, timeout=SCRAPE_WAIT)
        finally:
            del self._scrapes[ticket]
        workers = {str(peer.worker): a.result() for peer, a in answers.items() if a.done() and not a.cancelled()}
        engine_families: list[Family] = []
        if engine is not None:
            if engine.done() and not engine.cancelled() and engine.exception() is None:
                engine_families = engine.result()
            else:
                engine.cancel()
        asking.send({"id": request_id, "workers": workers, "engine": engine_families})

    async def _reserve(self, peer: _Peer, m: dict[str, Any]) -> dict[str, Any]:
        seeded: int | None = m["seed"]
        if seeded is None and not self.limits.has_counter(m["key"], m["period"]):
            # The ledger is the worker's to read: it reads it and asks again with what it found.
            return {"seed": True}

        async def seed() -> int:
            return seeded or 0

        try:
            reservation = await self.limits.reserve(
                m["key"], limit_nusd=m["limit"], period=m["period"], amount_nusd=m["amount"], seed=seed
            )
        except BudgetExceeded as exc:
            return {
                "budget": [
                    exc.message,
                    exc.limit_nusd,
                    exc.period,
                    exc.spent_nusd,
                    exc.reserved_nusd,
                    exc.amount_nusd,
                ]
            }
        peer.held[reservation.id] = reservation
        return {"ok": [reservation.id, reservation.period_id]}

    def _open(self, origin: _Peer, target: str, cooldown: float, reason: str) -> None:
        if cooldown <= 0:
            return
        until = time.monotonic() + cooldown
        known = self.opens.get(target)
        # Keep the longer open: an ordinary 30 s open must not shorten a cut-off's long one for later workers.
        if known is None or known[0] < until:
            self.opens[target] = (until, reason)
        self._broadcast(origin, {"event": "open", "target": target, "left": cooldown, "reason": reason})

    def _tell_known(self, peer: _Peer) -> None:
        """A worker (re)starting learns the opens still running and the refused prefixes first."""
        now = time.monotonic()
        for target, (until, reason) in list(self.opens.items()):
            if until <= now:
                del self.opens[target]
                continue
            peer.send({"event": "open", "target": target, "left": until - now, "reason": reason})
        for target in self.prefill_refused:
            peer.send({"event": "prefill", "target": target})
        for target, fields in self.overrides.items():
            peer.send({"event": "override", "target": target, "fields": fields})


def _entry(raw: list[Any]) -> RateEntry:
    key_id, entry_id, in_requests, tokens = raw
    return RateEntry(key_id, entry_id, in_requests=in_requests, tokens=tokens)


def _reservation(raw: list[Any]) -> Reservation:
    key_id, period_id, amount, reservation_id = raw
    return Reservation(key_id, period_id, amount, id=reservation_id)


# --- the worker's side -----------------------------------------------------------------------------


class StateLink:
    """One worker's connection to the supervisor's `StateService`, shared by every gateway the worker builds
    (a reload builds a new one): requests with answers, one-way messages, and the circuits others report."""

    def __init__(self, path: str, worker: int) -> None:
        self.path = path
        #: this worker's number, 1..N
        self.worker = worker
        #: opens reported by other workers: target -> (monotonic deadline, reason), for gateways built later
        self.opens: dict[str, tuple[float, str]] = {}
        self.prefill_refused: set[str] = set()
        self.subscribers: list[LinkedCircuits] = []
        #: this worker's metrics, for another worker's scrape (set by create_app)
        self.collect: Callable[[], list[Family]] | None = None
        #: applies an operator's override made on another worker (set by create_app)
        self.on_override: Callable[[str, dict[str, Any]], None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._outbox: _Outbox | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def start(self) -> None:
        reader, self._writer = await asyncio.open_unix_connection(self.path)
        self._outbox = _Outbox(self._writer, asyncio.get_running_loop())
        self._reader_task = asyncio.create_task(self._read_forever(reader), name="lifeline-worker-state")
        await self.call({"op": "hello", "worker": self.worker})

    def ready(self) -> None:
        self.send({"op": "ready"})

    async def close(self) -> None:
        if self._outbox is not None:
            self._outbox.flush()  # what was sent this turn (a last settle) still goes
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task

    def send(self, message: dict[str, Any]) -> bool:
        """One way; False when the supervisor cannot be reached."""
        if not self.connected:
            return False
        assert self._outbox is not None
        self._outbox.put(message)
        return True

    async def call(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send and wait for the answer; ConnectionError when the supervisor cannot be reached."""
        if not self.connected:
            raise ConnectionResetError("the supervisor cannot be reached")
        assert self._outbox is not None
        request_id = next(self._ids)
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = answer
        message["id"] = request_id
        self._outbox.put(message)
        try:
            return await answer
        finally:
            self._pending.pop(request_id, None)

    async def engine(self, targets: dict[str, Any]) -> dict[str, Any]:
        """Ask the supervisor to serve these `llamacpp` targets (settings as JSON) from the engine process: each
        one's `engine_socket`, `engine_target` and `served_name` under "targets", or "error"."""
        return await self.call({"op": "engine", "targets": targets})

    async def _read_forever(self, reader: asyncio.StreamReader) -> None:
        frames = _Frames()
        pending = self._pending
        try:
            while data := await reader.read(READ_CHUNK):
                for message in frames.feed(data):
                    request_id = message.get("id")
                    if request_id is not None:
                        answer = pending.get(request_id)
                        if answer is not None and not answer.done():
                            answer.set_result(message)
                    else:
                        self._event(message)
            if frames.partial:
                log.warning("the link to the supervisor broke: %s", "a frame was cut off")
        except (ConnectionError, ValueError) as exc:
            log.warning("the link to the supervisor broke: %s", type(exc).__name__)
        finally:
            if self._writer is not None:
                self._writer.close()
            for answer in self._pending.values():
                if not answer.done():
                    answer.set_exception(ConnectionResetError("the supervisor closed the link"))

    async def metrics(self, own: Metrics) -> str:
        """/metrics of the whole machine: this worker's families and every other worker's, each sample
        labelled with its worker; this worker's alone when the supervisor cannot be reached."""
        sources: list[tuple[Labels, list[Family]]] = [((("worker", str(self.worker)),), own.collect())]
        try:
            answer = await self.call({"op": "scrape"})
        except ConnectionError:
            answer = {"workers": {}}
        for worker, families in sorted(answer["workers"].items(), key=lambda item: int(item[0])):
            received = [
                (name, kind, help, [(sample, _labels_of(labels), value) for sample, labels, value in rows])
                for name, kind, help, rows in families
            ]
            sources.append(((("worker", worker),), received))
        # The engine process serves every worker: its samples once, without a worker label.
        engine = [
            (name, kind, help, [(sample, _labels_of(labels), value) for sample, labels, value in rows])
            for name, kind, help, rows in answer.get("engine") or []
        ]
        sources.append(((), engine))
        return render_families(sources)

    def _event(self, message: dict[str, Any]) -> None:
        if message["event"] == "scrape":
            families = self.collect() if self.collect is not None else []
            self.send({"op": "scraped", "ticket": message["ticket"], "families": families})
            return
        target = str(message["target"])
        if message["event"] == "override":
            if self.on_override is not None:
                self.on_override(target, dict(message["fields"]))
        elif message["event"] == "open":
            left, reason = float(message["left"]), str(message["reason"])
            self.opens[target] = (time.monotonic() + left, reason)
            for circuits in self.subscribers:
                circuits.apply_open(target, left, reason)
        elif message["event"] == "prefill":
            self.prefill_refused.add(target)
            for circuits in self.subscribers:
                circuits.health.refuse_prefill(target, announce=False)


def _labels_of(raw: list[list[str]]) -> Labels:
    return tuple((str(name), str(value)) for name, value in raw)


class LinkedCircuits:
    """One gateway's circuits, told to and by the other workers through the link (as SharedCircuits does
    through Redis): an open here is announced, an open there is applied here without being announced again."""

    def __init__(self, health: Health, link: StateLink) -> None:
        self.health = health
        self.link = link
        #: opens received from other workers
        self.received = 0

    async def start(self) -> None:
        self.health.open_listeners.append(self._on_open)
        self.health.prefill_listeners.append(self._on_prefill_refused)
        self.link.subscribers.append(self)
        now = time.monotonic()
        for target, (until, reason) in self.link.opens.items():
            if until > now:
                self.apply_open(target, until - now, reason)
        for target in self.link.prefill_refused:
            self.health.refuse_prefill(target, announce=False)

    async def close(self) -> None:
        for listeners, listener in (
            (self.health.open_listeners, self._on_open),
            (self.health.prefill_listeners, self._on_prefill_refused),
        ):
            with contextlib.suppress(ValueError):
                listeners.remove(listener)  # type: ignore[arg-type]
        with contextlib.suppress(ValueError):
            self.link.subscribers.remove(self)

    def apply_open(self, target: str, left: float, reason: str) -> None:
        self.received += 1
        self.health.apply_remote_open(target, left, f"{reason} (on another worker)".lstrip())

    def _on_open(self, target: str, cooldown: float, reason: str) -> None:
        # Written now, before the request that opened the circuit goes on: the others hear of it first.
        self.link.send({"op": "open", "target": target, "cooldown": cooldown, "reason": reason})

    def _on_prefill_refused(self, target: str) -> None:
        self.link.send({"op": "prefill", "target": target})


class LinkedLimits:
    """A LimitStore whose windows and budgets are the supervisor's (`StateService.limits`): one limit per key
    across the workers. When the supervisor cannot be reached (it is going away; the worker follows),
    `failure` decides as it does for Redis: "open" admits without limits, "closed" refuses with 503."""

    def __init__(self, link: StateLink, failure: FailureMode = "open") -> None:
        self.link = link
        self.failure = failure
        #: calls that found the supervisor unreachable
        self.errors = 0
        self._seed_once = _SeedOnce()
        self._last_warning = -math.inf

    def _unreachable(self, op: str, *, refuse: bool) -> None:
        self.errors += 1
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY:
            self._last_warning = now
            then = "serving requests without limits" if self.failure == "open" else "refusing requests"
            log.warning("the supervisor's limits are unreachable during %s; %s", op, then)
        if refuse and self.failure == "closed":
            raise LimitBackendUnavailable()

    async def admit(self, key_id: str, *, rpm: int | None, tpm: int | None, tokens_estimate: int) -> RateEntry:
        entry = RateEntry(key_id, "", in_requests=False, tokens=None)
        if rpm is None and tpm is None:
            return entry  # nothing to count: no round trip
        message = {"op": "admit", "key": key_id, "rpm": rpm, "tpm": tpm, "estimate": max(0, tokens_estimate)}
        try:
            answer = await self.link.call(message)
        except ConnectionError:
            self._unreachable("admit", refuse=True)
            return entry
        if "rate" in answer:
            text, limit, retry_after = answer["rate"]
            raise RateLimitExceeded(text, limit=limit, retry_after=retry_after)
        entry.id, entry.in_requests, entry.tokens = answer["ok"]
        return entry

    def _entry(self, entry: RateEntry) -> list[Any]:
        return [entry.key_id, entry.id, entry.in_requests, entry.tokens]

    async def settle_tokens(self, entry: RateEntry, actual_tokens: int) -> None:
        if entry.finished:
            return
        entry.finished = True
        if entry.tokens is not None and actual_tokens != entry.tokens:
            self.link.send({"op": "settle_tokens", "entry": self._entry(entry), "actual": max(0, actual_tokens)})

    async def withdraw(self, entry: RateEntry) -> None:
        if entry.finished:
            return
        entry.finished = True
        if entry.in_requests or entry.tokens is not None:
            self.link.send({"op": "withdraw", "entry": self._entry(entry)})

    async def reserve(
        self,
        key_id: str,
        *,
        limit_nusd: int,
        period: Period,
        amount_nusd: int,
        seed: Callable[[], Awaitable[int]],
    ) -> Reservation:
        message: dict[str, Any] = {
            "op": "reserve",
            "key": key_id,
            "limit": limit_nusd,
            "period": period,
            "amount": amount_nusd,
            "seed": None,
        }
        try:
            answer = await self.link.call(message)
            if "seed" in answer:
                message["seed"] = await self._seed_once(f"{key_id}|{period}", seed)
                answer = await self.link.call(message)
        except ConnectionError:
            self._unreachable("reserve", refuse=True)
            return Reservation(key_id, "", amount_nusd, recorded=False)
        if "budget" in answer:
            text, limit, period_, spent, reserved, amount = answer["budget"]
            raise BudgetExceeded(
                text, limit_nusd=limit, period=period_, spent_nusd=spent, reserved_nusd=reserved, amount_nusd=amount
            )
        reservation_id, period_id = answer["ok"]
        return Reservation(key_id, period_id, amount_nusd, id=reservation_id)

    def _reservation(self, reservation: Reservation) -> list[Any]:
        return [reservation.key_id, reservation.period_id, reservation.amount_nusd, reservation.id]

    async def settle(self, reservation: Reservation, actual_nusd: int) -> None:
        if reservation.finished:
            return
        reservation.finished = True
        if reservation.recorded:
            self.link.send({"op": "settle", "reservation": self._reservation(reservation), "actual": actual_nusd})

    async def release(self, reservation: Reservation) -> None:
        if reservation.finished:
            return
        reservation.finished = True
        if reservation.recorded:
            self.link.send({"op": "release", "reservation": self._reservation(reservation)})

    async def spent(self, key_id: str, period: Period) -> tuple[int, int]:
        try:
            answer = await self.link.call({"op": "spent", "key": key_id, "period": period})
        except ConnectionError:
            self._unreachable("spent", refuse=False)
            raise LimitBackendUnavailable() from None
        spent, reserved = answer["ok"]
        return int(spent), int(reserved)

    async def close(self) -> None:
        return None  # the link is the worker's, closed when it stops
