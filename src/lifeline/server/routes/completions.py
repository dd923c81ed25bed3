"""POST /v1/completions: OpenAI's legacy text completions in front of the same exchange as chat completions.

The body is validated and translated once into a chat body (protocol/completions.py): the prompt as one user
message. From there the request is admitted, routed (failover, continuation) and accounted exactly once as
on /v1/chat/completions (server/exchange.py); the answer is translated back into a `text_completion`, or its
chunks (server/sse.py).
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from lifeline.protocol.completions import CompletionChunks, new_id, to_completion, validate_request
from lifeline.protocol.parse import validate_chat_request
from lifeline.server.exchange import Exchange, Stream, wants_cost
from lifeline.server.sse import CompletionsEncoder, event_stream


async def completions(request: Request) -> Response:
    exchange = await Exchange.begin(request, request.headers.get("authorization"))
    parsed = validate_request(exchange.body)
    result = await exchange.chat(parsed.chat, validate_chat_request(parsed.chat))
    completion_id = new_id()
    if isinstance(result, Stream):
        encoder = CompletionsEncoder(CompletionChunks(completion_id, result.model), parsed.wants_usage)
        return event_stream(result.events, encoder, result.headers)
    body = to_completion(result.body, completion_id=completion_id, model=result.model, usage=result.usage)
    if result.usage_estimated:
        body["x_lifeline"] = {"usage_estimated": True}
    if wants_cost(request):  # as on chat completions: usage.cost in USD
        body["usage"] = {**body["usage"], "cost": result.cost_nusd / 1e9}
    return Response(orjson.dumps(body), media_type="application/json", headers=result.headers)
