"""How the gateway is served: uvicorn's options built from `server:` (used by `lifeline serve` and by
testing/gateway.py alike), and the HTTP/1.1 protocol that bounds what one client may hold.

`LimitedHttpProtocol` is uvicorn's httptools protocol with the limits uvicorn lacks: the size and count of a
request's headers, a header read timeout (a silent or trickling connection is closed), a body read timeout,
a cap on open connections (503 beyond it) and a cap on requests per keep-alive connection. What the protocol
refuses itself is answered in OpenAI's error envelope with an `x-request-id`, as the app answers, and the
connection then reads and drops what the client still sends for a moment before closing, so that the client
reads the answer rather than a reset. The gateway upgrades to no other protocol: an Upgrade request that
announces a body is refused (400), a bodiless one answered with `connection: close` (see on_headers_complete).

A `POST` to the hot route (the app's `Front.direct`) is served by a `DirectCycle` (server/direct.py) without
ASGI; every other request by uvicorn's cycle and the app. The limits apply to both alike.

It relies on these parts of uvicorn's HttpToolsProtocol (uvicorn 0.54): the parser callbacks `on_url`,
`on_header`, `on_headers_complete`, `on_message_complete` and `on_response_complete`; `self.cycle` (its
`scope`, `keep_alive`, `response_started`, `response_complete`, `disconnected`, `message_event`);
`self.scope`, `self.url`, `self.headers`, `self.expect_100_continue`, `self.pipeline`, `_start_asgi_task`,
`self.connections`, `self.flow` and `_unset_keepalive_if_required`. tests/integration/test_slow_clients.py
and tests/server/test_direct.py pin the behaviour on real sockets.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import resource
from typing import Any, ClassVar

import httptools
import orjson
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from lifeline.config.schema import Config, HttpTarget, ServerSettings
from lifeline.errors import (
    HeadersTooLarge,
    LifelineError,
    MalformedRequest,
    MethodNotImplemented,
    RequestTimeout,
    ServerBusy,
)
from lifeline.server.direct import CYCLE, DirectCycle, forwarded
from lifeline.server.middleware import Endpoint, Front, client_request_id

log = logging.getLogger("lifeline.server")

#: seconds a refused connection goes on reading (and dropping) what the client sends before it closes
LINGER = 1.0
#: seconds a connection beyond the cap is given to send its headers, to be answered 503
OVER_CAP_WAIT = 1.0
#: descriptors the process needs beyond client connections and upstream pools (database, Redis, logs …)
SPARE_DESCRIPTORS = 64
#: where the protocol leaves the error it answered for a request the app is reading (see read_body)
REFUSAL = "lifeline_refusal"


def uvicorn_options(config: Config) -> dict[str, Any]:
    """uvicorn.Config / uvicorn.run keyword arguments that apply `config.server`'s limits. Also raises the
    process's soft descriptor limit when it is below what the config can open (see `check_descriptors`)."""
    server = config.server
    check_descriptors(config)
    return {
        "http": protocol_class(server),
        "ws": "none",  # the gateway serves no WebSocket: see LimitedHttpProtocol.on_headers_complete on Upgrade
        "timeout_keep_alive": server.keepalive_timeout,
        "log_level": "warning",
        "access_log": False,
        # No "server: uvicorn" on every answer (it names the software to anyone probing, and costs a header
        # per response). Date stays: HTTP asks an origin server with a clock to send it.
        "server_header": False,
    }


def freeze_startup_objects() -> None:
    """Once the gateway has started (config, models, the app, routes, imported modules, the embedded model):
    collect the garbage of starting, then move every object still alive to the collector's permanent
    generation, which no later collection walks again. Without it each full collection, triggered by the
    ordinary allocations of serving, walked all of them while every stream waited (bench/sections/13-gc.md).
    After a reload, done again only once the replaced gateway has closed (server/reload.py `refreeze`): at
    the swap it is still alive for the requests running on it, and would be frozen with the new one for good."""
    gc.collect()
    gc.freeze()


def protocol_class(settings: ServerSettings) -> type[LimitedHttpProtocol]:
    """uvicorn builds a protocol per connection from a class: this one carries `settings`."""
    return type("LifelineHttpProtocol", (LimitedHttpProtocol,), {"settings": settings})


def check_descriptors(config: Config) -> None:
    """Past the descriptor limit the kernel refuses connections before the cap can answer 503, and healthy
    traffic stalls: raise the soft limit to what the config needs (up to the hard limit), else warn."""
    pools = sum(t.max_connections for t in config.targets.values() if isinstance(t, HttpTarget))
    needed = config.server.max_connections + pools + SPARE_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "the process may open %d files (ulimit -n) but server.max_connections and the targets' "
            "connection pools need about %d: raise ulimit -n or lower server.max_connections",
            soft,
            needed,
        )


class LimitedHttpProtocol(HttpToolsProtocol):
    settings: ClassVar[ServerSettings]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        #: between a request's first byte and the end of its headers
        self._in_head = False
        #: bytes of the current head, counted two ways: whole reads (bounds what the parser buffers) and
        #: the parsed URL and header lines (exact)
        self._head_read = 0
        self._head_parsed = 0
        self._header_lines = 0
        self._requests = 0
        #: request heads read on this connection
        self._heads = 0
        #: the request whose body is still arriving
        self._receiving: RequestResponseCycle | None = None
        #: the connection is closing: what the client still sends is dropped
        self._closing = False
        self._over_cap = False
        # The hot route's endpoints by request target, when the app is Lifeline's (create_app's `Front`).
        app = self.config.app
        front = getattr(getattr(app, "state", None), "front", None)
        self._front: Front | None = front if isinstance(front, Front) and not self.root_path else None
        self._starlette = app
        #: the direct cycle answering now (a pipelined one waits in self.pipeline)
        self._answering: DirectCycle | None = None
        #: the request being read sent X-Forwarded-* headers
        self._proxied = False

    # --- the connection ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._over_cap = len(self.connections) > self.settings.max_connections
        wait = self.settings.header_timeout
        if self._over_cap:
            wait = min(wait, OVER_CAP_WAIT)
        self._head_timer = self.loop.call_later(wait, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._body_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = self._linger_timer = None
        self._receiving = None
        super().connection_lost(exc)
        if self._answering is not None:
            self._answering.disconnect()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._unset_keepalive_if_required()
        # The first bytes of a next request (or stray bytes between requests): its headers are due, and then its
        # body. The timers are set after the parser has read these bytes, and only for what is still to come:
        # a request that arrives whole in one read (the common case) sets none; a head left unfinished by a read
        # is timed however the read began (it may have ended the body of the request before).
        heads_due = self._head_timer is None and not self._in_head and self._receiving is None
        heads = self._heads
        was_in_head = self._in_head
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            # A callback below refused the request by raising the error to answer with.
            refused = exc.__context__
            if isinstance(refused, LifelineError):
                self._refuse(refused)
            else:
                self._refuse(MalformedRequest(f"The request is not valid HTTP/1.1: {exc}."))
        except httptools.HttpParserInvalidMethodError:
            self._refuse(MethodNotImplemented("The request's HTTP method is not one this server implements."))
        except httptools.HttpParserError as exc:
            self._refuse(MalformedRequest(f"The request is not valid HTTP/1.1: {exc}."))
        except httptools.HttpParserUpgrade:
            # The bodiless Upgrade (or CONNECT) request was dispatched as a plain one and is answered with
            # `connection: close` (on_headers_complete); what follows it is not HTTP/1.1 to this parser: dropped.
            self._closing = True
        else:
            if was_in_head and self._in_head:
                # One header still growing is buffered by the parser until it ends: bound it here.
                self._head_read += len(data)
                if self._head_read > self.settings.max_header_bytes:
                    self._refuse(self._too_large())
                    return
            if self._closing:
                return
            if self._head_timer is None and (self._in_head or (heads_due and self._heads == heads)):
                # A head begun (in this read, or in the one that ended the body before it) is timed.
                self._head_timer = self.loop.call_later(self.settings.header_timeout, self._head_timed_out)
            if self._receiving is not None and self._body_timer is None:
                self._body_timer = self.loop.call_later(self.settings.body_timeout, self._body_timed_out)

    # --- parser callbacks --------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_read = self._head_parsed = self._header_lines = 0
        self._proxied = False

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_lines += 1
        if self._header_lines > self.settings.max_headers:
            raise HeadersTooLarge(f"A request may send at most {self.settings.max_headers} headers.")
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)
        if name[:12].lower() == b"x-forwarded-":
            self._proxied = True

    def on_headers_complete(self) -> None:
        """Dispatch the request (directly or through uvicorn's cycle), within the limits.

        The gateway upgrades to no other protocol. For a request asking to (`Connection: Upgrade` with an
        `Upgrade` header, or CONNECT) the parser ends the message at its head, whatever body it announces, and
        would read that body as the next request — a request smuggled past a proxy that passes Upgrade through.
        So such a request that announces a body is refused (400, and the connection closed) before anything
        of it is served; one without a body is answered as a plain request with `connection: close`, and what
        the client sends after it is dropped (data_received)."""
        self._in_head = False
        self._heads += 1
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._over_cap:
            raise ServerBusy(
                f"The gateway is serving its maximum of {self.settings.max_connections} client "
                "connections; retry shortly.",
                headers={"retry-after": "1"},
            )
        upgrade = self.parser.should_upgrade()
        if upgrade and _announces_body(self.headers):
            raise MalformedRequest(
                "This server upgrades to no other protocol; an Upgrade request may not carry a body."
            )
        before = self.cycle
        front = self._front
        endpoint = front.direct_targets.get(self.url) if front is not None else None
        if (
            front is not None
            and endpoint is not None
            and self.limit_concurrency is None
            and self.parser.get_method() == b"POST"
        ):
            self._serve_directly(front, endpoint)
        else:
            super().on_headers_complete()
        if self.cycle is before:
            return
        self._requests += 1
        if upgrade or self._requests >= self.settings.max_requests_per_connection:
            self.cycle.keep_alive = False
        self._receiving = self.cycle  # its body timer is set once the parser has read what came (data_received)

    def _serve_directly(self, front: Front, endpoint: Endpoint) -> None:
        """What uvicorn's on_headers_complete does, with a `DirectCycle` for its cycle and app."""
        scope = self.scope
        version = self.parser.get_http_version()
        scope["method"] = "POST"
        if version != "1.1":
            scope["http_version"] = version
        scope["path"] = self.url.decode("ascii")
        scope["raw_path"] = self.url
        scope["query_string"] = b""
        scope["app"] = self._starlette  # type: ignore[typeddict-unknown-key]
        if self._proxied and isinstance(self.app, ProxyHeadersMiddleware):
            forwarded(scope, self.app.trusted_hosts)  # type: ignore[arg-type]
        existing = self.cycle
        cycle = DirectCycle(
            scope,  # type: ignore[arg-type]
            self.transport,
            self.flow,
            self.server_state.default_headers,
            front,
            endpoint,
            keep_alive=version != "1.0" and self.parser.should_keep_alive(),
            expect_100_continue=self.expect_100_continue,
            on_response=self.on_response_complete,
        )
        scope[CYCLE] = cycle  # type: ignore[literal-required]
        self.cycle = cycle  # type: ignore[assignment]
        if existing is None or existing.response_complete:
            self._start_asgi_task(cycle, self.app)  # type: ignore[arg-type]
        else:  # pipelined: answered once the responses before it are
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, self.app))  # type: ignore[arg-type]

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        self._answering = cycle if isinstance(cycle, DirectCycle) else None
        super()._start_asgi_task(cycle, app)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._receiving = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        receiving = self._receiving
        if receiving is not None and receiving.response_complete and not self.transport.is_closing():
            # Answered (a 413, a 408, an early error) before its body ended: the rest is not worth reading.
            self._close_soon()

    # --- refusing ----------------------------------------------------------------------------------

    def _count_head(self, size: int) -> None:
        self._head_parsed += size
        if self._head_parsed > self.settings.max_header_bytes:
            raise self._too_large()

    def _too_large(self) -> HeadersTooLarge:
        return HeadersTooLarge(f"The request line and headers may be at most {self.settings.max_header_bytes} bytes.")

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._closing or self.transport.is_closing():
            return
        if self.flow.read_paused:
            # The server stopped reading (a pipelined request waits for the one before): not the client's delay.
            self._head_timer = self.loop.call_later(self.settings.header_timeout, self._head_timed_out)
            return
        if not self._in_head:
            if self.cycle is not None and not self.cycle.response_complete:
                return  # stray bytes (a CRLF) after a request being answered: its answer goes on
            # Nothing of a request came (a silent connection, or one beyond the cap): nothing to answer.
            self._closing = True
            self.transport.close()
            return
        self._refuse(RequestTimeout(f"The request headers did not arrive within {self.settings.header_timeout:g} s."))

    def _body_timed_out(self) -> None:
        self._body_timer = None
        cycle = self._receiving
        if cycle is None or self._closing or self.transport.is_closing():
            return
        if self.flow.read_paused:
            # The app has not taken what came so far (or a pipelined request waits): not the client's delay.
            self._body_timer = self.loop.call_later(self.settings.body_timeout, self._body_timed_out)
            return
        error = RequestTimeout(f"The request body did not arrive within {self.settings.body_timeout:g} s.")
        if cycle.response_started:
            self._close_soon()
            return
        # The app is (or will be) waiting for the body: it is told by a disconnect, and finds the reason
        # under REFUSAL in its scope's state (read_body raises it, so the app logs it once).
        cycle.scope["state"][REFUSAL] = error
        self._refuse(error, quiet=True)

    def _refuse(self, error: LifelineError, *, quiet: bool = False) -> None:
        """Answer `error` and close the connection. The answer is left out when a response is already being
        written on the connection (the refused request's own, or a pipelined one's before it)."""
        if self._closing or self.transport.is_closing():
            return
        current = self.cycle if self.cycle is not None and not self.cycle.response_complete else None
        receiving = self._receiving
        request_id: bytes
        if receiving is not None and "request_id" in receiving.scope["state"]:
            request_id = str(receiving.scope["state"]["request_id"]).encode()
        else:
            request_id = client_request_id(self.headers or ())
        if current is None or (current is receiving and not current.response_started):
            self.transport.write(self._answer(error, request_id))
        if isinstance(current, DirectCycle):
            current.disconnect()  # its work stops now, as the ASGI path's does
        elif current is not None:
            # Whatever the app sends now goes nowhere.
            current.disconnected = True
            current.message_event.set()
        if not quiet:
            log.info(
                "request refused",
                extra={"status": error.status, "code": error.code, "request_id": request_id.decode()},
            )
        self._close_soon()

    def _answer(self, error: LifelineError, request_id: bytes) -> bytes:
        body = orjson.dumps(error.envelope())
        head = [STATUS_LINE[error.status]]
        for name, value in [
            *self.server_state.default_headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id),
            *((k.encode(), v.encode()) for k, v in error.headers.items()),
            (b"connection", b"close"),
        ]:
            head.append(b"%s: %s\r\n" % (name, value))
        return b"".join([*head, b"\r\n", body])

    def _close_soon(self) -> None:
        self._closing = True
        self._unset_keepalive_if_required()
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None
        self.flow.resume_reading()
        self._linger_timer = self.loop.call_later(LINGER, self.transport.close)


def _announces_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip().lstrip(b"0") != b""):
            return True
    return False
