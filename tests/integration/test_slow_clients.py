"""Slow, oversized and odd clients on real sockets (issue #15, items 11, 12 and 16): bounded headers, header
and body read timeouts, the connection cap, keep-alive limits, admin bodies counted as they stream in,
unknown methods and clients leaving mid-body.

Every test asserts on what the server does — the status it answers, that it closes the connection, the
`x-request-id` it sends, what it logs — never on how long anything took: the timeouts are configured small
and each test waits for the event (a bounded socket read), with pytest's timeout as the backstop.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from lifeline.config import Config
from lifeline.server import serving
from lifeline.testing import FaultWall
from lifeline.testing.gateway import RunningGateway
from tests.conftest import GatewayFactory, make_config, wall_target

pytestmark = pytest.mark.timeout(60)

#: how long a test waits for the server to act before it fails (a socket timeout, not an assertion on time)
WAIT = 30.0
ENVELOPE_KEYS = {"message", "type", "param", "code"}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> dict[str, Any]:
        """The OpenAI error envelope of this reply, checked for shape."""
        assert self.headers["content-type"].startswith("application/json"), self
        envelope = orjson.loads(self.body)
        assert set(envelope) == {"error"}
        assert set(envelope["error"]) == ENVELOPE_KEYS
        assert envelope["error"]["message"]
        error: dict[str, Any] = envelope["error"]
        return error


def config(wall: FaultWall, **server: Any) -> Config:
    return make_config({"primary": wall_target(wall, "ok")}, server=server)


def connect(gw: RunningGateway) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=WAIT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_reply(sock: socket.socket) -> Reply | None:
    """One response, or None when the server closed the connection before sending one."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = _recv(sock)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = _recv(sock)
        assert chunk, "the server closed the connection in the middle of a response"
        body += chunk
    return Reply(status, headers, body[:length])


def closed(sock: socket.socket) -> bool:
    """Wait until the server closes the connection (discarding anything it sends first)."""
    while _recv(sock):
        pass
    return True


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        return b""


def request(method: str, path: str, *headers: str, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def get(path: str = "/healthz", *headers: str) -> bytes:
    return request("GET", path, *headers)


@contextmanager
def trickling(sock: socket.socket, piece: bytes) -> Iterator[list[int]]:
    """Send `piece` again and again from a thread, a little at a time, until the server stops listening or
    the block ends; yields the count of pieces sent so far."""
    sent = [0]
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                sock.sendall(piece)
            except OSError:
                return
            sent[0] += 1
            stop.wait(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield sent
    finally:
        stop.set()
        thread.join()


def assert_refused(reply: Reply | None, status: int, code: str) -> dict[str, Any]:
    assert reply is not None, "the server closed the connection without an answer"
    assert reply.status == status, reply
    error = reply.error()
    assert error["code"] == code, error
    assert reply.headers.get("x-request-id"), reply.headers
    assert reply.headers.get("connection") == "close", reply.headers
    return error


# --- headers -----------------------------------------------------------------------------------------


def test_an_oversized_header_is_refused_with_431_and_the_connection_closed(
    wall: FaultWall, gateway: GatewayFactory
) -> None:
    with gateway(config(wall, max_header_bytes=8192)) as gw, connect(gw) as sock:
        sock.sendall(get("/healthz", "X-Big: " + "a" * 100_000))
        error = assert_refused(read_reply(sock), 431, "request_header_fields_too_large")
        assert "8192" in error["message"]
        assert closed(sock)
        # a sane request still works
        with connect(gw) as again:
            again.sendall(get("/healthz", "X-Fine: " + "a" * 4000))
            reply = read_reply(again)
            assert reply is not None and reply.status == 200


def test_a_header_sent_forever_is_cut_off_at_the_limit(wall: FaultWall, gateway: GatewayFactory) -> None:
    """The 50 MB-of-unfinished-headers attack: the server answers once the limit is passed, while the
    client is still sending, instead of buffering what it sends."""
    with gateway(config(wall, max_header_bytes=16384, header_timeout=60)) as gw, connect(gw) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        with trickling(sock, b"b" * 4096) as sent:
            assert_refused(read_reply(sock), 431, "request_header_fields_too_large")
            assert closed(sock)
        assert sent[0] < 16 * 1024 * 1024 // 4096


def test_too_many_headers_are_refused_with_431(wall: FaultWall, gateway: GatewayFactory) -> None:
    with gateway(config(wall, max_headers=20)) as gw, connect(gw) as sock:
        sock.sendall(get("/healthz", *(f"X-H{i}: v" for i in range(100))))
        error = assert_refused(read_reply(sock), 431, "request_header_fields_too_large")
        assert "20" in error["message"]
        assert closed(sock)
        with connect(gw) as again:
            again.sendall(get("/healthz", *(f"X-H{i}: v" for i in range(15))))
            reply = read_reply(again)
            assert reply is not None and reply.status == 200


def test_headers_trickled_slowly_get_408_and_the_connection_closed(wall: FaultWall, gateway: GatewayFactory) -> None:
    """Slowloris: a header line every so often keeps no connection open past the header timeout."""
    with gateway(config(wall, header_timeout=0.5)) as gw, connect(gw) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        with trickling(sock, b"X-A: b\r\n"):
            assert_refused(read_reply(sock), 408, "request_timeout")
            assert closed(sock)


def test_a_next_request_begun_with_a_body_and_then_trickled_gets_408(wall: FaultWall, gateway: GatewayFactory) -> None:
    """The next request's first bytes come in the read that ends the body before it: its header timeout runs
    all the same, and a head trickled a byte at a time is answered 408."""
    with gateway(config(wall, header_timeout=1)) as gw, connect(gw) as sock:
        first = request("POST", "/v1/chat/completions", "Content-Type: application/json", body=b'{"model": "chat"}')
        sock.sendall(first[:-5])
        sock.sendall(first[-5:] + b"GET /healthz HTTP/1.1\r\nHo")
        reply = read_reply(sock)
        assert reply is not None and reply.status == 400, reply  # no messages: answered without an upstream
        with trickling(sock, b"x"):
            assert_refused(read_reply(sock), 408, "request_timeout")
            assert closed(sock)


def test_a_silent_connection_is_closed(wall: FaultWall, gateway: GatewayFactory) -> None:
    with gateway(config(wall, header_timeout=0.3)) as gw, connect(gw) as sock:
        # nothing sent, nothing to answer: the server just closes
        assert _recv(sock) == b""


def test_a_client_idle_after_a_response_is_closed(wall: FaultWall, gateway: GatewayFactory) -> None:
    with gateway(config(wall, keepalive_timeout=0.3)) as gw, connect(gw) as sock:
        sock.sendall(get())
        reply = read_reply(sock)
        assert reply is not None and reply.status == 200
        assert reply.headers.get("connection") != "close"
        assert closed(sock)


def test_a_connection_is_closed_after_its_maximum_of_requests(wall: FaultWall, gateway: GatewayFactory) -> None:
    with gateway(config(wall, max_requests_per_connection=3)) as gw, connect(gw) as sock:
        for n in (1, 2, 3):
            sock.sendall(get())
            reply = read_reply(sock)
            assert reply is not None and reply.status == 200
            assert (reply.headers.get("connection") == "close") == (n == 3), (n, reply.headers)
        assert closed(sock)


# --- bodies ------------------------------------------------------------------------------------------


CHAT = orjson.dumps({"model": "chat", "messages": [{"role": "user", "content": "hello " * 100}]})


def test_a_trickled_body_gets_408_once_the_body_timeout_passes(wall: FaultWall, gateway: GatewayFactory) -> None:
    with gateway(config(wall, body_timeout=0.5)) as gw, connect(gw) as sock:
        sock.sendall(request("POST", "/v1/chat/completions", "Content-Type: application/json", body=CHAT)[:-500])
        with trickling(sock, b" "):
            assert_refused(read_reply(sock), 408, "request_timeout")
            assert closed(sock)
    assert wall.attempts_for("ok") == []


def test_a_trickled_body_does_not_outlive_the_request_deadline(wall: FaultWall, gateway: GatewayFactory) -> None:
    """x-lifeline-timeout bounds the whole request, reading its body included."""
    with gateway(config(wall, body_timeout=600)) as gw, connect(gw) as sock:
        head = request(
            "POST", "/v1/chat/completions", "Content-Type: application/json", "x-lifeline-timeout: 0.5", body=CHAT
        )
        sock.sendall(head[:-500])
        with trickling(sock, b" "):
            reply = read_reply(sock)
            assert reply is not None and reply.status == 408, reply
            assert reply.error()["code"] == "request_timeout"
            assert reply.headers.get("x-request-id")
            assert closed(sock)
    assert wall.attempts_for("ok") == []


def chunked_body(method: str, path: str, chunks: int, *headers: str) -> Iterator[bytes]:
    """A chunked request whose body never ends (no last chunk)."""
    yield (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + "".join(f"{h}\r\n" for h in headers)
        + "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    piece = b'{"state": "' + b"x" * 65000
    for _ in range(chunks):
        yield b"%x\r\n%s\r\n" % (len(piece), piece)
        piece = b"x" * 65000


MASTER = "Authorization: Bearer admin-secret"


@pytest.mark.parametrize(
    "method, path, master_key",
    [
        ("POST", "/admin/targets/primary", False),
        ("POST", "/admin/keys", True),
        ("PATCH", "/admin/keys/nosuch", True),
    ],
)
def test_an_admin_body_past_its_limit_is_refused_while_it_streams_in(
    wall: FaultWall, gateway: GatewayFactory, method: str, path: str, master_key: bool
) -> None:
    """The 413 comes while the client is still sending: the body is counted as it arrives, not read whole
    first (a 400 MB chunked POST used to be held in memory before the size check)."""
    admin = {"master_key": "admin-secret"} if master_key else {}
    cfg = make_config({"primary": wall_target(wall, "ok")}, admin=admin)
    with gateway(cfg) as gw, connect(gw) as sock:
        for part in chunked_body(method, path, 4, *([MASTER] if master_key else [])):
            sock.sendall(part)
        # the body never ends: only a check made while it streams in can answer now
        reply = read_reply(sock)
        assert reply is not None
        assert reply.status == 413, reply
        assert reply.error()["code"] == "payload_too_large"
        assert reply.headers.get("x-request-id")


# --- the connection cap ------------------------------------------------------------------------------


def test_connections_beyond_the_cap_get_a_503_envelope(wall: FaultWall, gateway: GatewayFactory) -> None:
    with gateway(config(wall, max_connections=3, header_timeout=60)) as gw:
        held = [connect(gw) for _ in range(3)]
        try:
            for sock in held:
                sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # headers never finished
            with connect(gw) as extra:
                extra.sendall(get())
                error = assert_refused(read_reply(extra), 503, "server_busy")
                assert "connections" in error["message"]
                assert closed(extra)
        finally:
            for sock in held:
                sock.close()
        # once they are gone a new client is served again
        while True:
            with connect(gw) as sock:
                sock.sendall(get())
                reply = read_reply(sock)
                assert reply is not None
                if reply.status == 200:
                    break
                assert reply.status == 503
            time.sleep(0.05)


def test_a_503_beyond_the_cap_carries_retry_after(wall: FaultWall, gateway: GatewayFactory) -> None:
    with gateway(config(wall, max_connections=1, header_timeout=60)) as gw, connect(gw) as held:
        held.sendall(b"GET /healthz HTTP/1.1\r\n")
        with connect(gw) as extra:
            extra.sendall(get("/healthz", "x-request-id: my-own-id"))
            reply = read_reply(extra)
            assert_refused(reply, 503, "server_busy")
            assert reply is not None
            assert reply.headers["retry-after"] == "1"
            assert reply.headers["x-request-id"] == "my-own-id"


# --- odd requests and clients that leave -------------------------------------------------------------


def test_an_unknown_method_gets_an_envelope_with_a_request_id(wall: FaultWall, gateway: GatewayFactory) -> None:
    with gateway(config(wall)) as gw, connect(gw) as sock:
        sock.sendall(request("BREW", "/v1/models"))
        assert_refused(read_reply(sock), 501, "method_not_implemented")


def test_a_malformed_request_gets_an_envelope_with_a_request_id(wall: FaultWall, gateway: GatewayFactory) -> None:
    with gateway(config(wall)) as gw, connect(gw) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n")
        error = assert_refused(read_reply(sock), 400, "invalid_http_request")
        assert "HTTP" in error["message"]


@contextmanager
def captured(*names: str) -> Iterator[list[logging.LogRecord]]:
    """Every record the named loggers emit (uvicorn's do not reach pytest's caplog)."""
    records: list[logging.LogRecord] = []
    lock = threading.Lock()

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            with lock:
                records.append(record)

    handler = Keep(logging.DEBUG)
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


@pytest.mark.parametrize(
    "path", ["/v1/chat/completions", "/v1/messages", "/v1/responses", "/v1/embeddings", "/admin/targets/primary"]
)
def test_a_client_leaving_mid_body_is_one_info_line(wall: FaultWall, gateway: GatewayFactory, path: str) -> None:
    with gateway(config(wall)) as gw, captured("lifeline", "uvicorn", "uvicorn.error") as records:
        with connect(gw) as sock:
            sock.sendall(request("POST", path, "Content-Type: application/json", body=CHAT)[:-500])
        while not any(_left(r) for r in list(records)):
            time.sleep(0.02)
        # the server finishes with the request: a later one on a new connection is served
        with connect(gw) as sock:
            sock.sendall(get())
            assert (reply := read_reply(sock)) is not None and reply.status == 200
    seen = [r for r in list(records) if r.levelno >= logging.INFO]
    assert [r.levelname for r in seen if _left(r)] == ["INFO"], seen
    assert not [r for r in seen if r.levelno >= logging.WARNING or r.exc_info], seen


def _left(record: logging.LogRecord) -> bool:
    return getattr(record, "code", None) == "client_closed_request"


# --- descriptors -------------------------------------------------------------------------------------


def test_the_descriptor_limit_is_raised_to_what_the_cap_needs(
    wall: FaultWall, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Past the descriptor limit the kernel refuses connections before the cap can answer 503."""
    limits = {"now": (256, 100_000)}
    monkeypatch.setattr(serving.resource, "getrlimit", lambda _: limits["now"])
    monkeypatch.setattr(serving.resource, "setrlimit", lambda _, value: limits.update(now=value))
    serving.check_descriptors(config(wall, max_connections=500))
    # 500 clients, the target's pool of 100, and spare descriptors
    assert limits["now"] == (500 + 100 + serving.SPARE_DESCRIPTORS, 100_000)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_hard_descriptor_limit_below_the_cap_is_a_warning(
    wall: FaultWall, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    limits = {"now": (256, 512)}
    monkeypatch.setattr(serving.resource, "getrlimit", lambda _: limits["now"])
    monkeypatch.setattr(serving.resource, "setrlimit", lambda _, value: limits.update(now=value))
    with caplog.at_level(logging.WARNING, logger="lifeline.server"):
        serving.check_descriptors(config(wall, max_connections=1000))
    assert limits["now"] == (512, 512)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "max_connections" in warnings[0] and "512" in warnings[0]
