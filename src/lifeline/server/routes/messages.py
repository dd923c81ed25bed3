"""POST /v1/messages: Anthropic's Messages API in front of the same exchange as chat completions.

The body is validated as Anthropic's and translated once into an OpenAI chat body (protocol/anthropic.py);
from there the request is admitted, routed and accounted exactly once as on /v1/chat/completions
(server/exchange.py), and the answer is translated back: a message, or Anthropic's event stream under the
same streaming rules (server/sse.py). Errors render in Anthropic's shape (server/errors.py).
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from lifeline.protocol.anthropic import StreamTranslator, to_chat_body, to_message, validate_messages_request
from lifeline.protocol.parse import validate_chat_request
from lifeline.server.errors import anthropic_errors
from lifeline.server.exchange import Exchange, Stream, wants_cost
from lifeline.server.sse import AnthropicEncoder, event_stream


def authorization(request: Request) -> str | None:
    """Anthropic clients send `x-api-key: <key>`; the accounting reads `Authorization: Bearer <key>`."""
    api_key = request.headers.get("x-api-key")
    if api_key:
        return f"Bearer {api_key.strip()}"
    return request.headers.get("authorization")


@anthropic_errors
async def messages(request: Request) -> Response:
    exchange = await Exchange.begin(request, authorization(request))
    anthropic = validate_messages_request(exchange.body)
    data = to_chat_body(anthropic)
    result = await exchange.chat(data, validate_chat_request(data))
    request_id = exchange.request_id
    message_id = f"msg_{request_id}"
    # request-id is where the anthropic SDK looks for the id it exposes as `_request_id`
    headers = {**result.headers, "request-id": request_id}
    if isinstance(result, Stream):
        translator = StreamTranslator(message_id, result.model, anthropic.stop_sequences)
        cost = result.cost if wants_cost(request) else None
        return event_stream(result.events, AnthropicEncoder(translator, data, request_id, cost), headers)
    message = to_message(
        result.body,
        message_id=message_id,
        model=result.model,
        usage=result.usage,
        stop_sequences=anthropic.stop_sequences,
    )
    if result.usage_estimated:
        message["x_lifeline"] = {"usage_estimated": True}
    if wants_cost(request):
        message["usage"] = {**message["usage"], "cost": result.cost_nusd / 1e9}
    return Response(orjson.dumps(message), media_type="application/json", headers=headers)


@anthropic_errors
async def count_tokens(request: Request) -> Response:
    """POST /v1/messages/count_tokens: `{"input_tokens": N}`, counted by the target the alias would try first
    when it can, else estimated and marked `x-lifeline-estimate: true`."""
    exchange = await Exchange.begin(request, authorization(request))
    # The endpoint takes a Messages request without max_tokens, which nothing here needs.
    anthropic = validate_messages_request({"max_tokens": 1, **exchange.body})
    data = to_chat_body(anthropic)
    counted = await exchange.count_tokens(data, validate_chat_request(data))
    headers = {**counted.headers, "request-id": exchange.request_id}
    return Response(orjson.dumps({"input_tokens": counted.tokens}), media_type="application/json", headers=headers)
