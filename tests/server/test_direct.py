"""The hot route served from the HTTP/1.1 protocol without ASGI (server/direct.py), on real sockets.

The gateway runs on uvicorn's protocol (Lifeline's, with its limits) in the test's own event loop, over fake
targets, so that a test can hold a stream where it wants and count the writes the server makes. The same
request sent to `/v1/chat/completions?via=asgi` takes the ASGI path (a request target with a query is not served
directly), which is what every direct answer is compared with, byte for byte.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import uvicorn
from starlette.responses import StreamingResponse
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.server import ServerState

import lifeline.server.routes.chat as chat_route
from lifeline.config import Config
from lifeline.providers.base import ChatCall, Chunk
from lifeline.server.direct import DirectCycle, forwarded
from lifeline.server.serving import uvicorn_options
from tests.server import fakes
from tests.server.fakes import PROMPT, USAGE, InProcess, _chunk, in_process, make_config

pytestmark = pytest.mark.timeout(60)

DIRECT = "/v1/chat/completions"
VIA_ASGI = "/v1/chat/completions?via=asgi"
DATE = (b"date", b"Tue, 01 Dec 2026 04:00:00 GMT")
WORKER = (b"x-lifeline-worker", b"1")
#: a guard against a test hanging, never a measure
GUARD = 30.0
#: bytes of content per chunk of the "big" target's stream
BIG_PIECE = 8192
BIG_CHUNKS = 400


class Scripted(fakes.FakeProvider):
    """The fake targets, and two more: "gated" streams two chunks, waits for `gate`, then the rest; "big" streams
    BIG_CHUNKS large chunks, each after a turn of the loop, counting them in `produced`."""

    gate: asyncio.Event
    produced = 0
    cancelled = False

    async def complete(self, call: ChatCall) -> Any:
        if self.model != "hang":
            return await super().complete(call)
        self.called.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise

    async def stream(self, call: ChatCall) -> AsyncIterator[Chunk]:
        if self.model == "gated":
            self.called.set()
            yield _chunk(self.model, {"role": "assistant"})
            yield _chunk(self.model, {"content": "Hello"})
            await self.gate.wait()
            yield _chunk(self.model, {"content": " there"})
            yield _chunk(self.model, {}, "stop")
            return
        if self.model == "late":  # opens its stream once `gate` is set
            self.called.set()
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                self.cancelled = True
                raise
            yield _chunk(self.model, {"content": "Hello"})
            yield _chunk(self.model, {}, "stop")
            return
        if self.model == "big":
            self.called.set()
            for _ in range(BIG_CHUNKS):
                await asyncio.sleep(0)
                self.produced += 1
                yield _chunk(self.model, {"content": "x" * BIG_PIECE})
            yield _chunk(self.model, {}, "stop", usage=USAGE)
            return
        async for chunk in super().stream(call):
            yield chunk


class _Recorded:
    """A transport that keeps every write (the server's side of one connection)."""

    def __init__(self, transport: asyncio.Transport, writes: list[bytes]) -> None:
        self._transport = transport
        self.writes = writes

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


@dataclass
class Served:
    inner: InProcess
    port: int
    #: the server's writes, per connection in the order they were made
    writes: list[list[bytes]] = field(default_factory=list)
    #: the paths that reached the ASGI application
    asgi_paths: list[str] = field(default_factory=list)
    protocols: list[Any] = field(default_factory=list)
    #: the client address and scheme of each request that reached the ASGI application
    asgi_clients: list[tuple[str, str]] = field(default_factory=list)

    async def connect(
        self, *, rcvbuf: int | None = None, limit: int = 2**16
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A client connection; its reader takes at most about 2 * `limit` bytes from the socket unread."""
        sock = socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.port))
        return await asyncio.open_connection(sock=sock, limit=limit)


@asynccontextmanager
async def served(
    config: Config, monkeypatch: pytest.MonkeyPatch, *, sndbuf: int | None = None, high_water: int | None = None
) -> AsyncIterator[Served]:
    """The app for `config` over the fake targets, on Lifeline's HTTP/1.1 protocol on a loopback port."""
    monkeypatch.setattr(fakes, "FakeProvider", Scripted)
    async with in_process(config) as inner:
        options = uvicorn.Config(inner.app, lifespan="off", **uvicorn_options(config))
        options.load()
        state = ServerState()
        state.default_headers = [DATE, WORKER]
        protocol_class = options.http_protocol_class
        server_side = Served(inner, 0)
        asgi = inner.app.build_middleware_stack()

        async def seen(scope: Any, receive: Any, send: Any) -> None:
            server_side.asgi_paths.append(
                scope["path"] + ("?" + scope["query_string"].decode() if scope["query_string"] else "")
            )
            server_side.asgi_clients.append((scope["client"][0], scope["scheme"]))
            await asgi(scope, receive, send)

        inner.app.middleware_stack = seen

        class Recording(protocol_class):  # type: ignore[misc,valid-type]
            def connection_made(self, transport: asyncio.Transport) -> None:
                if sndbuf is not None:
                    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
                if high_water is not None:
                    transport.set_write_buffer_limits(high=high_water)
                writes: list[bytes] = []
                server_side.writes.append(writes)
                server_side.protocols.append(self)
                super().connection_made(_Recorded(transport, writes))  # type: ignore[arg-type]

        server = await asyncio.get_running_loop().create_server(
            lambda: Recording(config=options, server_state=state, app_state={}), "127.0.0.1", 0
        )
        server_side.port = server.sockets[0].getsockname()[1]
        try:
            yield server_side
        finally:
            server.close()
            for protocol in server_side.protocols:
                protocol.transport.close()
            await server.wait_closed()


def post(target: str, body: dict[str, Any], *headers: str, version: str = "1.1") -> bytes:
    data = orjson.dumps(body)
    lines = [f"POST {target} HTTP/{version}", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines += [*headers, f"Content-Length: {len(data)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One response as the bytes of its head and of its body as framed (chunks included)."""
    async with asyncio.timeout(GUARD):
        head = await reader.readuntil(b"\r\n\r\n")
        lower = head.lower()
        if b"transfer-encoding: chunked" in lower:
            body = b""
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.strip(), 16)
                body += size_line + await reader.readexactly(size + 2)
                if size == 0:
                    return head, body
        length = re.search(rb"content-length: (\d+)", lower)
        return head, await reader.readexactly(int(length.group(1)) if length else 0)


async def exchange(server: Served, request: bytes) -> tuple[bytes, bytes]:
    reader, writer = await server.connect()
    writer.write(request)
    try:
        return await read_response(reader)
    finally:
        writer.close()


async def after_continue(server: Served, request: bytes) -> tuple[bytes, bytes]:
    """`request` (with `Expect: 100-continue`) sent as a client sends it: the head, then the body once the
    interim answer has come; the answer after it."""
    reader, writer = await server.connect()
    head_part, _, body = request.partition(b"\r\n\r\n")
    writer.write(head_part + b"\r\n\r\n")
    try:
        async with asyncio.timeout(GUARD):
            assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(body)
        return await read_response(reader)
    finally:
        writer.close()


def unchunked(body: bytes) -> bytes:
    out, rest = b"", body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        out, rest = out + rest[:size], rest[size + 2 :]
    return out


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(GUARD):
        while not condition():
            await asyncio.sleep(0.01)


CHAT = {"model": "chat", "messages": PROMPT}
SAME_ID = "x-request-id: same-id-1"


def run(scenario: Callable[[], Any]) -> Any:
    return asyncio.run(scenario())


@pytest.mark.parametrize(
    "body",
    [
        CHAT,
        {**CHAT, "stream": True, "stream_options": {"include_usage": True}},
        {"model": "nope", "messages": PROMPT},  # 404 from the exchange, in the app's handler's envelope
        {"model": "chat"},  # 400: no messages
    ],
    ids=["whole", "stream", "unknown-alias", "invalid"],
)
def test_the_hot_route_is_served_without_asgi_and_answers_as_asgi_does(
    body: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        async with served(make_config("ok"), monkeypatch) as server:
            direct = await exchange(server, post(DIRECT, body, SAME_ID))
            via_asgi = await exchange(server, post(VIA_ASGI, body, SAME_ID))
            assert server.asgi_paths == [VIA_ASGI]
            assert direct == via_asgi
            head = direct[0].decode()
            assert "date: Tue, 01 Dec 2026" in head and "x-lifeline-worker: 1" in head
            assert "x-request-id: same-id-1" in head
            if not body.get("stream"):
                assert len(server.writes[0]) == 1  # status line, headers and body in one write

    run(scenario)


def test_errors_on_the_direct_path_keep_their_envelope_and_no_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug, with a secret sk-abcdefabcdefabcdef in it")

    monkeypatch.setattr(chat_route, "validate_chat_request", fail)

    async def scenario() -> None:
        async with served(make_config("ok"), monkeypatch) as server:
            direct = await exchange(server, post(DIRECT, CHAT, SAME_ID))
            via_asgi = await exchange(server, post(VIA_ASGI, CHAT, SAME_ID))
            assert direct == via_asgi
            assert direct[0].startswith(b"HTTP/1.1 500 ")
            error = orjson.loads(direct[1])["error"]
            assert error["message"] == "The gateway hit an internal error; it has been logged."
            assert b"sk-" not in direct[1]
            # the edge guard's refusal, before the gateway counts the request
            refused = await exchange(
                server, post(DIRECT, CHAT, SAME_ID).replace(b"Host: 127.0.0.1", b"Host: evil.example")
            )
            assert refused == await exchange(
                server, post(VIA_ASGI, CHAT, SAME_ID).replace(b"Host: 127.0.0.1", b"Host: evil.example")
            )
            assert refused[0].startswith(b"HTTP/1.1 403 ") and orjson.loads(refused[1])["error"]["code"]
            assert server.inner.app.state.gateway.in_flight == 0
            assert server.asgi_paths == [VIA_ASGI, VIA_ASGI]

    run(scenario)


def test_events_ready_together_go_out_in_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """The head and the two chunks the target had ready are one write; the rest, after the target's wait, the
    next; the framing is the ASGI path's chunk per event."""

    async def scenario() -> None:
        async with served(make_config("gated"), monkeypatch) as server:
            (provider,) = server.inner.providers.values()
            provider.gate = asyncio.Event()  # type: ignore[attr-defined]
            reader, writer = await server.connect()
            writer.write(post(DIRECT, {**CHAT, "stream": True}))
            await until(lambda: len(server.writes[0]) >= 1)
            first = server.writes[0][0]
            assert first.startswith(b"HTTP/1.1 200 ") and b"transfer-encoding: chunked" in first
            assert first.count(b"data: ") == 2 and b'"content":"Hello"' in first
            provider.gate.set()  # type: ignore[attr-defined]
            _head, body = await read_response(reader)
            writer.close()
            events = [e for e in unchunked(body).split(b"\n\n") if e]
            assert len(events) == 5 and events[-1] == b"data: [DONE]"
            assert len(server.writes[0]) < len(events)
            assert server.inner.record.outcome == "ok"
            assert server.asgi_paths == []

    run(scenario)


def test_a_client_leaving_mid_stream_stops_the_stream_with_one_ledger_record(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        async with served(make_config("hang"), monkeypatch) as server:
            reader, writer = await server.connect()
            writer.write(post(DIRECT, {**CHAT, "stream": True}))
            async with asyncio.timeout(GUARD):
                await reader.readuntil(b'"content":"Hello"')
            writer.close()
            await until(lambda: len(server.inner.finishes) == 1)
            await until(lambda: server.inner.app.state.gateway.in_flight == 0)
            assert server.inner.record.outcome == "client_closed"
            assert server.asgi_paths == []

    run(scenario)


def test_a_client_leaving_before_the_answer_cancels_the_work_with_one_ledger_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario() -> None:
        async with served(make_config("hang"), monkeypatch) as server:
            (provider,) = server.inner.providers.values()
            _reader, writer = await server.connect()
            writer.write(post(DIRECT, CHAT))
            async with asyncio.timeout(GUARD):
                await provider.called.wait()
            writer.close()
            await until(lambda: len(server.inner.finishes) == 1)
            await until(lambda: server.inner.app.state.gateway.in_flight == 0)
            assert provider.cancelled  # type: ignore[attr-defined]
            (finish,) = server.inner.finishes
            assert (finish.status, finish.outcome) == (499, "client_closed")
            assert server.asgi_paths == []

    run(scenario)


def test_a_client_that_does_not_read_holds_the_stream_at_the_high_water_mark(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        async with served(make_config("big"), monkeypatch, sndbuf=8192) as server:
            (provider,) = server.inner.providers.values()
            reader, writer = await server.connect(rcvbuf=8192)
            writer.write(post(DIRECT, {**CHAT, "stream": True}))
            protocol = await _protocol(server)
            await until(lambda: protocol.flow.write_paused)
            held = provider.produced  # type: ignore[attr-defined]
            for _ in range(200):  # turns of the loop in which an unchecked stream would go on producing
                await asyncio.sleep(0)
            assert provider.produced == held < BIG_CHUNKS  # type: ignore[attr-defined]
            _head, body = await read_response(reader)  # the client reads: the stream goes on to its end
            writer.close()
            events = [e for e in unchunked(body).split(b"\n\n") if e]
            assert events[-1] == b"data: [DONE]" and len(events) == BIG_CHUNKS + 2
            await until(lambda: len(server.inner.finishes) == 1)
            assert server.inner.record.outcome == "ok"

    run(scenario)


def test_a_client_that_does_not_read_holds_pipelined_whole_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole answers wait for the client to read once the transport's buffer is full: the pipelined requests
    behind them are not started (no upstream call, no ledger row) until it reads."""
    count = 200

    async def scenario() -> None:
        async with served(make_config("ok"), monkeypatch, sndbuf=4096, high_water=2048) as server:
            reader, writer = await server.connect(rcvbuf=4096, limit=1024)
            writer.write(b"".join(post(DIRECT, CHAT) for _ in range(count)))
            protocol = await _protocol(server)
            await until(lambda: protocol.flow.write_paused)
            held = len(server.inner.finishes)
            for _ in range(500):  # turns of the loop in which an unchecked server would go on answering
                await asyncio.sleep(0)
            assert len(server.inner.finishes) == held < count
            for _ in range(count):  # the client reads: every request is answered, in order
                head, _body = await read_response(reader)
                assert head.startswith(b"HTTP/1.1 200 ")
            writer.close()
            await until(lambda: len(server.inner.finishes) == count)

    run(scenario)


def test_a_refused_connection_cancels_the_routing_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The protocol refuses the connection (a bad next request) while the stream's target has not opened: the
    router's work is cancelled then, not left to open a stream that nobody closes."""

    async def scenario() -> None:
        async with served(make_config("late"), monkeypatch) as server:
            (provider,) = server.inner.providers.values()
            provider.gate = asyncio.Event()  # type: ignore[attr-defined]
            reader, writer = await server.connect()
            writer.write(post(DIRECT, {**CHAT, "stream": True}))
            async with asyncio.timeout(GUARD):
                await provider.called.wait()
            protocol = await _protocol(server)
            writer.write(b"BOGUS / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            await until(lambda: protocol._closing)  # refused (no answer: the stream's answer comes first)
            provider.gate.set()  # type: ignore[attr-defined]
            await until(lambda: len(server.inner.finishes) == 1)
            await until(lambda: server.inner.app.state.gateway.in_flight == 0)
            assert provider.cancelled  # type: ignore[attr-defined]
            assert server.inner.record.outcome == "client_closed"
            async with asyncio.timeout(GUARD):
                assert await reader.read() == b""  # the refused connection closes
            writer.close()
            await until(lambda: protocol._answering.task is None)  # its task has ended

    run(scenario)


def test_a_cancellation_the_work_turns_into_an_error_is_taken_back() -> None:
    """The client's cancellation reached the work, which ended with an error of its own: the task is not left
    cancelling (what it still does, the accounting under its timeouts, is not cut short)."""

    async def scenario() -> None:
        cycle = DirectCycle(
            {},
            None,
            None,
            [],
            None,
            None,
            keep_alive=True,
            expect_100_continue=False,
            on_response=lambda: None,  # type: ignore[arg-type]
        )
        cycle.task = asyncio.current_task()
        started = asyncio.Event()

        async def work() -> None:
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                raise ValueError("the work's own ending") from None

        async def leave() -> None:
            await started.wait()
            cycle.disconnect()

        leaving = asyncio.ensure_future(leave())
        with pytest.raises(ValueError):
            await cycle.cancellable(work())
        await leaving
        assert cycle.task is not None and cycle.task.cancelling() == 0

    run(scenario)


async def _until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server still sends until it closes the connection."""
    async with asyncio.timeout(GUARD):
        return await reader.read()


def test_an_upgrade_request_with_a_body_is_refused_and_its_body_never_served(monkeypatch: pytest.MonkeyPatch) -> None:
    """The parser would end an Upgrade request at its head and read its body as a next request: the request is
    refused with a 400 envelope and the connection closed, and the smuggled request never reaches the app."""
    smuggled = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

    async def scenario() -> None:
        async with served(make_config("ok"), monkeypatch) as server:
            for target in (DIRECT, VIA_ASGI):
                reader, writer = await server.connect()
                head = f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: x\r\n"
                writer.write(f"{head}Content-Length: {len(smuggled)}\r\n\r\n".encode())
                await writer.drain()
                writer.write(smuggled)
                answer, body = await read_response(reader)
                assert answer.startswith(b"HTTP/1.1 400 ") and b"connection: close" in answer
                assert orjson.loads(body)["error"]["code"] == "invalid_http_request"
                assert await _until_closed(reader) == b""
                writer.close()
            assert server.asgi_paths == []
            assert server.inner.finishes == []

    run(scenario)


def test_a_bodiless_upgrade_request_is_answered_and_the_connection_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        async with served(make_config("ok"), monkeypatch) as server:
            reader, writer = await server.connect()
            writer.write(
                b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
                b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            )
            answer, _body = await read_response(reader)
            assert answer.startswith(b"HTTP/1.1 200 ") and b"connection: close" in answer
            assert await _until_closed(reader) == b""
            writer.close()
            assert server.asgi_paths == ["/healthz"]

    run(scenario)


class _Tracked:
    """A stream's body iterator that notes whether it was closed (a plain object: no finalizer closes it)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.closed = False

    def __aiter__(self) -> _Tracked:
        return self

    async def __anext__(self) -> Any:
        return await self.inner.__anext__()

    async def aclose(self) -> None:
        self.closed = True
        await self.inner.aclose()


def _amend_streams(server: Served, monkeypatch: pytest.MonkeyPatch, header: tuple[bytes, bytes]) -> list[_Tracked]:
    """Every stream the app answers gets `header` and a tracked body iterator (listed in what is returned)."""
    front = server.inner.app.state.front
    respond = front.respond
    tracked: list[_Tracked] = []

    async def amended(endpoint: Any, request: Any) -> Any:
        response = await respond(endpoint, request)
        if isinstance(response, StreamingResponse):
            response.body_iterator = _Tracked(response.body_iterator)
            tracked.append(response.body_iterator)
            response.raw_headers.append(header)
        return response

    monkeypatch.setattr(front, "respond", amended)
    return tracked


@pytest.mark.parametrize(
    "header", [(b"x-bad", b"a\r\nset-cookie: x"), (b"set-cookie: x\r\nx-bad", b"a")], ids=["value", "name"]
)
def test_a_stream_with_an_invalid_header_is_closed_and_answered_500(
    header: tuple[bytes, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The header is refused before anything is written; the stream, already open upstream, is closed and
    accounted once."""

    async def scenario() -> None:
        async with served(make_config("ok"), monkeypatch) as server:
            tracked = _amend_streams(server, monkeypatch, header)
            head, body = await exchange(server, post(DIRECT, {**CHAT, "stream": True}))
            assert head.startswith(b"HTTP/1.1 500 ") and b"set-cookie" not in head + body
            assert orjson.loads(body)["error"]["message"]
            assert [stream.closed for stream in tracked] == [True]
            await until(lambda: len(server.inner.finishes) == 1)
            await until(lambda: server.inner.app.state.gateway.in_flight == 0)

    run(scenario)


def test_a_stream_goes_chunked_without_a_content_length(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        async with served(make_config("ok"), monkeypatch) as server:
            _amend_streams(server, monkeypatch, (b"content-length", b"5"))
            head, body = await exchange(server, post(DIRECT, {**CHAT, "stream": True}))
            assert head.startswith(b"HTTP/1.1 200 ") and b"transfer-encoding: chunked" in head
            assert b"content-length" not in head
            assert unchunked(body).endswith(b"data: [DONE]\n\n")

    run(scenario)


async def _protocol(server: Served) -> Any:
    await until(lambda: bool(server.protocols))
    return server.protocols[-1]


def test_pipelined_requests_are_answered_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        async with served(make_config("ok"), monkeypatch) as server:
            reader, writer = await server.connect()
            writer.write(
                post(DIRECT, {**CHAT, "stream": True}, "x-request-id: one")
                + b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nx-request-id: two\r\n\r\n"
                + post(DIRECT, CHAT, "x-request-id: three")
                + post(VIA_ASGI, CHAT, "x-request-id: four")
            )
            ids = []
            for _ in range(4):
                head, _ = await read_response(reader)
                assert head.startswith(b"HTTP/1.1 200 ")
                found = re.search(rb"x-request-id: (\w+)", head)
                assert found is not None
                ids.append(found.group(1))
            writer.close()
            assert ids == [b"one", b"two", b"three", b"four"]
            assert server.asgi_paths == ["/healthz", VIA_ASGI]
            await until(lambda: len(server.inner.finishes) == 3)

    run(scenario)


def test_http_1_0_connection_close_expect_continue_and_a_large_body_as_on_the_asgi_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    too_large = post("{target}", CHAT, SAME_ID).replace(b"Content-Length: ", b"Content-Length: 9999999")

    async def answers(server: Served, target: str) -> list[bytes]:
        seen = []
        for request in (
            post(target, CHAT, SAME_ID, version="1.0"),
            post(target, CHAT, SAME_ID, "Connection: close"),
            too_large.replace(b"{target}", target.encode()),  # 413 before the body has come
        ):
            reader, writer = await server.connect()
            writer.write(request)
            head, body = await read_response(reader)
            assert b"connection: close" in head or b" 413 " in head
            async with asyncio.timeout(GUARD):
                assert await reader.read() == b""  # the server closed the connection
            writer.close()
            seen.append(head + body)
        # Expect: 100-continue: the interim answer once the body is read, then the answer
        head, answer = await after_continue(server, post(target, CHAT, SAME_ID, "Expect: 100-continue"))
        return [*seen, head + answer]

    async def scenario() -> None:
        async with served(make_config("ok"), monkeypatch) as server:
            direct = await answers(server, DIRECT)
            assert server.asgi_paths == []
            assert direct == await answers(server, VIA_ASGI)
            assert [answer[:12] for answer in direct] == [
                b"HTTP/1.1 200",
                b"HTTP/1.1 200",
                b"HTTP/1.1 413",
                b"HTTP/1.1 200",
            ]

    run(scenario)


def test_a_trusted_proxy_names_the_client_as_on_the_asgi_path() -> None:
    trusted = ProxyHeadersMiddleware(lambda *a: None, trusted_hosts="127.0.0.1").trusted_hosts  # type: ignore[arg-type]
    headers = [(b"x-forwarded-for", b"203.0.113.7"), (b"x-forwarded-proto", b"https")]
    scope: dict[str, Any] = {"client": ("127.0.0.1", 5000), "scheme": "http", "headers": headers}
    forwarded(scope, trusted)
    assert scope["client"] == ("203.0.113.7", 0) and scope["scheme"] == "https"
    untrusted: dict[str, Any] = {"client": ("198.51.100.1", 5000), "scheme": "http", "headers": headers}
    forwarded(untrusted, trusted)
    assert untrusted["client"] == ("198.51.100.1", 5000) and untrusted["scheme"] == "http"


def test_a_trusted_proxy_names_the_client_on_a_socket_as_on_the_asgi_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvicorn trusts 127.0.0.1 (its default `forwarded_allow_ips`), where the test connects from."""

    async def scenario() -> None:
        async with served(make_config("ok"), monkeypatch) as server:
            front = server.inner.app.state.front
            respond = front.respond
            direct: list[tuple[str, str]] = []

            async def recording(endpoint: Any, request: Any) -> Any:
                direct.append((request.scope["client"][0], request.scope["scheme"]))
                return await respond(endpoint, request)

            monkeypatch.setattr(front, "respond", recording)
            proxied = ("X-Forwarded-For: 203.0.113.7", "X-Forwarded-Proto: https")
            for target in (DIRECT, VIA_ASGI):
                head, _body = await exchange(server, post(target, CHAT, *proxied))
                assert head.startswith(b"HTTP/1.1 200 ")
            # the endpoint sees the proxy's client on both paths (the second one's through the ASGI application)
            assert direct == [("203.0.113.7", "https")] * 2
            assert server.asgi_clients == [("203.0.113.7", "https")] and server.asgi_paths == [VIA_ASGI]

    run(scenario)


def _with_server(config: Config, **settings: Any) -> Config:
    return config.model_copy(update={"server": config.server.model_copy(update=settings)})


def test_a_connection_closes_after_its_maximum_of_direct_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        async with served(_with_server(make_config("ok"), max_requests_per_connection=3), monkeypatch) as server:
            reader, writer = await server.connect()
            for n in (1, 2, 3):
                writer.write(post(DIRECT, CHAT))
                head, _body = await read_response(reader)
                assert head.startswith(b"HTTP/1.1 200 ")
                assert (b"connection: close" in head) == (n == 3), (n, head)
            assert await _until_closed(reader) == b""
            writer.close()
            assert server.asgi_paths == []
            assert len(server.inner.finishes) == 3

    run(scenario)


def test_a_direct_request_whose_body_stops_gets_408_and_leaves_the_count(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        async with served(_with_server(make_config("ok"), body_timeout=0.3), monkeypatch) as server:
            reader, writer = await server.connect()
            writer.write(post(DIRECT, CHAT, SAME_ID)[:-10])  # the body's end never comes
            head, body = await read_response(reader)
            assert head.startswith(b"HTTP/1.1 408 ") and b"connection: close" in head
            assert b"x-request-id: same-id-1" in head
            assert orjson.loads(body)["error"]["code"] == "request_timeout"
            assert await _until_closed(reader) == b""
            writer.close()
            await until(lambda: server.inner.app.state.gateway.in_flight == 0)
            assert server.asgi_paths == [] and server.inner.finishes == []

    run(scenario)


def test_a_body_that_has_all_arrived_is_taken_whole_under_the_same_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A body already whole when the route reads it is taken without `receive` (nothing to wait for); one still
    coming is read through it; either way the limit and its 413 are those of the ASGI path."""
    received: list[int] = []
    plain_receive = DirectCycle.receive

    async def counted(self: DirectCycle) -> Any:
        received.append(1)
        return await plain_receive(self)

    monkeypatch.setattr(DirectCycle, "receive", counted)
    limit = len(orjson.dumps(CHAT)) + 16
    data = orjson.dumps({**CHAT, "user": "x" * 64})  # over the limit
    chunked = (
        b"Host: 127.0.0.1\r\nx-request-id: same-id-1\r\nTransfer-Encoding: chunked\r\n\r\n"
        + f"{len(data):x}\r\n".encode()
        + data
        + b"\r\n0\r\n\r\n"
    )

    async def scenario() -> None:
        async with served(_with_server(make_config("ok"), max_body_bytes=limit), monkeypatch) as server:
            head, body = await exchange(server, post(DIRECT, CHAT))  # sent in one write: all here when read
            assert head.startswith(b"HTTP/1.1 200 ") and orjson.loads(body)["choices"]
            assert received == []

            # the body only after the interim answer: read as it comes
            head, body = await after_continue(server, post(DIRECT, CHAT, "Expect: 100-continue"))
            assert head.startswith(b"HTTP/1.1 200 ") and orjson.loads(body)["choices"]
            assert received != []

            # no content-length: the whole body, over the limit, is refused as the ASGI path refuses it
            direct = await exchange(server, b"POST " + DIRECT.encode() + b" HTTP/1.1\r\n" + chunked)
            via_asgi = await exchange(server, b"POST " + VIA_ASGI.encode() + b" HTTP/1.1\r\n" + chunked)
            assert direct[0].startswith(b"HTTP/1.1 413 ")
            assert direct == via_asgi

    run(scenario)
