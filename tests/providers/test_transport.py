"""The lean HTTP/1.1 transport: response framing byte by byte, and real sockets (keep-alive reuse, TLS,
early close, refused connections, the connection cap)."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from lifeline.config.schema import OpenAITarget
from lifeline.errors import ProtocolError
from lifeline.providers.base import Chunk
from lifeline.providers.openai_compat import OpenAICompatProvider
from lifeline.providers.transport import CONNECTING, SENDING, LeanTransport, PoolUse, ResponseParser

CHUNKED = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\n"
)


def parse(data: bytes, step: int) -> tuple[ResponseParser, bytes, bool]:
    body: list[bytes] = []
    parser = ResponseParser(body.append)
    done = False
    for i in range(0, len(data), step):
        done = parser.feed(data[i : i + step])
    return parser, b"".join(body), done


@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000])
def test_chunked_bodies_split_anywhere(step: int) -> None:
    parser, body, done = parse(CHUNKED, step)
    assert done and parser.status == 200 and body == b"hello, world"
    assert (b"content-type", b"text/event-stream") in parser.headers


@pytest.mark.parametrize("step", [1, 5, 1000])
def test_content_length_and_interim_responses(step: int) -> None:
    data = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nabc"
    parser, body, done = parse(data, step)
    assert done and parser.status == 201 and body == b"abc" and not parser.close_after


def test_close_delimited_and_empty_bodies() -> None:
    parser, body, done = parse(b"HTTP/1.0 200 OK\r\n\r\npartial", 1000)
    assert not done and parser.close_after and body == b"partial"
    assert parser.eof()
    for head in (b"HTTP/1.1 204 No Content\r\n\r\n", b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"):
        assert parse(head, 1000)[2]


def test_framing_headers_are_found_in_any_case_spacing_and_place() -> None:
    many = b"".join(b"x-ratelimit-%d: %d\r\n" % (i, i) for i in range(20))
    data = b"HTTP/1.1 200 OK\r\n" + many + b"CONTENT-LENGTH : 3\r\nConnection:  Keep-Alive \r\n\r\nabc"
    parser, body, done = parse(data, 1000)
    assert done and body == b"abc" and not parser.close_after
    assert parser.headers[-2:] == [(b"CONTENT-LENGTH", b"3"), (b"Connection", b"Keep-Alive")]
    assert len(parser.headers) == 22
    # a name that only begins like a framing header frames nothing: the body runs to the close
    parser, body, done = parse(b"HTTP/1.1 200 OK\r\ncontent-lengthy: 3\r\n\r\nabcdef", 1000)
    assert not done and parser.close_after and body == b"abcdef"


def test_framing_header_on_a_line_that_begins_with_a_blank_still_counts() -> None:
    parser, body, done = parse(b"HTTP/1.1 200 OK\r\nx-a: 1\r\n  Content-Length: 3\r\n\r\nabc", 1000)
    assert done and body == b"abc" and not parser.close_after  # framed by its length, not by the close
    assert (b"Content-Length", b"3") in parser.headers


def test_the_last_framing_header_and_the_connection_headers_in_order_decide() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    parser, body, done = parse(data, 1000)
    assert done and body == b"abc"
    for headers, close in [
        (b"Connection: close\r\nConnection: keep-alive", False),
        (b"Connection: keep-alive\r\nConnection: close", True),
        (b"Connection: close\r\nConnection: upgrade", True),
    ]:
        parser, _, _ = parse(b"HTTP/1.1 200 OK\r\n" + headers + b"\r\ncontent-length: 0\r\n\r\n", 1000)
        assert parser.close_after is close, headers
    parser, _, _ = parse(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\ncontent-length: 0\r\n\r\n", 1000)
    assert not parser.close_after
    with pytest.raises(ProtocolError):
        parse(b"HTTP/1.1 200 OK\r\ncontent-length: 1x\r\ncontent-length: 2\r\n\r\nab", 1000)


@pytest.mark.parametrize(
    "data",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: lots\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nab",
    ],
)
def test_garbage_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse(data, 1000)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(handler: Handler, ssl_context: ssl.SSLContext | None = None) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ssl_context)
    return server, server.sockets[0].getsockname()[1]


async def started_provider(port: int, **fields: Any) -> OpenAICompatProvider:
    """An OpenAI provider for the server on `port`, started (`fields`: more of the target's settings)."""
    spec = {"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "model": "m", **fields}
    provider = OpenAICompatProvider("up", OpenAITarget.model_validate(spec), None)
    await provider.start()
    return provider


def answering(response: bytes) -> Handler:
    """A handler that answers every request on its connection with `response`."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await read_request(reader)
                writer.write(response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    return handler


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


def test_keep_alive_connections_are_reused() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                await read_request(reader)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> list[str]:
        server, port = await serve(handler)
        async with httpx.AsyncClient(transport=LeanTransport()) as client:
            texts = [(await client.post(f"http://127.0.0.1:{port}/x", content=b"{}")).text for _ in range(5)]
        server.close()
        return texts

    assert asyncio.run(main()) == ["ok"] * 5
    assert connections == 1


def test_an_early_close_and_a_refused_connection_are_httpx_errors() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
        await writer.drain()
        writer.close()

    async def main() -> None:
        server, port = await serve(handler)
        async with httpx.AsyncClient(transport=LeanTransport()) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.post(f"http://127.0.0.1:{port}/x", content=b"{}")
            server.close()
            await server.wait_closed()
            with pytest.raises(httpx.ConnectError):
                await client.post(f"http://127.0.0.1:{port}/x", content=b"{}")

    asyncio.run(main())


def test_streams_arrive_as_they_are_sent() -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n6\r\nfirst\n\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"7\r\nsecond\n\r\n0\r\n\r\n")
        await writer.drain()

    async def main() -> list[bytes]:
        server, port = await serve(handler)
        got: list[bytes] = []
        async with (
            httpx.AsyncClient(transport=LeanTransport()) as client,
            client.stream("POST", f"http://127.0.0.1:{port}/x", content=b"{}") as response,
        ):
            async for piece in response.aiter_raw():
                got.append(piece)
                release.set()  # the first piece came before the rest was even written
        server.close()
        return got

    assert asyncio.run(main()) == [b"first\n", b"second\n"]


def test_the_connection_cap_holds(tmp_path: Path) -> None:
    open_now = peak = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_now, peak
        open_now += 1
        peak = max(peak, open_now)
        try:
            while True:
                await read_request(reader)
                await asyncio.sleep(0.02)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            open_now -= 1

    async def main() -> None:
        server, port = await serve(handler)
        async with httpx.AsyncClient(transport=LeanTransport(max_connections=2)) as client:
            await asyncio.gather(*(client.post(f"http://127.0.0.1:{port}/x", content=b"{}") for _ in range(10)))
        server.close()

    asyncio.run(main())
    assert peak == 2


def test_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        capture_output=True,
        check=False,
    )  # fmt: skip
    if made.returncode != 0:
        pytest.skip("openssl cannot make a test certificate here")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecure")
        await writer.drain()

    async def main() -> str:
        server, port = await serve(handler, server_context)
        async with httpx.AsyncClient(transport=LeanTransport(ssl_context=client_context)) as client:
            text = (await client.post(f"https://localhost:{port}/x", content=b"{}")).text
            with pytest.raises(httpx.ConnectError):  # an untrusted certificate is refused
                untrusted = httpx.AsyncClient(transport=LeanTransport())
                await untrusted.post(f"https://localhost:{port}/x", content=b"{}")
        server.close()
        return text

    assert asyncio.run(main()) == "secure"


@pytest.mark.parametrize("http_client", ["lean", "httpx"])
def test_both_http_clients_serve_a_gateway(http_client: str, wall: object, gateway: object) -> None:
    from lifeline.testing import FaultWall, wall_text
    from tests.conftest import GatewayFactory, make_config, wall_target

    assert isinstance(wall, FaultWall)
    run: GatewayFactory = gateway  # type: ignore[assignment]
    config = make_config({"only": wall_target(wall, "ok", http_client=http_client)})
    with run(config) as gw:
        plain = httpx.post(
            f"{gw.base_url}/chat/completions", json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
        )
    assert plain.json()["choices"][0]["message"]["content"] == wall_text(12)


def test_a_full_pool_is_waited_for_at_most_the_pool_timeout_and_its_use_is_counted() -> None:
    release = asyncio.Event()
    served = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        await read_request(reader)
        served += 1
        await release.wait()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()

    async def main() -> None:
        server, port = await serve(handler)
        transport = LeanTransport(max_connections=1)
        events: list[str] = []

        async def trace(event: str, info: dict[str, object]) -> None:
            events.append(event)

        async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5, pool=0.05)) as client:
            url = f"http://127.0.0.1:{port}/x"
            held = asyncio.ensure_future(client.post(url, content=b"{}", extensions={"trace": trace}))
            while served == 0:
                await asyncio.sleep(0.001)
            assert events == [CONNECTING, SENDING]
            assert transport.use() == PoolUse(in_use=1, waiting=0, capacity=1)
            waiting = asyncio.ensure_future(client.post(url, content=b"{}", extensions={"trace": trace}))
            while transport.use().waiting == 0:
                await asyncio.sleep(0.001)
            assert transport.use() == PoolUse(in_use=1, waiting=1, capacity=1)
            with pytest.raises(httpx.PoolTimeout):
                await waiting
            assert events == [CONNECTING, SENDING]  # the request that found no connection never left
            assert transport.use() == PoolUse(in_use=1, waiting=0, capacity=1)
            release.set()
            assert (await held).text == "ok"
            assert transport.use() == PoolUse(in_use=0, waiting=0, capacity=1)
        server.close()

    asyncio.run(main())
    assert served == 1


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("connect", "deadline"), [(0.05, 30.0), (30.0, 0.05)], ids=["connect", "deadline"])
def test_waiting_for_a_full_pool_is_overload_never_the_targets_silence(
    stream: bool, connect: float, deadline: float
) -> None:
    """The only connection is busy with a slow answer; another attempt waits for it until the connect
    timeout (or the request's deadline) ends the wait: that is the gateway's own cap, not a silent target."""
    from lifeline.attempts import Outcome
    from lifeline.errors import ConnectionPoolFull, Failover
    from lifeline.providers.base import Deadline
    from tests.providers.support import make_call

    answer = b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}'

    async def main() -> None:
        release = asyncio.Event()
        received = asyncio.Event()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            received.set()
            await release.wait()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(answer), answer))
            await writer.drain()

        server, port = await serve(handler)
        timeouts = {"connect": connect, "first_byte": 30, "response": 30, "ttft": 30}
        provider = await started_provider(port, max_connections=1, timeouts=timeouts)
        try:
            holder = asyncio.ensure_future(provider.complete(make_call()))
            await received.wait()  # the only connection is in use
            call = make_call(stream=stream)
            call.deadline = Deadline.after(deadline)
            with pytest.raises(ConnectionPoolFull) as raised:
                if stream:
                    async for _ in provider.stream(call):
                        pass
                else:
                    await provider.complete(call)
            assert raised.value.failover is Failover.BUSY and raised.value.outcome is Outcome.POOL_FULL
            assert not holder.done()  # the slow answer was never cut short by the wait
            release.set()
            assert (await holder).body["choices"][0]["message"]["content"] == "ok"
        finally:
            await provider.close()
            server.close()

    asyncio.run(main())


def test_a_provider_encodes_each_urls_fixed_request_once_and_sends_it_directly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The lean client is called without httpx: the request line, host and the target's headers (its key
    among them) are encoded once per URL, and each call adds only its request id, length and body."""
    from lifeline.providers import transport
    from tests.providers.support import make_call

    built: list[str] = []
    encode_fixed = transport.FixedRequest.__init__

    def counting(self: transport.FixedRequest, url: str, headers: dict[str, str]) -> None:
        built.append(url)
        encode_fixed(self, url, headers)

    monkeypatch.setattr(transport.FixedRequest, "__init__", counting)
    monkeypatch.setattr(httpx.AsyncClient, "send", None)  # any use of httpx's client would fail
    answer = b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}'
    stream = (
        b'data: {"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n'
    )
    received: list[bytes] = []
    ports: list[int] = []
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                request = await read_request(reader)
                received.append(request)
                if b'"stream":true' in request:
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(stream), stream))
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(answer), answer))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server, port = await serve(handler)
        ports.append(port)
        provider = await started_provider(
            port, api_key="sk-test-0123456789abcdef", headers={"openai-organization": "org-7"}
        )
        try:
            for i in range(3):
                call = make_call()
                call.request_id = f"req-{i}"
                assert (await provider.complete(call)).body["choices"][0]["message"]["content"] == "ok"
            chunks = [chunk async for chunk in provider.stream(make_call(stream=True))]
            assert chunks[-1].finish
        finally:
            await provider.close()
            server.close()

    asyncio.run(main())
    assert built == [f"http://127.0.0.1:{ports[0]}/v1/chat/completions"]  # once, for four calls
    assert connections == 1 and len(received) == 4
    for i, request in enumerate(received):
        head, _, body = request.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        assert lines[0] == b"POST /v1/chat/completions HTTP/1.1"
        assert lines[1] == b"host: 127.0.0.1:%d" % ports[0]
        fields = dict(line.split(b": ", 1) for line in lines[1:])
        assert fields[b"authorization"] == b"Bearer sk-test-0123456789abcdef"
        assert fields[b"openai-organization"] == b"org-7"
        assert fields[b"content-type"] == b"application/json"
        assert fields[b"accept-encoding"] == b"identity"
        assert fields[b"content-length"] == str(len(body)).encode()
        assert fields[b"x-request-id"] == (f"req-{i}".encode() if i < 3 else b"req-1")
        assert len(fields) == len(lines) - 1  # no header twice


@pytest.mark.parametrize("http_client", ["lean", "httpx"])
def test_finished_streams_hand_their_connection_back_with_either_client(http_client: str) -> None:
    """The upstream sends the chunked terminator only after a pause, once the answer is whole: the stream is
    drained to its end (off the request's path) so that its connection is reused, with either client."""
    from tests.providers.support import make_call

    events = (
        b'data: {"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n'
    )
    connections = 0
    served = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections, served
        connections += 1
        try:
            while True:
                await read_request(reader)
                writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                writer.write(b"%x\r\n%s\r\n" % (len(events), events))
                await writer.drain()
                await asyncio.sleep(0.05)  # the answer is whole; the terminator comes later
                writer.write(b"0\r\n\r\n")
                await writer.drain()
                served += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server, port = await serve(handler)
        provider = await started_provider(port, http_client=http_client)
        try:
            for _ in range(3):
                chunks = [chunk async for chunk in provider.stream(make_call(stream=True))]
                assert chunks[-1].finish
                await asyncio.gather(*provider.draining)  # the terminator read, the connection handed back
        finally:
            await provider.close()
            server.close()

    asyncio.run(main())
    assert served == 3
    assert connections == 1


def test_a_stream_abandoned_before_its_end_is_not_drained() -> None:
    """A reader that leaves mid-answer closes the connection at once: nothing is read for an answer no one
    wants (the upstream may still be generating it)."""
    from tests.providers.support import make_call

    first = b'data: {"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": null}]}\n\n'
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (len(first), first))
        await writer.drain()
        await reader.read()  # until the gateway closes the connection
        closed.set()

    async def main() -> None:
        server, port = await serve(handler)
        provider = await started_provider(port)
        try:
            stream = provider.stream(make_call(stream=True))
            await anext(stream)
            await stream.aclose()  # type: ignore[attr-defined]
            assert not provider.draining
            await asyncio.wait_for(closed.wait(), 30)
        finally:
            await provider.close()
            server.close()

    asyncio.run(main())


def test_a_whole_answer_sets_one_timer_and_a_free_pool_slot_none() -> None:
    """A non-streaming call with a free connection sets one loop timer (its response timeout); taking a
    free pool slot sets none (only waiting for one is timed)."""
    from tests.providers.support import make_call

    answer = b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}'
    timers: list[float] = []

    async def main() -> None:
        server, port = await serve(
            answering(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(answer), answer))
        )
        provider = await started_provider(port)
        loop = asyncio.get_running_loop()
        call_at = loop.call_at

        def counted(when: float, callback: Any, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
            timers.append(when)
            return call_at(when, callback, *args, **kwargs)

        try:
            await provider.complete(make_call())  # the connection opened (its connect timeout is a timer too)
            loop.call_at = counted  # type: ignore[method-assign]
            for _ in range(3):
                assert (await provider.complete(make_call())).body["choices"][0]["message"]["content"] == "ok"
        finally:
            loop.call_at = call_at  # type: ignore[method-assign]
            await provider.close()
            server.close()

    asyncio.run(main())
    assert len(timers) == 3  # one per call


@pytest.mark.parametrize("upstream", ["answers", "stalls"])
def test_the_response_timeout_runs_from_the_send_after_a_long_wait_for_the_pool(upstream: str) -> None:
    """A stream holds the only connection for longer than the response timeout; the whole answer waiting for
    it then sends and is answered (the wait was never the target's silence), or meets a silent upstream and
    is told so by its response timeout, counted from its send (not by the request's far deadline)."""
    from lifeline.errors import UpstreamSilent
    from lifeline.providers.base import Deadline
    from tests.providers.support import make_call

    answer = b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}'
    first = b'data: {"choices": [{"index": 0, "delta": {"content": "o"}, "finish_reason": null}]}\n\n'
    last = b'data: {"choices": [{"index": 0, "delta": {"content": "k"}, "finish_reason": "stop"}]}\n\n'
    requests = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        try:
            while True:
                await read_request(reader)
                requests += 1
                if requests == 1:  # the stream: its first event, then the rest after longer than 0.3 s
                    writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                    writer.write(b"%x\r\n%s\r\n" % (len(first), first))
                    await writer.drain()
                    await asyncio.sleep(0.6)
                    writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(last), last))
                    await writer.drain()
                    continue
                if upstream == "stalls":
                    await asyncio.sleep(3600)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(answer), answer))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server, port = await serve(handler)
        timeouts = {"connect": 30, "response": 0.3, "first_byte": 30, "ttft": 30, "idle": 30}
        provider = await started_provider(port, max_connections=1, timeouts=timeouts)

        async def read_stream() -> list[Chunk]:
            return [chunk async for chunk in provider.stream(make_call(stream=True))]

        try:
            holder = asyncio.ensure_future(read_stream())
            while requests == 0:
                await asyncio.sleep(0.01)
            call = make_call()
            call.deadline = Deadline.after(600)
            waiting = asyncio.wait_for(provider.complete(call), 30)  # a bound against hanging, not a measure
            if upstream == "answers":
                assert (await waiting).body["choices"][0]["message"]["content"] == "ok"
            else:
                with pytest.raises(UpstreamSilent, match="response timeout"):
                    await waiting
            assert (await holder)[-1].finish
        finally:
            await provider.close()
            server.close()

    asyncio.run(main())


def test_a_stream_left_at_its_last_event_leaves_no_generator_for_the_loop_to_close() -> None:
    """The reader leaves the body at `[DONE]`, before its end: nothing of the transport is then closed by the
    loop's own task (as an async generator left suspended would be, once per stream)."""
    import gc

    from tests.providers.support import make_call

    events = (
        b'data: {"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n'
    )
    created: list[str] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        created.append(type(coro).__name__)
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def main() -> None:
        server, port = await serve(
            answering(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(events), events))
        )
        provider = await started_provider(port)
        asyncio.get_running_loop().set_task_factory(factory)
        try:
            for _ in range(3):
                chunks = [chunk async for chunk in provider.stream(make_call(stream=True))]
                assert chunks[-1].finish
            gc.collect()
            await asyncio.sleep(0.05)
        finally:
            asyncio.get_running_loop().set_task_factory(None)
            await provider.close()
            server.close()

    asyncio.run(main())
    assert "async_generator_athrow" not in created, created
