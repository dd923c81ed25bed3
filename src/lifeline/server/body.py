"""Reading a request's body under its size limit, and for a model request within its deadline."""

from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect, Request

from lifeline.errors import ClientClosed, LifelineError, PayloadTooLarge, RequestTimeout
from lifeline.providers.base import Deadline
from lifeline.server.direct import CYCLE, DirectCycle
from lifeline.server.serving import REFUSAL


async def read_body(request: Request, limit: int, deadline: Deadline | None = None) -> bytes:
    """The request's body, counted against `limit` as it arrives (a larger one is refused before it has
    all come) and, for a model request, read within its deadline. A body the direct path (server/direct.py)
    already has whole is taken as it is."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The request body is larger than the limit of {limit} bytes.")
    cycle: DirectCycle | None = request.scope.get(CYCLE)
    arrived = cycle.arrived_body() if cycle is not None else None
    if arrived is not None:  # served directly and already all here: nothing to wait for
        if len(arrived) > limit:
            raise PayloadTooLarge(f"The request body is larger than the limit of {limit} bytes.")
        return arrived
    body = bytearray()
    try:
        async with asyncio.timeout(deadline.remaining() if deadline is not None else None):
            async for piece in request.stream():
                body += piece
                if len(body) > limit:
                    raise PayloadTooLarge(f"The request body is larger than the limit of {limit} bytes.")
    except TimeoutError:
        raise RequestTimeout("The request body did not arrive within the request's deadline.") from None
    except ClientDisconnect:
        # Either the client left, or the server gave up on a body that came too slowly (server/serving.py).
        refusal = request.scope.get("state", {}).get(REFUSAL)
        if isinstance(refusal, LifelineError):
            raise refusal from None
        raise ClientClosed("The client closed the connection before sending the whole body.") from None
    return bytes(body)
