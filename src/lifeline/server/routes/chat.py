"""POST /v1/chat/completions: parse the body, hand it to the exchange, render the answer or its stream."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from lifeline.protocol.parse import validate_chat_request
from lifeline.server.exchange import Exchange, Stream, wants_cost
from lifeline.server.sse import OpenAIEncoder, event_stream


async def chat_completions(request: Request) -> Response:
    exchange = await Exchange.begin(request, request.headers.get("authorization"))
    chat = validate_chat_request(exchange.body)
    result = await exchange.chat(exchange.body, chat)
    if isinstance(result, Stream):
        cost = result.cost if wants_cost(request) else None
        return event_stream(result.events, OpenAIEncoder(chat.wants_usage, exchange.request_id, cost), result.headers)
    body = result.body
    if result.usage_estimated:
        body = {**body, "usage": result.usage, "x_lifeline": {"usage_estimated": True}}
    if wants_cost(request):  # as OpenRouter does: usage.cost in USD
        body = {**body, "usage": {**(body.get("usage") or result.usage), "cost": result.cost_nusd / 1e9}}
    return Response(orjson.dumps(body), media_type="application/json", headers=result.headers)
