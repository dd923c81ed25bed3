"""POST /v1/messages: Anthropic's Messages API in front of the same router and accounting as chat completions.

The body is validated as Anthropic's and translated once into an OpenAI chat body (protocol/anthropic.py);
from there the request is authenticated, admitted, routed and accounted exactly once as on
/v1/chat/completions, and the answer is translated back: a message, or Anthropic's event stream under the
same streaming rules (see routing/streaming.py). Errors render in Anthropic's shape here, because the app's
handler speaks OpenAI's.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from lifeline.accounting.service import Admission
from lifeline.errors import LifelineError, UpstreamBroken
from lifeline.protocol.anthropic import (
    StreamTranslator,
    error_body,
    error_event,
    sse_event,
    to_chat_body,
    to_message,
    validate_messages_request,
)
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

log = logging.getLogger("lifeline.server")
stream_log = logging.getLogger("lifeline.stream")


async def messages(request: Request) -> Response:
    request_id: str = request.state.request_id
    try:
        return await _messages(request, request_id)
    except LifelineError as err:
        log.info(
            "request failed",
            extra={"status": err.status, "code": err.code, "attempts": err.headers.get("x-lifeline-attempts")},
        )
        return _error_response(err, request_id)
    except Exception as exc:
        # As the request-id middleware does for every route, but in the shape Anthropic's clients parse.
        log.error("unexpected error", exc_info=exc)
        return _error_response(LifelineError("The gateway hit an internal error; it has been logged."), request_id)


def _error_response(err: LifelineError, request_id: str) -> Response:
    return Response(
        orjson.dumps(error_body(err, request_id)),
        status_code=err.status,
        headers={**err.headers, "request-id": request_id},
        media_type="application/json",
    )


def authorization(request: Request) -> str | None:
    """Anthropic clients send `x-api-key: <key>`; the accounting reads `Authorization: Bearer <key>`."""
    api_key = request.headers.get("x-api-key")
    if api_key:
        return f"Bearer {api_key.strip()}"
    return request.headers.get("authorization")


async def _messages(request: Request, request_id: str) -> Response:
    gateway = gateway_of(request)
    settings = gateway.config.server
    accounting = gateway.accounting
    key = accounting.authenticate(authorization(request))
    deadline = request_deadline(request, settings.request_timeout)
    anthropic = validate_messages_request(
        parse_json_object(await read_body(request, settings.max_body_bytes, deadline))
    )
    data = to_chat_body(anthropic)
    chat = validate_chat_request(data)
    router = gateway.router
    router.alias(chat.model, "chat")  # an unknown alias is a 404 before anything else
    call = ChatCall(body=data, request=chat, request_id=request_id, deadline=deadline)
    admission = await accounting.admit(key, chat.model, data, chat.token_limit, request_id)
    streamed = bool(chat.stream)
    message_id = f"msg_{request_id}"
    if streamed:
        routed = await route_accounted(
            request, accounting, admission, router.open_stream(chat.model, call), streamed=True
        )
        model = next((str(c.data["model"]) for c in routed.result.head if c.data.get("model")), routed.model)
        translator = StreamTranslator(message_id, model, anthropic.stop_sequences)
        return _stream_response(gateway, routed, call, admission, translator, request_id)

    done = await route_accounted(request, accounting, admission, router.complete(chat.model, call), streamed=False)
    usage = done.result.usage
    estimated = usage is None
    if usage is None:
        usage = estimate_usage(data, delta_chars(done.result.body))
    await finish_answer(accounting, admission, done, usage, estimated)
    message = to_message(
        done.result.body,
        message_id=message_id,
        model=done.result.model,
        usage=usage,
        stop_sequences=anthropic.stop_sequences,
    )
    if estimated:
        message["x_lifeline"] = {"usage_estimated": True}
    return Response(
        orjson.dumps(message), media_type="application/json", headers=_headers(request_id, done.target, done.tries)
    )


def _headers(request_id: str, target: str, tries: int) -> dict[str, str]:
    # request-id is where the anthropic SDK looks for the id it exposes as `_request_id`
    return {"x-lifeline-target": target, "x-lifeline-attempts": str(tries), "request-id": request_id}


def _stream_response(
    gateway: Gateway,
    routed: Routed[OpenStream],
    call: ChatCall,
    admission: Admission,
    translator: StreamTranslator,
    request_id: str,
) -> Response:
    on_end = stream_finisher(gateway, routed, call, admission, translator.model)
    headers = {**_headers(request_id, routed.target, routed.tries), "cache-control": "no-cache"}
    # The same relay as /v1/chat/completions (failover rules, continuation, verdicts, accounting), speaking
    # Anthropic's events.
    encoder = AnthropicEncoder(translator)
    body = relay(routed, call, gateway.health, on_end, gateway.router, admission.alias, encoder=encoder)
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)


class AnthropicEncoder:
    """Anthropic's event stream from the relayed OpenAI chunks. Usage always goes to the translator, which
    reports it in message_start and message_delta; a broken answer ends with an `error` event."""

    wants_usage = True

    def __init__(self, translator: StreamTranslator) -> None:
        self.translator = translator

    def start(self, call: ChatCall) -> bytes:
        return _events(self.translator.start(estimate_usage(call.body, 0)["prompt_tokens"]))

    def chunk(self, data: dict[str, Any], raw: bytes | None) -> bytes:
        return _events(self.translator.feed(data))

    def usage_chunk(self, data: dict[str, Any], raw: bytes) -> bytes:
        return _events(self.translator.feed(data))

    def finish(
        self, call: ChatCall, last: dict[str, Any] | None, usage: dict[str, Any], estimated: bool, usage_sent: bool
    ) -> bytes:
        return _events(self.translator.finish(usage))

    def error(self, broken: UpstreamBroken, call: ChatCall) -> bytes:
        return sse_event(error_event("api_error", broken.message, call.request_id))


def _events(events: list[dict[str, Any]]) -> bytes:
    return b"".join(sse_event(e) for e in events)
