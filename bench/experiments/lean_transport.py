"""Experiment: a lean httpx transport, to measure what httpcore costs Lifeline on its hot path.

Not part of Lifeline. ``serve_lean.py`` starts the unchanged ``lifeline serve`` with this transport handed to
every `openai` target (through the provider's existing ``transport`` argument), so the difference between
the two runs is exactly httpcore + anyio + h11 against a small HTTP/1.1 client: a LIFO pool of keep-alive
connections per host, one asyncio Protocol per connection, responses framed by bench/http1.py, body chunks
handed to httpx as they arrive (so streaming still streams). No TLS, no proxies, no HTTP/2: enough for the
benchmark's loopback upstream, not a product.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import contextlib

from http1 import ProtocolError, ResponseParser


class _Conn(asyncio.Protocol):
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
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def begin(self, data: bytes) -> asyncio.Future[None]:
        self.parser.reset()
        self.chunks.clear()
        self.complete = False
        self.error = None
        self.head = asyncio.get_running_loop().create_future()
        self.transport.write(data)  # type: ignore[union-attr]
        return self.head

    def _on_body(self, data: bytes) -> None:
        self.chunks.append(data)

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def data_received(self, data: bytes) -> None:
        try:
            self.complete = self.parser.feed(data)
        except ProtocolError as exc:
            self._fail(httpx.RemoteProtocolError(str(exc)))
            self.transport.abort()  # type: ignore[union-attr]
            return
        if self.head is not None and not self.head.done() and self.parser.status:
            self.head.set_result(None)
        self._wake()

    def _fail(self, exc: Exception) -> None:
        self.error = exc
        if self.head is not None and not self.head.done():
            self.head.set_exception(exc)
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.lost(self)
        if self.parser.eof():
            self.complete = True
            self._wake()
        elif not self.complete:
            self._fail(httpx.RemoteProtocolError("the upstream closed the connection"))

    async def body(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        while True:
            while self.chunks:
                yield self.chunks.popleft()
            if self.complete:
                return
            if self.error is not None:
                raise self.error
            self.waiter = loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None


class _Pool:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[_Conn] = []

    async def get(self) -> _Conn:
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                return conn
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(lambda: _Conn(self), self.host, self.port)
        except OSError as exc:
            raise httpx.ConnectError(str(exc)) from None
        return conn

    def put(self, conn: _Conn) -> None:
        if not conn.closed and not conn.parser.close_after:
            self.idle.append(conn)
        else:
            conn.transport.close()  # type: ignore[union-attr]

    def lost(self, conn: _Conn) -> None:
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)


class _Body(httpx.AsyncByteStream):
    def __init__(self, conn: _Conn, pool: _Pool) -> None:
        self.conn, self.pool = conn, pool
        self.released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.conn.body():
            yield chunk

    async def aclose(self) -> None:
        if self.released:
            return
        self.released = True
        if self.conn.complete and self.conn.error is None:
            self.pool.put(self.conn)
        else:
            self.conn.transport.abort()  # type: ignore[union-attr]


class LeanTransport(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.pools: dict[tuple[str, int], _Pool] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        port = url.port or (443 if url.scheme == "https" else 80)
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol("the lean transport speaks plain HTTP only")
        key = (url.host, port)
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = _Pool(url.host, port)
        body = request.content  # Lifeline always sends bytes
        lines = [f"{request.method} {url.raw_path.decode('ascii')} HTTP/1.1"]
        lines += [f"{k}: {v}" for k, v in request.headers.items()]
        if "content-length" not in request.headers:
            lines.append(f"Content-Length: {len(body)}")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        conn = await pool.get()
        try:
            await conn.begin(data)
        except BaseException:
            conn.transport.abort()  # type: ignore[union-attr]
            raise
        headers = []
        for line in conn.parser.head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            headers.append((name.strip(), value.strip()))
        return httpx.Response(
            conn.parser.status,
            headers=headers,
            stream=_Body(conn, pool),
            extensions={"http_version": b"HTTP/1.1"},
            request=request,
        )

    async def aclose(self) -> None:
        for pool in self.pools.values():
            for conn in pool.idle:
                conn.transport.close()  # type: ignore[union-attr]
            pool.idle.clear()
