"""POST /v1/chat/completions: authenticate, parse once, admit, route, render — and account exactly once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from lifeline.accounting.service import Admission
from lifeline.errors import InvalidRequest, LifelineError, PayloadTooLarge
from lifeline.protocol.parse import parse_json_object, validate_chat_request
from lifeline.protocol.usage import delta_chars, estimate_usage
from lifeline.providers.base import ChatCall, Deadline
from lifeline.routing.router import OpenStream, Routed
from lifeline.routing.streaming import Part, StreamEnd, relay
from lifeline.server.gateway import Gateway, gateway_of


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
    gateway = gateway_of(request)
    settings = gateway.config.server
    accounting = gateway.accounting
    key = accounting.authenticate(request.headers.get("authorization"))
    deadline = request_deadline(request, settings.request_timeout)
    data = parse_json_object(await read_body(request, settings.max_body_bytes))
    chat = validate_chat_request(data)
    router = gateway.router
    router.alias(chat.model, "chat")  # an unknown alias is a 404 before anything else
    request_id: str = request.state.request_id
    call = ChatCall(body=data, request=chat, request_id=request_id, deadline=deadline)
    admission = await accounting.admit(key, chat.model, data, chat.token_limit, request_id)
    try:
        if chat.stream:
            routed = await until_disconnect(request, router.open_stream(chat.model, call))
        else:
            done = await until_disconnect(request, router.complete(chat.model, call))
    except BaseException as exc:
        status = exc.status if isinstance(exc, LifelineError) else 499
        attempts = exc.attempts if isinstance(exc, LifelineError) else []
        outcome = "client_closed" if status == 499 else "error"
        await accounting.finish(
            admission,
            status=status,
            outcome=outcome,
            target=None,
            model=None,
            attempts=attempts,
            usage=None,
            usage_estimated=False,
            streamed=bool(chat.stream),
            ttft=None,
        )
        raise

    if chat.stream:
        return _stream_response(gateway, routed, call, admission)

    body = done.result.body
    usage = done.result.usage
    estimated = usage is None
    if usage is None:
        body = dict(body)
        chars = sum(delta_chars({"choices": [c]}) for c in body.get("choices") or ())
        usage = body["usage"] = estimate_usage(data, chars)
        body["x_lifeline"] = {"usage_estimated": True}
    await accounting.finish(
        admission,
        status=200,
        outcome="ok",
        target=done.target,
        model=done.result.model,
        attempts=[a.as_dict() for a in done.attempts],
        usage=usage,
        usage_estimated=estimated,
        streamed=False,
        ttft=None,
    )
    return Response(
        orjson.dumps(body),
        media_type="application/json",
        headers={"x-lifeline-target": done.target, "x-lifeline-attempts": str(done.tries)},
    )


def _stream_response(gateway: Gateway, routed: Routed[OpenStream], call: ChatCall, admission: Admission) -> Response:
    model = next((str(c.data["model"]) for c in routed.result.head if c.data.get("model")), routed.model)
    on_end = stream_finisher(gateway, routed, call, admission, model)
    headers = {
        "x-lifeline-target": routed.target,
        "x-lifeline-attempts": str(routed.tries),
        "cache-control": "no-cache",
    }
    body: AsyncIterator[bytes] = relay(routed, call, gateway.health, on_end, gateway.router, admission.alias)
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)


def stream_finisher(
    gateway: Gateway, routed: Routed[OpenStream], call: ChatCall, admission: Admission, model: str
) -> Callable[[StreamEnd], Awaitable[None]]:
    """What a relayed stream calls when it ends, whatever the client's wire format: the accounting, once."""
    ttft = time.monotonic() - admission.started

    async def on_end(end: StreamEnd) -> None:
        attempts = [a.as_dict() for a in routed.attempts]
        if end.outcome != "ok":
            attempts[-1] = {**attempts[-1], "outcome": end.outcome}
        # A stream that broke after content still cost what it produced; the client left: the same. A
        # continued stream costs each target's share at that target's price.
        parts = [(p.target, *_part_tokens(p, call.body)) for p in end.parts] if len(end.parts) > 1 else None
        await gateway.accounting.finish(
            admission,
            status=200,
            outcome=end.outcome,
            target=end.target or routed.target,
            cost_parts=parts,
            model=model,
            attempts=attempts,
            usage=end.usage,
            usage_estimated=end.usage_estimated,
            streamed=True,
            ttft=ttft,
        )

    return on_end


def _part_tokens(part: Part, body: dict[str, Any]) -> tuple[int, int]:
    """Prompt and completion tokens one target of a continued stream is charged for: each target read the
    conversation (a continuation, the partial answer too) as its prompt. Estimated where it reported none."""
    if part.usage is not None:
        return int(part.usage.get("prompt_tokens") or 0), int(part.usage.get("completion_tokens") or 0)
    return estimate_usage(body, 0)["prompt_tokens"], estimate_usage({}, part.chars)["completion_tokens"]


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
