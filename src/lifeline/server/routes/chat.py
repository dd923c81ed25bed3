"""POST /v1/chat/completions."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from lifeline.errors import InvalidRequest, LifelineError, PayloadTooLarge
from lifeline.protocol.parse import parse_json_object, validate_chat_request
from lifeline.protocol.usage import delta_chars, estimate_usage
from lifeline.providers.base import ChatCall, Deadline
from lifeline.routing.streaming import relay
from lifeline.server.gateway import Gateway

log = logging.getLogger("lifeline.access")
T = TypeVar("T")


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The request body is larger than the limit of {limit} bytes.")
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise PayloadTooLarge(f"The request body is larger than the limit of {limit} bytes.")
    return bytes(body)


def request_deadline(request: Request, default: float) -> Deadline:
    header = request.headers.get("x-lifeline-timeout")
    if header is None:
        return Deadline.after(default)
    try:
        seconds = float(header)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise InvalidRequest(
            "The header x-lifeline-timeout must be a positive number of seconds.", param="x-lifeline-timeout"
        )
    return Deadline.after(min(seconds, default))


async def chat_completions(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    started = time.monotonic()
    settings = gateway.config.server
    deadline = request_deadline(request, settings.request_timeout)
    data = parse_json_object(await read_body(request, settings.max_body_bytes))
    chat = validate_chat_request(data)
    call = ChatCall(body=data, request=chat, request_id=request.state.request_id, deadline=deadline)
    router = gateway.router
    router.alias(chat.model)  # an unknown alias is a 404 before anything else

    if chat.stream:
        routed = await until_disconnect(request, router.open_stream(chat.model, call))
        headers = {
            "x-lifeline-target": routed.target,
            "x-lifeline-attempts": str(routed.tries),
            "cache-control": "no-cache",
        }
        _access(chat.model, routed.target, routed.tries, 200, started, stream=True)
        return StreamingResponse(relay(routed, call, gateway.health), media_type="text/event-stream", headers=headers)

    done = await until_disconnect(request, router.complete(chat.model, call))
    body = done.result.body
    if done.result.usage is None:
        body = dict(body)
        chars = sum(delta_chars({"choices": [c]}) for c in body.get("choices") or ())
        body["usage"] = estimate_usage(data, chars)
        body["x_lifeline"] = {"usage_estimated": True}
    _access(chat.model, done.target, done.tries, 200, started, stream=False)
    return Response(
        orjson.dumps(body),
        media_type="application/json",
        headers={"x-lifeline-target": done.target, "x-lifeline-attempts": str(done.tries)},
    )


async def until_disconnect(request: Request, work: Any) -> Any:
    """Run the router's work, cancelling it if the client goes away meanwhile (a generation on the
    embedded engine stops; an upstream request is abandoned)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        raise LifelineError("The client closed the connection.", status=499, code="client_closed_request")
    return task.result()


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _access(alias: str, target: str, tries: int, status: int, started: float, *, stream: bool) -> None:
    log.info(
        "request answered",
        extra={
            "alias": alias,
            "target": target,
            "attempts": tries,
            "status": status,
            "stream": stream,
            "latency": round(time.monotonic() - started, 4),
        },
    )
