"""What every request goes through at the gateway's edge (`Front`), and the ASGI middleware that puts requests
through it (`GatewayMiddleware`); the protocol serves the hot route through the same `Front` without ASGI
(server/direct.py).

- Every response carries `x-request-id` (the client's, if it sent a sane one), and an unexpected exception
  becomes a 500 in OpenAI's envelope (with that id) rather than a bare page.
- The edge guard (server/guard.py) refuses what a browser could be tricked into sending, before the gateway
  counts the request.
- It pins the gateway current when a request starts into its scope (`request.state.gateway`) and counts the
  request on that gateway until its response — a stream included — has ended, so that a reload swaps in a
  new gateway for new requests while the old one finishes what it started. Once the response has been sent,
  it runs what the request left for then (`after_response`: shadow calls).
- The hot routes (`POST /v1/chat/completions`) are served with the app's exception handlers, not through
  Starlette's exception middleware, router and per-route wrapper (bench/findings.md): the same endpoint, the
  same answers and error envelopes, fewer frames per request."""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lifeline.errors import ClientError, LifelineError
from lifeline.logs import request_id_var
from lifeline.server.errors import error_response
from lifeline.server.guard import EdgeGuard

if TYPE_CHECKING:
    from lifeline.server.gateway import Gateway

log = logging.getLogger("lifeline.server")

_SANE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")

Endpoint = Callable[[Request], Awaitable[Response]]
ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]


class RequestIds:
    """New request ids: 32 lowercase hex digits, as uuid4().hex, made of a random 64-bit prefix for the
    process and a counter, so that making one costs no system call. A forked worker draws a prefix of its
    own; ids stay unique across processes and replicas (two prefixes collide with odds of 1 in 2^64)."""

    def __init__(self) -> None:
        self._renew()
        os.register_at_fork(after_in_child=self._renew)

    def _renew(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(1)

    def new(self) -> bytes:
        return f"{self._prefix}{next(self._counter):016x}".encode()


_ids = RequestIds()


def client_request_id(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The request id a response carries: the client's `x-request-id` when it is sane, else a new one."""
    for name, value in headers:
        if name == b"x-request-id" and _SANE_ID.match(value):
            return value
    return _ids.new()


def after_response(request: Request, work: Callable[[], None]) -> None:
    """Run `work` (it must not block: start a task) once the request's response has been sent."""
    request.scope.setdefault("state", {}).setdefault("after_response", []).append(work)


def internal_error() -> Response:
    """The answer to an unexpected exception: OpenAI's envelope, no trace (that goes to the log)."""
    body = orjson.dumps(LifelineError("The gateway hit an internal error; it has been logged.").envelope())
    return Response(body, status_code=500, media_type="application/json")


class Front:
    """What every request meets first, however it is framed (the ASGI middleware below, or the protocol's
    direct cycle in server/direct.py): the edge guard, the gateway's request count, the work left for after
    the response, and the hot routes' endpoints (`direct`, by path, for POST) answered with the app's
    `exception_handlers` as Starlette applies them to its routes."""

    def __init__(
        self,
        direct: Mapping[str, Endpoint] | None = None,
        exception_handlers: Mapping[Any, ExceptionHandler] | None = None,
    ) -> None:
        self.guard = EdgeGuard()
        self.direct: dict[str, Endpoint] = dict(direct or {})
        #: the same by the request target's bytes, as the HTTP/1.1 protocol reads it (server/direct.py)
        self.direct_targets = {path.encode("ascii"): endpoint for path, endpoint in self.direct.items()}
        self.exception_handlers: dict[Any, ExceptionHandler] = dict(exception_handlers or {})

    def enter(self, scope: Scope) -> Gateway | ClientError:
        """The guard's refusal, or the gateway serving now, counted and pinned in the scope's state. Read,
        checked and counted with no await in between: a reload cannot slip between them."""
        gateway: Gateway = scope["app"].state.gateway
        config = gateway.config
        refusal = self.guard.check(scope, config.server, has_master_key=config.admin.master_key is not None)
        if refusal is not None:
            log.info("refused a request at the edge", extra={"status": refusal.status, "code": refusal.code})
            return refusal
        gateway.enter()
        scope["state"]["gateway"] = gateway
        return gateway

    def leave(self, gateway: Gateway, state: dict[str, Any]) -> None:
        """Once the response has been sent. Before leaving: a reload closes this gateway once its last request
        has left, and the work started here (shadow calls) belongs to it."""
        for work in state.pop("after_response", ()):
            try:
                work()
            except Exception:  # what runs after a response never reaches it
                log.exception("after-response work failed")
        gateway.leave()

    @staticmethod
    def failed(exc: Exception) -> bool:
        """Log what a request failed with beyond the app's handlers. True: the gateway's own failure, owed a 500
        (its trace goes to the log, never to the client); False: the client left while its body was read by
        code that does not turn a disconnect into an error of its own (read_body does)."""
        if isinstance(exc, ClientDisconnect):
            log.info("request failed", extra={"status": 499, "code": "client_closed_request"})
            return False
        log.error("unexpected error", exc_info=exc)
        return True

    async def respond(self, endpoint: Endpoint, request: Request) -> Response:
        """`endpoint`'s response, or the app's handler's for the exception it raised (unhandled ones propagate,
        as on a routed endpoint)."""
        try:
            return await endpoint(request)
        except Exception as exc:
            handlers = self.exception_handlers
            handler = next((handlers[cls] for cls in type(exc).__mro__ if cls in handlers), None)
            if handler is None:
                raise
            response = await handler(request, exc)
            exc.__traceback__ = None  # an error instance reused across requests must not gather tracebacks
            return response


class GatewayMiddleware:
    """See the module docstring: the `Front` for requests that come through ASGI."""

    def __init__(self, app: ASGIApp, front: Front) -> None:
        self.app = app
        self.front = front

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = client_request_id(scope["headers"])
        text_id = request_id.decode()
        state = scope.setdefault("state", {})
        state["request_id"] = text_id
        token = request_id_var.set(text_id)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
            await send(message)

        front = self.front
        try:
            entered = front.enter(scope)
            if isinstance(entered, ClientError):
                await error_response(entered)(scope, receive, send_with_id)
                return
            try:
                endpoint = front.direct.get(scope["path"]) if scope["method"] == "POST" else None
                if endpoint is None:
                    await self.app(scope, receive, send_with_id)
                else:
                    response = await front.respond(endpoint, Request(scope, receive, send_with_id))
                    await response(scope, receive, send_with_id)
            finally:
                front.leave(entered, state)
        except Exception as exc:
            if not front.failed(exc):
                return
            if started:
                raise
            await internal_error()(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)
