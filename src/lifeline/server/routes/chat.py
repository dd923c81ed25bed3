"""POST /v1/chat/completions: authenticate, parse once, admit, route, render — and account exactly once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from lifeline.accounting.service import Admission
from lifeline.protocol.parse import parse_json_object, validate_chat_request
from lifeline.protocol.usage import delta_chars, estimate_usage
from lifeline.providers.base import ChatCall
from lifeline.routing.router import OpenStream, Routed
from lifeline.routing.streaming import relay
from lifeline.server.gateway import Gateway, gateway_of
from lifeline.server.routes.common import (
    finish_answer,
    read_body,
    request_deadline,
    route_accounted,
    stream_finisher,
)


async def chat_completions(request: Request) -> Response:
    gateway = gateway_of(request)
    settings = gateway.config.server
    accounting = gateway.accounting
    key = accounting.authenticate(request.headers.get("authorization"))
    deadline = request_deadline(request, settings.request_timeout)
    data = parse_json_object(await read_body(request, settings.max_body_bytes, deadline))
    chat = validate_chat_request(data)
    router = gateway.router
    router.alias(chat.model, "chat")  # an unknown alias is a 404 before anything else
    request_id: str = request.state.request_id
    call = ChatCall(body=data, request=chat, request_id=request_id, deadline=deadline)
    admission = await accounting.admit(key, chat.model, data, chat.token_limit, request_id)

    if chat.stream:
        routed = await route_accounted(
            request, accounting, admission, router.open_stream(chat.model, call), streamed=True
        )
        return _stream_response(gateway, routed, call, admission)

    done = await route_accounted(request, accounting, admission, router.complete(chat.model, call), streamed=False)
    body = done.result.body
    usage = done.result.usage
    estimated = usage is None
    if usage is None:
        body = dict(body)
        chars = sum(delta_chars({"choices": [c]}) for c in body.get("choices") or ())
        usage = body["usage"] = estimate_usage(data, chars)
        body["x_lifeline"] = {"usage_estimated": True}
    await finish_answer(accounting, admission, done, usage, estimated)
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
