"""The floor: a minimal asyncio pass-through HTTP/1.1 proxy, the least work a Python proxy can do.

Client connections are kept alive; each complete request (head + Content-Length body) is written verbatim
to a pooled keep-alive upstream connection, and the upstream's response bytes are relayed to the client as
they arrive (so streams pass through unbuffered). The proxy parses only the framing it must — where a request
ends and where a response ends — and never the JSON. No routing, retries, timeouts or logging: it measures
what any Python gateway pays at minimum (event loop, sockets, HTTP framing), so a real gateway's overhead can
be read against it. Protocol callbacks rather than streams, uvloop when importable. Standard library only.

    python bench/floor_proxy.py --port 4001 --upstream 127.0.0.1:4010
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import contextlib

from http1 import ProtocolError, ResponseParser

MAX_HEAD = 64 * 1024
_TASKS: set[asyncio.Task[None]] = set()  # connection attempts in flight (referenced until done)
_BAD_BODY = b'{"error":{"message":"upstream failed","type":"api_error","param":null,"code":null}}'
BAD_GATEWAY = (
    b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
    b"Connection: close\r\n\r\n" % len(_BAD_BODY)
) + _BAD_BODY


def _nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Upstream(asyncio.Protocol):
    """One keep-alive connection to the upstream; carries one exchange at a time."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.client: Client | None = None
        self.parser = ResponseParser()
        self.sent_any = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        _nodelay(transport)

    def start(self, client: Client, request: bytes) -> None:
        self.client = client
        self.parser.reset()
        self.sent_any = False
        self.transport.write(request)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None:
            return
        client.write(data)
        self.sent_any = True
        try:
            complete = self.parser.feed(data)
        except ProtocolError:
            self.transport.abort()  # type: ignore[union-attr]
            return
        if complete:
            self.client = None
            if self.parser.close_after:
                self.transport.close()  # type: ignore[union-attr]
            else:
                self.pool.put(self)
            client.response_done(self.parser.close_after)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.lost(self)
        client, self.client = self.client, None
        if client is not None:
            if self.parser.eof():
                client.response_done(True)
            else:
                client.upstream_failed(self.sent_any)


class Pool:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.idle: list[Upstream] = []

    def get_now(self) -> Upstream | None:
        return self.idle.pop() if self.idle else None

    async def get(self) -> Upstream:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: Upstream(self), self.host, self.port)
        return conn

    def put(self, conn: Upstream) -> None:
        self.idle.append(conn)

    def lost(self, conn: Upstream) -> None:
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)


class Client(asyncio.Protocol):
    """One client connection: requests are read one after another and relayed in order."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.need = -1  # bytes of the current request (head + body) once its head is read
        self.busy = False
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        _nodelay(transport)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._next()

    def _next(self) -> None:
        if self.need < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self.transport.close()  # type: ignore[union-attr]
                return
            length = 0
            for line in self.buf[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
                    break
            self.need = end + 4 + length
        if len(self.buf) < self.need:
            return
        request, self.buf = self.buf[: self.need], self.buf[self.need :]
        self.need = -1
        self.busy = True
        upstream = self.pool.get_now()
        if upstream is not None:
            upstream.start(self, request)
        else:
            task = asyncio.ensure_future(self._connect_and_send(request))
            _TASKS.add(task)
            task.add_done_callback(_TASKS.discard)

    async def _connect_and_send(self, request: bytes) -> None:
        try:
            upstream = await self.pool.get()
        except OSError:
            self.upstream_failed(False)
            return
        upstream.start(self, request)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closing:
            self.transport.write(data)

    def response_done(self, close: bool) -> None:
        self.busy = False
        if close:
            self.closing = True
            self.transport.close()  # type: ignore[union-attr]
        elif self.buf:
            self._next()

    def upstream_failed(self, sent_any: bool) -> None:
        if self.transport is None or self.closing:
            return
        if not sent_any:
            self.transport.write(BAD_GATEWAY)
        self.closing = True
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.transport = None


async def serve(host: str, port: int, upstream: str) -> None:
    up_host, _, up_port = upstream.rpartition(":")
    pool = Pool(up_host or "127.0.0.1", int(up_port))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(pool), host, port, backlog=1024)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the upstream")
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args()
    coro = serve(args.host, args.port, args.upstream)
    if not args.no_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.run(coro)
            return
    asyncio.run(coro)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
