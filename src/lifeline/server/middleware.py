"""Pure-ASGI middleware.

`RequestIdMiddleware`: every response carries `x-request-id` (the client's, if it sent a sane one), and an
unexpected exception becomes a 500 in OpenAI's envelope (with that id) rather than a bare page.

`GatewayMiddleware`: pins the gateway current when a request starts into its scope (`request.state.gateway`)
and counts the request on that gateway until its response — a stream included — has ended, so that a
reload swaps in a new gateway for new requests while the old one finishes what it started. Once the
response has been sent, it runs what the request left for then (`after_response`: shadow calls).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterable

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lifeline.errors import LifelineError
from lifeline.logs import request_id_var

log = logging.getLogger("lifeline.server")

_SANE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")


def client_request_id(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The request id a response carries: the client's `x-request-id` when it is sane, else a new one."""
    for name, value in headers:
        if name == b"x-request-id" and _SANE_ID.match(value):
            return value
    return uuid.uuid4().hex.encode()


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = client_request_id(scope["headers"])
        scope.setdefault("state", {})["request_id"] = request_id.decode()
        token = request_id_var.set(request_id.decode())
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            # A body read by code that does not turn a disconnect into an error of its own (read_body does).
            log.info("request failed", extra={"status": 499, "code": "client_closed_request"})
        except Exception as exc:
            # The trace goes to the log, never to the client.
            log.error("unexpected error", exc_info=exc)
            if started:
                raise
            body = orjson.dumps(LifelineError("The gateway hit an internal error; it has been logged.").envelope())
            await send_with_id(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                }
            )
            await send_with_id({"type": "http.response.body", "body": body})
        finally:
            request_id_var.reset(token)


def after_response(request: Request, work: Callable[[], None]) -> None:
    """Run `work` (it must not block: start a task) once the request's response has been sent."""
    request.scope.setdefault("state", {}).setdefault("after_response", []).append(work)


class GatewayMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Read and counted with no await in between: a reload cannot slip between the two.
        gateway = scope["app"].state.gateway
        gateway.enter()
        scope.setdefault("state", {})["gateway"] = gateway
        try:
            await self.app(scope, receive, send)
        finally:
            # Before leaving: a reload closes this gateway once its last request has left, and the work
            # started here (shadow calls) belongs to it.
            for work in scope["state"].pop("after_response", ()):
                try:
                    work()
                except Exception:  # what runs after a response never reaches it
                    log.exception("after-response work failed")
            gateway.leave()
