"""POST /v1/embeddings: failover only across targets of one embedding space (checked at load)."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from lifeline.protocol.embeddings import validate_embedding_request
from lifeline.protocol.parse import parse_json_object
from lifeline.protocol.usage import estimate_usage
from lifeline.providers.base import EmbeddingCall
from lifeline.server.gateway import gateway_of
from lifeline.server.routes.common import finish_answer, read_body, request_deadline, route_accounted


async def embeddings(request: Request) -> Response:
    gateway = gateway_of(request)
    settings = gateway.config.server
    accounting = gateway.accounting
    key = accounting.authenticate(request.headers.get("authorization"))
    deadline = request_deadline(request, settings.request_timeout)
    data = parse_json_object(await read_body(request, settings.max_body_bytes, deadline))
    parsed = validate_embedding_request(data)
    gateway.router.alias(parsed.model, "embeddings")
    request_id: str = request.state.request_id
    # The body as it is: the reservation counts text inputs from above and token-id inputs exactly.
    admission = await accounting.admit(key, parsed.model, data, 1, request_id, "embeddings")
    call = EmbeddingCall(body=data, request_id=request_id, deadline=deadline)
    done = await route_accounted(
        request, accounting, admission, gateway.router.embed(parsed.model, call), streamed=False
    )
    usage = done.result.usage
    prompt_tokens = int((usage or estimate_usage(data, 0)).get("prompt_tokens") or 0)
    await finish_answer(
        accounting, admission, done, {"prompt_tokens": prompt_tokens, "completion_tokens": 0}, usage is None
    )
    return Response(
        orjson.dumps(done.result.body),
        media_type="application/json",
        headers={"x-lifeline-target": done.target, "x-lifeline-attempts": str(done.tries)},
    )
