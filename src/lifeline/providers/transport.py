"""A lean HTTP/1.1 client: keep-alive connections as asyncio protocols, per upstream host.

Why: httpx's default pool (httpcore over anyio) costs more CPU per request than the rest of the gateway
put together, and its pool bookkeeping grows with the number of connections, so throughput *fell* under
load (bench/RESULTS.md, section 11); httpx's client layer on top (cookies, request building, header
merging, byte chunkers) was the next largest block (bench/findings.md). So the providers call this
transport directly: `FixedRequest` holds what every request to one URL of a target shares, encoded once
(request line, host, the target's headers with its key); `LeanTransport.send` adds the request id, the
length and the body, and returns an `Answer` read straight from the connection's parser. It also remains
an httpx transport (`handle_async_request`) for code that wants httpx's API. A LIFO stack of idle
connections per host, one `asyncio.Protocol` per connection, responses framed incrementally as bytes arrive
(so streams stream), TLS through asyncio's own `ssl` support. HTTP/1.1 only; no proxies (a target that needs
one uses `http_client: httpx`).

Failures surface as httpx's exception classes (the vocabulary both clients share, so that the providers
convert them in one place, `HttpProvider._boundary`): PoolTimeout when no connection
became free within the pool timeout (the connect timeout), ConnectError / ConnectTimeout when connecting,
RemoteProtocolError when the upstream closes early or sends something that is not HTTP. Like httpcore, it
reports progress through the request's `trace` extension ("connection.connect_tcp.started" once it holds a
slot and opens a connection, "http11.send_request_headers.started" once it has a connection and sends),
so that a provider can tell waiting for a connection from waiting for the upstream.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from lifeline.errors import ProtocolError

#: the trace events a provider may wait for (the names httpcore uses too)
CONNECTING = "connection.connect_tcp.started"
SENDING = "http11.send_request_headers.started"

#: reports a request's progress (CONNECTING, SENDING), as httpx's `trace` extension does
Trace = Callable[[str, dict[str, Any]], Awaitable[None]]

_HEAD, _FIXED, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILER, _UNTIL_CLOSE, _DONE = range(8)
MAX_HEAD = 64 * 1024
#: how the lines of the headers that frame a response begin (lower case), the only ones split as the head
#: arrives: with the name, or with the blanks that `strip` takes off it
_FRAMING = (b"content-length", b"transfer-encoding", b"connection", b" ", b"\t", b"\r", b"\n", b"\x0b", b"\x0c")


class ResponseParser:
    """Incremental framing of one response: status, headers, and a body delimited by Content-Length,
    chunked transfer coding, or the connection closing. Body bytes go to `on_body` as they arrive."""

    __slots__ = ("_buf", "_head", "_headers", "_left", "_on_body", "_state", "close_after", "status")

    def __init__(self, on_body: Any) -> None:
        self._on_body = on_body
        self.reset()

    def reset(self) -> None:
        self._state = _HEAD
        self._buf = b""
        self._left = 0
        self.status = 0
        self._head = b""
        self._headers: list[tuple[bytes, bytes]] | None = None
        self.close_after = False

    @property
    def has_head(self) -> bool:
        return self._state != _HEAD

    def feed(self, data: bytes) -> bool:
        """Consume `data`; True once the response is complete."""
        buf = self._buf + data if self._buf else data
        self._buf = b""
        pos, end = 0, len(buf)
        while pos < end:
            state = self._state
            if state == _HEAD:
                idx = buf.find(b"\r\n\r\n", pos)
                if idx < 0:
                    if end - pos > MAX_HEAD:
                        raise ProtocolError("response headers too large")
                    self._buf = buf[pos:]
                    return False
                self._parse_head(buf[pos:idx])
                pos = idx + 4
                if self.status in (100, 102, 103):  # an interim response: the real one follows
                    self._state = _HEAD
            elif state in (_FIXED, _CHUNK_DATA):
                take = min(self._left, end - pos)
                if take:
                    self._on_body(buf[pos : pos + take])
                pos += take
                self._left -= take
                if self._left == 0:
                    self._state = _DONE if state == _FIXED else _CHUNK_CRLF
            elif state == _CHUNK_SIZE:
                idx = buf.find(b"\r\n", pos)
                if idx < 0:
                    self._buf = buf[pos:]
                    return False
                try:
                    size = int(buf[pos:idx].split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise ProtocolError("bad chunk size") from None
                pos = idx + 2
                self._left = size
                self._state = _CHUNK_DATA if size else _TRAILER
            elif state == _CHUNK_CRLF:
                if end - pos < 2:
                    self._buf = buf[pos:]
                    return False
                if buf[pos : pos + 2] != b"\r\n":
                    raise ProtocolError("chunk not followed by CRLF")
                pos += 2
                self._state = _CHUNK_SIZE
            elif state == _TRAILER:
                idx = buf.find(b"\r\n", pos)
                if idx < 0:
                    self._buf = buf[pos:]
                    return False
                if idx == pos:
                    self._state = _DONE
                pos = idx + 2
            elif state == _UNTIL_CLOSE:
                self._on_body(buf[pos:])
                pos = end
            else:  # _DONE, with bytes left over: never pipelined, so the peer is confused
                raise ProtocolError("bytes after the end of the response")
        return self._state == _DONE

    def eof(self) -> bool:
        """The connection closed: True if that completes the response (a close-delimited body)."""
        if self._state == _UNTIL_CLOSE:
            self._state = _DONE
        return self._state == _DONE

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """The response's headers as sent (names and values stripped), in order; split when asked for."""
        if self._headers is None:
            self._headers = []
            for line in self._head.split(b"\r\n"):
                name, sep, value = line.partition(b":")
                if sep:
                    self._headers.append((name.strip(), value.strip()))
        return self._headers

    def _parse_head(self, head: bytes) -> None:
        first, _, rest = head.partition(b"\r\n")
        parts = first.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError("bad status line")
        self.status = int(parts[1])
        self._head, self._headers = rest, None
        length, chunked, close = -1, False, parts[0] == b"HTTP/1.0"
        # only the lines that can be framing headers are split (lower-cased): those that begin with the name
        # of one, or with blanks (stripped, the name may be one)
        framing = []
        for line in rest.lower().split(b"\r\n"):
            if line.startswith(_FRAMING):
                name, sep, value = line.partition(b":")
                if sep:
                    framing.append((name.strip(), value.strip()))
        for key, value in framing:
            if key == b"content-length":
                if not value.isdigit():
                    raise ProtocolError("bad content-length")
                length = int(value)
            elif key == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif key == b"connection":
                close = value.lower() == b"close" or (close and value.lower() != b"keep-alive")
        self.close_after = close
        if self.status in (100, 102, 103):
            return
        if self.status in (204, 304):
            self._state = _DONE
        elif chunked:
            self._state = _CHUNK_SIZE
        elif length >= 0:
            self._left = length
            self._state = _FIXED if length else _DONE
        else:
            self.close_after = True
            self._state = _UNTIL_CLOSE


class _Connection(asyncio.Protocol):
    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = ResponseParser(self._on_body)
        self.head: asyncio.Future[None] | None = None
        self.chunks: deque[bytes] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.complete = False
        self.error: Exception | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, data: bytes) -> asyncio.Future[None]:
        self.parser.reset()
        self.chunks.clear()
        self.complete = False
        self.error = None
        self.head = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(data)
        return self.head

    def _on_body(self, data: bytes) -> None:
        self.chunks.append(data)

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        try:
            self.complete = self.parser.feed(data)
        except ProtocolError as exc:
            self._fail(httpx.RemoteProtocolError(f"the upstream's response is not valid HTTP: {exc}"))
            self.abort()
            return
        if self.head is not None and not self.head.done() and self.parser.has_head:
            self.head.set_result(None)
        self._wake()

    def _fail(self, exc: Exception) -> None:
        self.error = exc
        if self.head is not None and not self.head.done():
            self.head.set_exception(exc)
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if self.parser.has_head and self.parser.eof():
            self.complete = True
            if self.head is not None and not self.head.done():
                self.head.set_result(None)
            self._wake()
        elif not self.complete:
            self._fail(httpx.RemoteProtocolError("the upstream closed the connection"))

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def body(self) -> AsyncIterator[bytes]:
        return _BodyReader(self)


class _BodyReader:
    """A response's body as it arrives. Not an async generator: a stream's reader leaves its body before the
    end (at `[DONE]`, before the chunked terminator), and asyncio closes an async generator left so with a
    task of its own, scheduled through the loop's wake-up pipe — one more task and system call per stream."""

    __slots__ = ("_conn",)

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn

    def __aiter__(self) -> _BodyReader:
        return self

    async def __anext__(self) -> bytes:
        conn = self._conn
        while True:
            if conn.chunks:
                return conn.chunks.popleft()
            if conn.complete:
                raise StopAsyncIteration
            if conn.error is not None:
                raise conn.error
            conn.waiter = asyncio.get_running_loop().create_future()
            try:
                await conn.waiter
            finally:
                conn.waiter = None


@dataclass(frozen=True, slots=True)
class PoolUse:
    """A target's connection pool at one moment, for /metrics."""

    in_use: int
    waiting: int
    capacity: int


class _Pool:
    """Idle keep-alive connections to one host, newest first, and a cap on open ones."""

    def __init__(self, scheme: str, host: str, port: int, limit: int, ssl_context: ssl.SSLContext | None) -> None:
        self.scheme, self.host, self.port = scheme, host, port
        self.idle: list[_Connection] = []
        self.slots = asyncio.Semaphore(limit)
        self.limit = limit
        self.in_use = 0  # connections lent to a request (open or opening)
        self.waiting = 0  # requests waiting for one of them
        self.ssl_context = ssl_context

    async def get(self, pool_timeout: float | None, connect_timeout: float | None, trace: Any = None) -> _Connection:
        if self.slots.locked():  # no slot free: wait for one, at most the pool timeout
            self.waiting += 1
            try:
                async with asyncio.timeout(pool_timeout):
                    await self.slots.acquire()
            except TimeoutError:
                raise httpx.PoolTimeout(
                    f"no free connection to {self.host}:{self.port} within the pool timeout "
                    f"({self.limit} of {self.limit} in use)"
                ) from None
            finally:
                self.waiting -= 1
        else:
            await self.slots.acquire()  # a slot is free: taken at once, nothing to time
        self.in_use += 1
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                return conn
        if trace is not None:
            await trace(CONNECTING, {})
        loop = asyncio.get_running_loop()
        tls: dict[str, Any] = {}
        if self.scheme == "https":
            tls = {"ssl": self.ssl_context or ssl.create_default_context(), "server_hostname": self.host}
        try:
            async with asyncio.timeout(connect_timeout):
                _, conn = await loop.create_connection(lambda: _Connection(self), self.host, self.port, **tls)
        except TimeoutError:
            self._release()
            raise httpx.ConnectTimeout(f"connecting to {self.host}:{self.port} timed out") from None
        except (OSError, ssl.SSLError) as exc:
            self._release()
            raise httpx.ConnectError(f"cannot connect to {self.host}:{self.port}: {type(exc).__name__}") from None
        except BaseException:
            self._release()
            raise
        return conn

    def _release(self) -> None:
        self.in_use -= 1
        self.slots.release()

    def put(self, conn: _Connection) -> None:
        """The response was read to its end: keep the connection for the next request if it can be."""
        if not conn.closed and not conn.parser.close_after:
            self.idle.append(conn)
        else:
            conn.abort()
        self._release()

    def discard(self, conn: _Connection) -> None:
        conn.abort()
        self._release()

    def forget(self, conn: _Connection) -> None:
        if conn in self.idle:
            self.idle.remove(conn)


class FixedRequest:
    """The bytes every POST to one URL of a target starts with — request line, host and the target's fixed
    headers (its key among them) — encoded once; `encode` adds a call's request id, length and body."""

    __slots__ = ("head", "host", "key", "port", "scheme")

    def __init__(self, url: str, headers: Mapping[str, str]) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise httpx.UnsupportedProtocol(f"unsupported URL {url!r}")
        self.scheme, self.host = parts.scheme, parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.key = (self.scheme, self.host, self.port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"POST {target} HTTP/1.1", f"host: {parts.netloc.rpartition('@')[2]}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self.head = ("\r\n".join(lines) + "\r\n").encode("utf-8")

    def encode(self, request_id: str, body: bytes) -> bytes:
        return b"%sx-request-id: %s\r\ncontent-length: %d\r\n\r\n%s" % (
            self.head,
            request_id.encode("ascii", "replace"),
            len(body),
            body,
        )


class Answer:
    """An upstream's response as it arrives: status and headers at once, the body read from the connection.
    `close` hands the connection back when the body was read to its end, and drops it otherwise."""

    __slots__ = ("_conn", "_pool", "_released", "status")

    def __init__(self, conn: _Connection, pool: _Pool) -> None:
        self._conn, self._pool = conn, pool
        self._released = False
        self.status = conn.parser.status

    @property
    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        return self._conn.parser.headers

    @property
    def headers(self) -> dict[str, str]:
        """The headers by lower-case name (the first of repeated ones); built when asked for."""
        found: dict[str, str] = {}
        for name, value in reversed(self._conn.parser.headers):
            found[name.decode("latin-1").lower()] = value.decode("latin-1")
        return found

    def body(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive (the providers ask for no content coding)."""
        return self._conn.body()

    async def read(self) -> bytes:
        conn = self._conn
        if conn.complete and len(conn.chunks) <= 1:  # the usual non-streaming answer: in one read
            return conn.chunks.popleft() if conn.chunks else b""
        return b"".join([piece async for piece in conn.body()])

    @property
    def complete(self) -> bool:
        """The body has arrived to its end (whether or not it was read)."""
        return self._conn.complete and self._conn.error is None

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        if self._released:
            return
        self._released = True
        if self.complete:
            self._pool.put(self._conn)
        else:
            # closed before the end (a client that left, a timeout): the connection cannot be reused
            self._pool.discard(self._conn)


class HttpxAnswer:
    """httpx's response seen as an `Answer` (for `http_client: httpx` and a given httpx transport)."""

    __slots__ = ("response", "status")

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.status = response.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self.response.headers

    def body(self) -> AsyncIterator[bytes]:
        return self.response.aiter_bytes()

    async def read(self) -> bytes:
        return await self.response.aread()

    @property
    def complete(self) -> bool:
        return self.response.is_closed  # httpx closes a response once its body was read to the end

    async def aclose(self) -> None:
        await self.response.aclose()


class _Body(httpx.AsyncByteStream):
    def __init__(self, answer: Answer) -> None:
        self.answer = answer

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.answer.body():
            yield chunk

    async def aclose(self) -> None:
        self.answer.close()


class LeanTransport(httpx.AsyncBaseTransport):
    def __init__(self, max_connections: int = 100, ssl_context: ssl.SSLContext | None = None) -> None:
        self.max_connections = max_connections
        self.ssl_context = ssl_context
        self.pools: dict[tuple[str, str, int], _Pool] = {}

    def _pool(self, key: tuple[str, str, int]) -> _Pool:
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = _Pool(*key, self.max_connections, self.ssl_context)
        return pool

    async def send(
        self,
        request: FixedRequest,
        request_id: str,
        body: bytes,
        *,
        pool_timeout: float | None,
        connect_timeout: float | None,
        trace: Trace | None = None,
    ) -> Answer:
        """One POST: a connection from the pool (waiting at most `pool_timeout` for one to be free), the
        request written, and the answer once its status line and headers have come."""
        return await self._exchange(
            self._pool(request.key), request.encode(request_id, body), pool_timeout, connect_timeout, trace
        )

    async def _exchange(
        self, pool: _Pool, data: bytes, pool_timeout: float | None, connect_timeout: float | None, trace: Trace | None
    ) -> Answer:
        conn = await pool.get(pool_timeout, connect_timeout, trace)
        try:
            if trace is not None:
                await trace(SENDING, {})
            await conn.send(data)
        except BaseException:
            pool.discard(conn)
            raise
        return Answer(conn, pool)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}")
        port = url.port or (443 if url.scheme == "https" else 80)
        body = request.content  # the providers always send bytes
        lines = [f"{request.method} {url.raw_path.decode('ascii')} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in request.headers.items()]
        if "content-length" not in request.headers and request.method != "GET":
            lines.append(f"content-length: {len(body)}")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        timeouts = request.extensions.get("timeout") or {}
        answer = await self._exchange(
            self._pool((url.scheme, url.host, port)),
            data,
            timeouts.get("pool"),
            timeouts.get("connect"),
            request.extensions.get("trace"),
        )
        return httpx.Response(
            answer.status,
            headers=answer.raw_headers,
            stream=_Body(answer),
            extensions={"http_version": b"HTTP/1.1"},
            request=request,
        )

    def use(self) -> PoolUse:
        """Connections in use, requests waiting for one, and the cap (summed over the hosts reached)."""
        pools = self.pools.values()
        return PoolUse(
            in_use=sum(p.in_use for p in pools),
            waiting=sum(p.waiting for p in pools),
            capacity=self.max_connections * max(1, len(self.pools)),
        )

    async def aclose(self) -> None:
        for pool in self.pools.values():
            for conn in pool.idle:
                conn.abort()
            pool.idle.clear()
