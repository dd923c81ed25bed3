"""POST /v1/embeddings: failover only across targets of one embedding space (checked at load)."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from lifeline.protocol.embeddings import validate_embedding_request
from lifeline.server.exchange import Exchange


async def embeddings(request: Request) -> Response:
    exchange = await Exchange.begin(request, request.headers.get("authorization"))
    answer = await exchange.embed(validate_embedding_request(exchange.body))
    return Response(orjson.dumps(answer.body), media_type="application/json", headers=answer.headers)
