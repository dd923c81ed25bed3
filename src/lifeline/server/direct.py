"""The hot route served straight from the HTTP/1.1 protocol, without ASGI.

For a `POST` to a path the app's `Front` serves directly (server/middleware.py; the exact path, without a query),
the protocol (server/serving.py) makes a `DirectCycle` where uvicorn makes its RequestResponseCycle, and the
cycle answers by writing to the transport itself: no ASGI messages, no proxy-headers, error or gateway
middleware around the request, no Starlette response machinery or task group per stream. Every other request
goes through uvicorn and ASGI as before, and the answers are the same byte for byte (tests/server/test_direct.py):

- The request is a Starlette `Request` over the cycle's scope and `receive` — a thin view — so the route, the
  exchange and the app's exception handlers are the ones the ASGI path runs, through the same `Front` (request
  id, edge guard, the gateway's count, after-response work, the 500 in OpenAI's envelope).
  A body that has all arrived by the time the route reads it is taken at once (`arrived_body`, through
  server/body.py's `read_body`, under the same limit), without the request stream or a timeout.
- A whole answer goes out as status line, headers (uvicorn's defaults: Date and the worker's header) and body
  in one write. While the transport's buffer is over its high-water mark the answer is not complete: the next
  pipelined request (and its upstream call) waits until the client reads, as uvicorn's cycle waits.
- A stream goes out chunked, and what it has ready is written in one write when it next waits (for the
  upstream's next read), not one write per event. A client that reads slowly stops the stream at the
  transport's high-water mark until it drains; a client that leaves cancels the stream where it waits, and
  the stream accounts itself once, as it always does (routing/streaming.py).
- The router's work for a request runs in the request's own task, which a client that leaves cancels
  (`cancellable`, what exchange.py's `until_disconnect` uses here), rather than in a task of its own raced
  against a second task that waits for the disconnect.

The cycle stands in for uvicorn's where uvicorn's protocol and LimitedHttpProtocol touch it: `scope` (its
state), `body`, `more_body`, `message_event`, `disconnected`, `response_started`, `response_complete`,
`keep_alive` and `run_asgi` (how uvicorn starts a cycle, pipelined ones included).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Message, Scope
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE, STATUS_LINE

from lifeline.errors import ClientClosed, ClientError
from lifeline.logs import request_id_var
from lifeline.server.errors import error_response
from lifeline.server.middleware import Endpoint, Front, client_request_id, internal_error

T = TypeVar("T")

log = logging.getLogger("lifeline.server")

#: where a directly served request's scope holds its `DirectCycle`
CYCLE = "lifeline.direct_cycle"
_LAST_CHUNK = b"0\r\n\r\n"


def _nothing() -> None:
    pass


class DirectCycle:
    """One request on the hot route and its response, written to the transport without ASGI."""

    __slots__ = (
        "_cancellable",
        "_cancelled",
        "_flush_scheduled",
        "_pending",
        "_read",
        "body",
        "default_headers",
        "disconnected",
        "endpoint",
        "flow",
        "front",
        "keep_alive",
        "message_event",
        "more_body",
        "on_response",
        "request_id",
        "response_complete",
        "response_started",
        "scope",
        "task",
        "transport",
        "waiting_for_100_continue",
    )

    def __init__(
        self,
        scope: Scope,
        transport: asyncio.Transport,
        flow: FlowControl,
        default_headers: list[tuple[bytes, bytes]],
        front: Front,
        endpoint: Endpoint,
        *,
        keep_alive: bool,
        expect_100_continue: bool,
        on_response: Callable[[], None],
    ) -> None:
        self.scope = scope
        self.transport = transport
        self.flow = flow
        self.default_headers = default_headers
        self.front = front
        self.endpoint = endpoint
        self.message_event = asyncio.Event()
        self.on_response = on_response
        self.disconnected = False
        self.keep_alive = keep_alive
        self.waiting_for_100_continue = expect_100_continue
        self.body = bytearray()
        self.more_body = True
        self._read = False  # `receive` has handed something over
        self.response_started = False
        self.response_complete = False
        self.request_id = b""
        self.task: asyncio.Task[Any] | None = None
        #: the task is doing work that a client that leaves cancels (the router's, a stream); and has done so
        self._cancellable = False
        self._cancelled = False
        self._pending: list[bytes] = []
        self._flush_scheduled = False

    # --- the request -------------------------------------------------------------------------------

    async def run_asgi(self, app: object) -> None:
        """Serve the request (the name by which uvicorn's protocol starts a cycle; `app` is not used)."""
        self.task = asyncio.current_task()
        try:
            await self._serve()
        except BaseException as exc:
            log.error("unexpected error", exc_info=exc)
            self.transport.close()
        else:
            if not self.response_complete and not self.disconnected:
                self.transport.close()  # a response left half-written (the error is logged): the client must not wait
        finally:
            self.on_response = _nothing
            # No reference cycles left behind (scope → cycle → scope): the request is freed when it ends.
            self.scope.pop(CYCLE, None)
            self.task = None

    async def _serve(self) -> None:
        scope = self.scope
        self.request_id = client_request_id(scope["headers"])
        state = scope["state"]
        state["request_id"] = text_id = self.request_id.decode()
        request_id_var.set(text_id)  # in this task's own context
        front = self.front
        try:
            entered = front.enter(scope)
            if isinstance(entered, ClientError):
                await self._whole(error_response(entered))
                return
            try:
                response = await front.respond(self.endpoint, Request(scope, self.receive))
                if isinstance(response, StreamingResponse):
                    await self._stream(response)
                else:
                    await self._whole(response)
                if response.background is not None:
                    await response.background()
            finally:
                front.leave(entered, state)
        except Exception as exc:
            if not front.failed(exc):
                return
            if self.response_started:
                self.transport.close()
            else:
                await self._whole(internal_error())

    def arrived_body(self) -> bytes | None:
        """The whole body, taken at once, if it has all arrived and `receive` would hand it over in one message
        without waiting (nothing read before, no 100 Continue owed, the client still here); else None."""
        if self.more_body or self._read or self.waiting_for_100_continue or self.disconnected:
            return None
        if self.response_complete:
            return None
        self._read = True
        self.flow.resume_reading()  # as `receive` does: a large body may have paused reading
        self.message_event.clear()
        body, self.body = bytes(self.body), bytearray()
        return body

    async def receive(self) -> Message:
        """The request's body as ASGI's `receive` gives it (what Starlette's Request reads), and
        `http.disconnect` once the client has gone (or the protocol refused the request)."""
        self._read = True
        if self.waiting_for_100_continue and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.waiting_for_100_continue = False
        if not self.disconnected and not self.response_complete:
            self.flow.resume_reading()
            await self.message_event.wait()
            self.message_event.clear()
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        message: Message = {"type": "http.request", "body": bytes(self.body), "more_body": self.more_body}
        self.body = bytearray()
        return message

    def disconnect(self) -> None:
        """The client has gone, or the protocol refused the connection: the router's work or the stream stops
        where it waits, at once (their own cleanup accounts for them); other work learns it from `receive`, as
        on the ASGI path."""
        if not self.response_complete:
            self.disconnected = True
        self.message_event.set()
        if self._cancellable and not self._cancelled and self.task is not None:
            self._cancelled = True
            self.task.cancel()

    async def cancellable(self, work: Awaitable[T]) -> T:
        """`work`, run in this task and cancelled if the client leaves meanwhile: ClientClosed then. A result
        that was ready before the cancellation reached it is returned even if the client has left, as on the ASGI
        path, so that what holds resources (an opened stream) is closed by its owner rather than dropped."""
        if self.disconnected:
            if isinstance(work, Coroutine):
                work.close()  # never started
            raise ClientClosed("The client closed the connection.")
        self._cancellable = True
        try:
            return await work
        except asyncio.CancelledError:
            if not self._cancelled:
                raise
        finally:
            self._cancellable = False
            self._forgive()  # whatever ended the work, the client's cancellation (if made) was delivered to it
        raise ClientClosed("The client closed the connection.")

    def _forgive(self) -> None:
        """Take back the cancellation the client's leaving made (once it has been felt), so that what this task
        still has to do (accounting, after-response work) is not cut short."""
        if self._cancelled and self.task is not None:
            self._cancelled = False
            self.task.uncancel()

    # --- the response ------------------------------------------------------------------------------

    def _head(self, status: int, headers: list[tuple[bytes, bytes]]) -> tuple[list[bytes], bool]:
        """The status line and headers, as uvicorn writes them for the same response with the middleware's
        `x-request-id` added; and whether the body goes chunked. A header name or value that would break the
        framing (CR, LF …) is refused, as uvicorn refuses it, before anything is written."""
        head = [STATUS_LINE[status]]
        for name, value in self.default_headers:
            head += (name, b": ", value, b"\r\n")
        chunked: bool | None = None
        closing = False
        for name, value in headers:
            if HEADER_RE.search(name):
                raise RuntimeError("Invalid HTTP header name.")
            if HEADER_VALUE_RE.search(value):
                raise RuntimeError("Invalid HTTP header value.")
            name = name.lower()
            if name == b"content-length" and chunked is None:
                chunked = False
            elif name == b"transfer-encoding" and value.lower() == b"chunked":
                chunked = True
            elif name == b"connection" and b"close" in [t.strip().lower() for t in value.split(b",")]:
                self.keep_alive = False
                closing = True
            head += (name, b": ", value, b"\r\n")
        head += (b"x-request-id: ", self.request_id, b"\r\n")
        if not self.keep_alive and not closing:
            head.append(b"connection: close\r\n")
        if chunked is None and status not in (204, 304):
            chunked = True
            head.append(b"transfer-encoding: chunked\r\n")
        head.append(b"\r\n")
        self.response_started = True
        self.waiting_for_100_continue = False
        return head, bool(chunked)

    async def _whole(self, response: Response) -> None:
        """A whole answer in one write."""
        if self.disconnected:
            return
        head, chunked = self._head(response.status_code, response.raw_headers)
        body = bytes(response.body)
        if chunked:
            head += (b"%x\r\n" % len(body), body, b"\r\n", _LAST_CHUNK) if body else (_LAST_CHUNK,)
        else:
            head.append(body)
        self.transport.write(b"".join(head))
        await self._complete()

    async def _stream(self, response: StreamingResponse) -> None:
        """A stream: each write carries what was ready when the stream last waited (the head with the first
        events); a full transport buffer holds the stream until it drains; a client that leaves ends it. A stream
        always goes chunked: a Content-Length header (which nothing would hold the body to) is left out."""
        chunks = response.body_iterator
        started = False
        try:
            headers = [(name, value) for name, value in response.raw_headers if name.lower() != b"content-length"]
            head, chunked = self._head(response.status_code, headers)
            started = True  # iterated from here on
            self._pending = head
            self._flush_soon()
            self._cancellable = True
            async for chunk in chunks:
                if self.disconnected:
                    break
                if chunk:
                    data = chunk.encode(response.charset) if isinstance(chunk, str) else bytes(chunk)
                    if chunked:
                        self._pending += (b"%x\r\n" % len(data), data, b"\r\n")
                    else:
                        self._pending.append(data)
                    self._flush_soon()
                if self.flow.write_paused and not self.disconnected:
                    await self.flow.drain()
        except asyncio.CancelledError:
            if not self._cancelled:
                raise
        finally:
            self._cancellable = False
            self._forgive()
            if not started:
                await _start(chunks)
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()  # a stream left early ends (and is accounted) here
        if self.disconnected:
            return
        if chunked:
            self._pending.append(_LAST_CHUNK)
        self._flush()
        await self._complete()

    def _flush_soon(self) -> None:
        # Called back once the stream waits: everything it made meanwhile goes in one write.
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._pending:
            pending, self._pending = self._pending, []
            if not self.disconnected:
                self.transport.write(b"".join(pending))

    async def _complete(self) -> None:
        # A client that does not read holds the answer in the transport's buffer: the next pipelined request
        # (and its upstream call) waits until the client has read it, as uvicorn's cycle waits.
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_response()


async def _start(chunks: Any) -> None:
    """Start a stream's body iterator that is to be closed unread (its head could not be written), dropping its
    first event: a generator closed before it starts runs none of its code, and the relay inside it (which holds
    the upstream stream, already open with its first events read) closes the upstream and accounts the stream
    only once it has started."""
    with contextlib.suppress(Exception):
        await chunks.__anext__()


def forwarded(scope: Scope, trusted: Any) -> None:
    """uvicorn's proxy-headers rule, which its middleware applies on the ASGI path: a request from a trusted
    proxy (`trusted`, the middleware's `trusted_hosts`) takes its client address and scheme from the proxy's
    `X-Forwarded-For` and `X-Forwarded-Proto`."""
    client = scope.get("client")
    if client is None or client[0] not in trusted:
        return
    proto: bytes | None = None
    chain: list[bytes] = []
    for name, value in scope["headers"]:
        if name == b"x-forwarded-proto":
            proto = value
        elif name == b"x-forwarded-for":
            chain.append(value)
    if proto is not None:
        scheme = proto.decode("latin-1").strip()
        if scheme in ("http", "https", "ws", "wss"):
            scope["scheme"] = scheme
    if chain:
        host, port = trusted.get_trusted_client_address(b", ".join(chain).decode("latin-1"))
        if host:
            scope["client"] = (host, port)
