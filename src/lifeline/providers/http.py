"""What every HTTP-speaking provider shares.

`HttpProvider` is the scaffolding of kinds `openai`, `anthropic` and `gemini`: one pooled keep-alive client
per target, opened at start-up and closed at shutdown — the lean transport called directly (each URL's
fixed request bytes encoded once), or httpx's client with `http_client: httpx` or a given transport; the
one boundary where transport exceptions, timeouts and upstream error responses become Lifeline errors (with
keys scrubbed from their messages); one attempt, streaming or not, under the target's timeouts.
`TimedEvents` reads a streamed answer's events under the time-to-first-token and idle timeouts. Each provider
module adds only its wire format: the request body, the answer's shape, and how its error envelopes are
classified. Below them, the helpers for reading Retry-After and error bodies, and the error class a bare HTTP
status implies.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import httpx
import orjson

from lifeline import __version__
from lifeline.config.schema import HttpTarget, Timeouts
from lifeline.errors import (
    ConnectionPoolFull,
    UpstreamCutOff,
    UpstreamError,
    UpstreamModelNotFound,
    UpstreamRateLimited,
    UpstreamSilent,
    UpstreamUnavailable,
)
from lifeline.providers.base import ChatCall, Chunk, Deadline, EmbeddingCall
from lifeline.providers.sse import SseParser
from lifeline.providers.transport import CONNECTING, SENDING, FixedRequest, HttpxAnswer, LeanTransport, PoolUse

MAX_ERROR_BODY = 64 * 1024


#: a Retry-After beyond this is treated as this: a day is "not today", and keeps the arithmetic finite
MAX_RETRY_AFTER = 86400.0

#: a finished stream's remaining bytes (the chunked terminator, a closing `[DONE]`) are read for at most
#: this long and this much, so that its connection goes back to the pool instead of being closed
DRAIN_SECONDS = 1.0
DRAIN_BYTES = 64 * 1024

#: what the lean client sends besides the wire format's headers (which override them): no content coding,
#: so that bodies and streams are read as they come
LEAN_HEADERS = {"accept-encoding": "identity", "user-agent": f"lifeline/{__version__}"}

#: what `HttpProvider._converted` turns into Lifeline errors: timeouts, and every failure of either client
TRANSPORT_ERRORS = (TimeoutError, httpx.HTTPError)

JSON = dict[str, Any]
TargetT = TypeVar("TargetT", bound=HttpTarget)


class Answer(Protocol):
    """An upstream's response, from whichever client: the lean transport's `Answer`, or httpx's seen as one
    (`HttpxAnswer`), both in providers/transport.py."""

    status: int

    @property
    def headers(self) -> Mapping[str, str]:
        """By lower-case name."""
        ...

    def body(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive, without any content coding; one iterator per answer."""
        ...

    async def read(self) -> bytes: ...

    @property
    def complete(self) -> bool:
        """The body has arrived to its end: closing now keeps the connection."""
        ...

    async def aclose(self) -> None: ...


class HttpProvider(ABC, Generic[TargetT]):
    """One target reached over HTTP. Subclasses set `_url` and `_stream_url` and supply the wire format:
    `_body` (the request), `_chunks` (a stream's events as OpenAI chunks) and `_classify` (an error). A
    format whose events each make at most one chunk reads them as a `ChunkOf` instead (kind `openai`)."""

    #: where skipped stream events are reported: each provider logs under its own name
    _log: ClassVar[logging.Logger] = logging.getLogger("lifeline.providers.http")
    _url: str
    _stream_url: str

    def __init__(
        self,
        name: str,
        config: TargetT,
        transport: httpx.AsyncBaseTransport | None,
        *,
        auth: Callable[[str], dict[str, str]],
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """`auth` turns the API key into the headers that carry it; `headers` are the wire format's own,
        which the target's configured headers may override."""
        self.name = name
        self.config = config
        self.model = config.model
        self.context_window = config.context_window
        self.supports_n = False
        self._timeouts = config.timeouts
        key = config.api_key.get_secret_value() if config.api_key else ""
        # Header values may carry keys too (`api-key`, `x-api-key`); long ones are scrubbed like the key.
        self._secrets = tuple(s for s in (key, *config.headers.values()) if len(s) >= 12)
        self._headers = {
            "content-type": "application/json",
            "accept": "application/json",
            **(headers or {}),
            **config.headers,
        }
        if key:
            self._headers.update(auth(key))
        self._transport = transport
        #: the transport is Lifeline's or httpx's own, which report when a request leaves (see Connecting)
        self._traced = transport is None
        self._client: httpx.AsyncClient | None = None
        self._lean: LeanTransport | None = None
        #: each URL's fixed request bytes, encoded on first use (lean transport only)
        self._requests: dict[str, FixedRequest] = {}
        #: finished streams whose last bytes are being read (see `_drain`)
        self.draining: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self._transport is None and self.config.http_client == "lean":
            self._lean = LeanTransport(self.config.max_connections)
            return
        limits = httpx.Limits(
            max_connections=self.config.max_connections,
            max_keepalive_connections=self.config.max_connections,
            keepalive_expiry=30.0,
        )
        # Reads are bounded per phase with asyncio.timeout (first byte, TTFT, idle, whole response);
        # httpx bounds only connecting and waiting for a pooled connection.
        timeout = httpx.Timeout(connect=self._timeouts.connect, read=None, write=30.0, pool=self._timeouts.connect)
        self._client = httpx.AsyncClient(
            headers=self._headers, limits=limits, timeout=timeout, transport=self._transport, trust_env=False
        )

    async def close(self) -> None:
        for task in list(self.draining):
            task.cancel()
        if self.draining:
            await asyncio.gather(*self.draining, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._lean is not None:
            await self._lean.aclose()
            self._lean = None

    def pool_use(self) -> PoolUse | None:
        """The connection pool's use now, for /metrics (the lean client's; None for another transport)."""
        return self._lean.use() if self._lean is not None else None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError(f"target {self.name} used before start()")
        return self._client

    # --- the wire format, supplied by each provider ----------------------------------------------

    @abstractmethod
    def _body(self, call: ChatCall, stream: bool) -> bytes:
        """The request to send for this call (raising UpstreamRejected when it cannot be expressed)."""

    def _chunks(self, events: TimedEvents) -> AsyncIterator[Chunk]:
        """A streamed answer's events as OpenAI chunks, each passed through `events.seen`. Every wire format
        supplies it, but one whose `stream` reads its events one by one (a `ChunkOf`: kind `openai`)."""
        raise NotImplementedError(f"{type(self).__name__} reads its stream's events one by one")

    @abstractmethod
    def _classify(self, status: int | None, error: JSON, retry_after: float | None) -> UpstreamError:
        """The Lifeline error for an upstream error object; `status` is None for an error that arrived
        inside a 200 answer or stream."""

    def _error_body(self, raw: bytes) -> JSON:
        """The error object in an error response's body."""
        return error_object(raw)

    # --- one attempt -----------------------------------------------------------------------------

    async def _send(self, url: str, content: bytes, call: ChatCall | EmbeddingCall, phase: Connecting) -> Answer:
        """Send one POST and return its answer once the status and headers have come; the body is the
        caller's to read and close. Inside the caller's `_boundary`."""
        lean = self._lean
        if lean is not None:
            request = self._requests.get(url)
            if request is None:
                request = self._requests[url] = FixedRequest(url, {**LEAN_HEADERS, **self._headers})
            wait = self._timeouts.connect
            return await lean.send(
                request, call.request_id, content, pool_timeout=wait, connect_timeout=wait, trace=phase.trace
            )
        built = self.client.build_request(
            "POST", url, content=content, headers={"x-request-id": call.request_id}, extensions=phase.extensions
        )
        return HttpxAnswer(await self.client.send(built, stream=True))

    async def _post_json(self, url: str, content: bytes, call: ChatCall | EmbeddingCall) -> Any:
        """One non-streaming request under the response timeout; the answer parsed (any JSON value)."""
        phase = Connecting(call.deadline, self._timeouts.response, self._traced)
        try:  # the boundary (as `_boundary`, written out on the path every whole answer takes)
            async with phase.timer():
                answer = await self._send(url, content, call, phase)
                try:
                    if answer.status >= 400:
                        await self._raise_for_status(answer)
                    raw = await answer.read()
                finally:
                    await answer.aclose()
        except TRANSPORT_ERRORS as exc:
            raise self._converted(exc, "response", phase) from None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamUnavailable("the upstream's answer is not valid JSON", target=self.name) from None

    def stream(self, call: ChatCall) -> AsyncIterator[Chunk]:
        return self._stream(call, self._stream_url, lambda: self._body(call, stream=True), self._chunks)

    async def _stream(
        self,
        call: ChatCall,
        url: str,
        body: Callable[[], bytes],
        chunks: Callable[[TimedEvents], AsyncIterator[Chunk]] | None,
        each: ChunkOf | None = None,
    ) -> AsyncIterator[Chunk]:
        """One streaming request to `url`, its events read by `chunks` (a wire format's reader) — or, given
        `each`, event by event in this loop (one async generator less per event; see `ChunkOf`)."""
        phase = Connecting(call.deadline, self._timeouts.first_byte, self._traced)
        content = body()
        with self._boundary("first_byte", phase):
            async with phase.timer():
                answer = await self._send(url, content, call, phase)
        events: TimedEvents | None = None
        handed_off = False
        try:
            if answer.status >= 400:
                with self._boundary("first_byte"):
                    await self._raise_for_status(answer)
            body_bytes = answer.body()
            events = TimedEvents(
                body_bytes,
                convert=self._converted,
                timeouts=self._timeouts,
                deadline=call.deadline,
                started=phase.sent_at or phase.created_at,
                target=self.name,
                ttft=call.ttft,
            )
            if each is None:
                assert chunks is not None
                async for chunk in chunks(events):
                    yield chunk
            else:
                async for data in events:
                    made = each(events, data)
                    if made is not None:
                        yield made
                    if events.done:
                        break
            if events.finished and not answer.complete:
                # The answer is whole but its last bytes (the chunked terminator) are still to come: read
                # them off the request's path, so that the connection goes back to the pool.
                self._drain_later(body_bytes, answer)
                handed_off = True
        finally:
            if events is not None:
                events.stop()
            if not handed_off:
                await answer.aclose()

    def _drain_later(self, body: AsyncIterator[bytes], answer: Answer) -> None:
        task = asyncio.get_running_loop().create_task(_drain(body, answer))
        self.draining.add(task)
        task.add_done_callback(self.draining.discard)

    async def _event_objects(self, events: TimedEvents) -> AsyncIterator[JSON]:
        """The stream's events that are JSON objects; others are skipped (logged when not JSON at all)."""
        async for data in events:
            try:
                event = orjson.loads(data)
            except orjson.JSONDecodeError:
                self._log.warning("skipped a malformed stream event from target %s", self.name)
                continue
            if isinstance(event, dict):
                yield event

    # --- errors ----------------------------------------------------------------------------------

    async def _raise_for_status(self, answer: Answer) -> None:
        raw = await read_error_body(answer)
        raise self._error(answer.status, self._error_body(raw), retry_after_seconds(answer.headers))

    def _error(self, status: int | None, error: JSON, retry_after: float | None) -> UpstreamError:
        err = self._classify(status, error, retry_after)
        err.message = scrub(err.message, self._secrets)
        return err

    @contextmanager
    def _boundary(self, phase: str, connecting: Connecting | None = None) -> Iterator[None]:
        """Convert transport failures and timeouts into Lifeline errors (see `_converted`)."""
        try:
            yield
        except TRANSPORT_ERRORS as exc:
            raise self._converted(exc, phase, connecting) from None

    def _converted(self, exc: Exception, phase: str, connecting: Connecting | None = None) -> UpstreamError:
        """The Lifeline error for a transport failure or a timeout (one of TRANSPORT_ERRORS) in `phase`: the
        one place they are converted, for `_boundary` and for a stream's reads. With `connecting`, a timer
        that ran out before the request was sent is the deadline's, not the target's silence."""
        if isinstance(exc, TimeoutError):
            if connecting is not None and connecting.waited_for_connection:
                if connecting.connecting:
                    return UpstreamUnavailable(
                        f"target {self.name}: the deadline passed while connecting", target=self.name
                    )
                return self._pool_full("the deadline passed")
            return UpstreamSilent(f"target {self.name} sent nothing within the {phase} timeout", target=self.name)
        if isinstance(exc, httpx.PoolTimeout):
            return self._pool_full(f"the connect timeout ({self._timeouts.connect:g}s) passed")
        if isinstance(exc, httpx.TimeoutException):
            # httpx's own timeouts are only connect and pool: the target is unreachable, not silent.
            return UpstreamUnavailable(f"target {self.name}: {type(exc).__name__} while connecting", target=self.name)
        return UpstreamUnavailable(f"target {self.name}: {type(exc).__name__} ({phase})", target=self.name)

    def _pool_full(self, why: str) -> ConnectionPoolFull:
        return ConnectionPoolFull(
            f"target {self.name}: all {self.config.max_connections} connections stayed busy until {why}",
            target=self.name,
        )


async def _drain(body: AsyncIterator[bytes], answer: Answer) -> None:
    """Read a finished stream's remaining bytes (at most DRAIN_BYTES, for at most DRAIN_SECONDS), then close
    it: read to its end, its connection is kept (by either client); otherwise it is closed. Sound because the
    answer was already whole: what is left is framing, never content anyone waits for."""
    read = 0
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            async for piece in body:
                read += len(piece)
                if read > DRAIN_BYTES:
                    break
    except (TimeoutError, httpx.HTTPError, OSError):
        pass
    finally:
        await answer.aclose()


class Connecting:
    """The timer of an attempt's first phase (first byte, or the whole response), started only once the
    transport has a connection and sends. Waiting for a pooled connection is bounded by `connect` on its
    own (the transport's pool timeout) and never counts as the target's silence; until the request is
    sent, the timer runs to the request's deadline only.

    Used as `async with phase.timer():`, it times its block as `asyncio.timeout` would (going off, it cancels
    the task, and the block ends in TimeoutError), with one timer set per attempt: it is set for the phase's
    timeout from now, the soonest the phase can end once the request is sent; sending only moves the
    deadline (never sooner than that), and the timer, going off before the deadline it finds (the request
    not sent yet: the request's deadline), is set again for it."""

    __slots__ = (
        "_cancelling",
        "_deadline",
        "_expired",
        "_last",
        "_loop",
        "_set_for",
        "_task",
        "_timeout",
        "_timer",
        "_when",
        "connecting",
        "created_at",
        "sent_at",
        "trace",
        "traced",
    )

    def __init__(self, deadline: Deadline, timeout: float, traced: bool) -> None:
        self._deadline = deadline
        self._timeout = timeout
        #: the transport reports its progress (Lifeline's own, and httpcore's do; a test's mock does not)
        self.traced = traced
        #: a slot was free and a new connection is being opened
        self.connecting = False
        #: when the request went out (time.monotonic); None while waiting for a connection
        self.sent_at: float | None = None
        self.created_at = time.monotonic()
        self.trace = self._trace if traced else None
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[Any] | None = None
        self._expired = False
        self._cancelling = 0
        #: the block's deadline and when the timer is set for, on the loop's clock
        self._when = self._set_for = self._last = math.inf

    @property
    def extensions(self) -> dict[str, Any]:
        """httpx's request extensions that report the progress to this timer."""
        return {"trace": self._trace} if self.traced else {}

    def timer(self) -> Connecting:
        return self

    async def __aenter__(self) -> Connecting:
        task = self._task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Connecting.timer() must be used inside a task")
        self._cancelling = task.cancelling()
        loop = self._loop = task.get_loop()
        now = loop.time()
        #: the request's deadline on the loop's clock
        self._last = now + self._deadline.remaining()
        first = min(self._last, now + self._timeout)
        # before the request is sent, only the request's deadline bounds the wait (when the transport says
        # when it sends; otherwise the phase's timeout runs from the start)
        self._when = self._last if self.traced else first
        self._set(first)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._set_for = math.inf
        if self._expired:
            assert self._task is not None
            if self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
                raise TimeoutError from exc
        self._task = None

    def _set(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._expire) if when != math.inf else None
        self._set_for = when

    def _expire(self) -> None:
        self._timer = None
        if self._task is None:
            return
        if self._when > self._set_for:
            self._set(self._when)  # the deadline is later than the timer was set for
            return
        self._expired = True
        self._task.cancel()

    @property
    def waited_for_connection(self) -> bool:
        """The timer ran out before the request was sent."""
        return self.traced and self.sent_at is None

    async def _trace(self, event: str, info: dict[str, Any]) -> None:
        if event == CONNECTING:
            self.connecting = True
        elif event == SENDING and self.sent_at is None:
            self.sent_at = time.monotonic()
            if self._task is not None:
                self._when = min(self._last, self._loop.time() + self._timeout)
                if self._when < self._set_for:
                    self._set(self._when)  # sent after the timer's first setting had passed


class ChunkOf(Protocol):
    """A wire format's reading of one event: the chunk for the client, or None to skip the event (raising an
    UpstreamError for an error event); setting `events.done` ends the stream after it. The stream's loop
    calls it for each event, so that no reader of its own runs between the events and the stream."""

    def __call__(self, events: TimedEvents, data: bytes, /) -> Chunk | None: ...


class TimedEvents:
    """The `data:` payloads of a streamed answer, each awaited under the timeout of its phase.

    Until something reaches the client the wait is what is left of the time-to-first-token budget, counted
    from the attempt's start, so pings and role chunks do not extend it; after that it is the idle timeout
    between events. Every wait is also bounded by the request's deadline. The provider passes each chunk it
    makes through `seen`: that is how the phase moves on, and how an answer that was already complete is
    told from one cut off when the upstream then fails or closes.

    One timer serves every wait of a stream (an `asyncio.timeout` per event cost more than the event): each
    wait only moves its deadline; the timer is set again only when the deadline comes sooner than it, or
    when it goes off before a moved deadline. Going off during a wait, it cancels the task as
    `asyncio.timeout` does, and the wait turns that into TimeoutError; between waits (while the client is
    sent what came) nothing is timed.
    """

    def __init__(
        self,
        raw: AsyncIterator[bytes],
        *,
        convert: Callable[[Exception, str], UpstreamError],
        timeouts: Timeouts,
        deadline: Deadline,
        started: float,
        target: str,
        ttft: float | None = None,
    ) -> None:
        self._next_read = raw.__anext__
        self._sse = SseParser()
        #: the data of events already read but not yet handed out (a read can complete several)
        self._ready: deque[bytes] = deque()
        self._ended = False
        self._convert = convert
        self._idle = timeouts.idle
        self._target = target
        self._loop = asyncio.get_running_loop()
        now, monotonic = self._loop.time(), time.monotonic()
        #: the request's deadline, and the end of the first-content budget, on the loop's clock
        self._last = now + deadline.remaining()
        first = timeouts.ttft if ttft is None else ttft  # the router's limit for this attempt, else the target's
        self._ttft_at = min(self._last, now + first - (monotonic - started))
        #: the current wait's deadline, the timer (and when it is set for), the task waiting now
        self._when = 0.0
        self._timer: asyncio.Handle | None = None
        #: when the timer is set for (kept here: uvloop hands back a plain Handle, without `when()`, for a time
        #: already past)
        self._timer_at = math.inf
        self._waiting: asyncio.Task[Any] | None = None
        self._expired = False
        #: a chunk with content (or a finish) has been made: the idle timeout applies from here on
        self.content = False
        #: some choice finished: the answer is complete
        self.finished = False
        #: the reader has read the answer's last event (set by a `ChunkOf`): nothing more is read
        self.done = False

    def seen(self, chunk: Chunk) -> Chunk:
        self.content = self.content or chunk.content or chunk.finish
        self.finished = self.finished or chunk.finish
        return chunk

    def __aiter__(self) -> TimedEvents:
        return self

    async def __anext__(self) -> bytes:
        if self._ready:
            return self._ready.popleft()  # already read: nothing to wait for
        if self.content:
            phase, when = "idle", min(self._last, self._loop.time() + self._idle)
        else:
            phase, when = "ttft", self._ttft_at
        self._when = when
        timer = self._timer
        if timer is None or self._timer_at > when:
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(when, self._expire) if when != math.inf else None
            self._timer_at = when
        task = self._waiting = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        self._expired = False
        try:
            try:
                # the upstream's reads until one completes an event (a read may complete several: the others
                # wait in `_ready`), or the end of the stream (StopAsyncIteration)
                while not self._ended:
                    try:
                        piece = await self._next_read()
                    except StopAsyncIteration:
                        self._ended = True
                        last = self._sse.close()
                        if last is not None:
                            return last
                        raise
                    found = self._sse.feed(piece)
                    if found:
                        if len(found) > 1:
                            self._ready.extend(found[1:])
                        return found[0]
                raise StopAsyncIteration
            except asyncio.CancelledError:
                if self._expired and task.uncancel() <= cancelling:
                    raise self._convert(TimeoutError(), phase) from None
                raise
            except TRANSPORT_ERRORS as exc:
                raise self._convert(exc, phase) from None
        except StopAsyncIteration:
            self.stop()
            if not self.finished:
                # Only a finish marks a whole answer; a connection that closes before one cut it off.
                raise UpstreamUnavailable(
                    "the upstream closed the stream before the answer finished", target=self._target
                ) from None
            raise
        except UpstreamError:
            self.stop()
            if self.finished:
                # The answer was complete; the upstream just did not close properly.
                raise StopAsyncIteration from None
            raise
        finally:
            self._waiting = None

    def _expire(self) -> None:
        timer, self._timer = self._timer, None
        if self._waiting is None:
            return  # not waiting: the next wait sets the timer again
        if timer is not None and self._when > self._timer_at:
            self._timer = self._loop.call_at(self._when, self._expire)  # the deadline moved on since
            self._timer_at = self._when
            return
        self._expired = True
        self._waiting.cancel()

    def stop(self) -> None:
        """No more waits: the timer is let go."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


# --- reading what an upstream says --------------------------------------------------------------


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `retry-after-ms` (OpenAI) or `Retry-After` (seconds or an HTTP date); `headers`
    by lower-case name."""
    ms = _seconds(headers.get("retry-after-ms"))
    if ms is not None:
        return min(MAX_RETRY_AFTER, ms / 1000)
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _seconds(value)
    if seconds is not None:
        return min(MAX_RETRY_AFTER, seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(MAX_RETRY_AFTER, max(0.0, when.timestamp() - time.time()))


def _seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return max(0.0, number) if math.isfinite(number) else None


async def read_error_body(answer: Answer) -> bytes:
    """An error response's body, up to MAX_ERROR_BODY and as far as the connection lets it be read."""
    raw = b""
    try:
        async for piece in answer.body():
            raw += piece
            if len(raw) > MAX_ERROR_BODY:
                break
    except httpx.HTTPError:
        pass
    return raw


def error_object(raw: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        text = raw[:500].decode("utf-8", "replace").strip()
        return {"message": text} if text else {}
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            return error
        if isinstance(error, str):
            return {"message": error, "code": data.get("code"), "type": data.get("type")}
        if "message" in data:
            return data
    return {}


def status_class(status: int) -> type[UpstreamError]:
    """The error class an HTTP status alone implies, for an error whose own type says nothing more."""
    if status in (401, 402, 403, 451):
        return UpstreamCutOff
    if status == 404:
        return UpstreamModelNotFound
    if status == 429:
        return UpstreamRateLimited
    # 5xx, 529, 408 and anything unexpected: a broken target, not the client's fault
    return UpstreamUnavailable


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """Remove any secret (or a long enough prefix of one, as upstreams echo keys half-masked)."""
    for secret in secrets:
        if not secret:
            continue
        text = text.replace(secret, "***")
        if len(secret) >= 12:
            text = text.replace(secret[:8], "***")
    return text
