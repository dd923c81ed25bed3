"""What every model route shares: reading the body under its limit within the request's deadline, cancelling
the work when the client leaves, and the accounting of a request exactly once, whatever its outcome."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from starlette.requests import ClientDisconnect, Request

from lifeline.accounting.service import Accounting, Admission
from lifeline.attempts import AttemptLog
from lifeline.errors import ClientClosed, InvalidRequest, LifelineError, PayloadTooLarge, RequestTimeout
from lifeline.protocol.usage import estimate_usage
from lifeline.providers.base import ChatCall, Completion, Deadline
from lifeline.routing.router import OpenStream, Routed
from lifeline.routing.streaming import Part, StreamEnd
from lifeline.server.gateway import Gateway
from lifeline.server.serving import REFUSAL

T = TypeVar("T")


async def read_body(request: Request, limit: int, deadline: Deadline | None = None) -> bytes:
    """The request's body, counted against `limit` as it arrives (a larger one is refused before it has
    all come) and, for a model request, read within its deadline."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The request body is larger than the limit of {limit} bytes.")
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


async def route_accounted(
    request: Request, accounting: Accounting, admission: Admission, work: Awaitable[T], *, streamed: bool
) -> T:
    """Run the router's work (cancelled if the client leaves); if it fails, the request is accounted as
    unanswered here, and the error goes on to be rendered."""
    try:
        result: T = await until_disconnect(request, work)
    except BaseException as exc:
        # Cancelled: the client left (or the server is stopping); anything else unexpected is our own 500.
        if isinstance(exc, LifelineError):
            status = exc.status
        else:
            status = 499 if isinstance(exc, asyncio.CancelledError) else 500
        await accounting.finish(
            admission,
            status=status,
            outcome="client_closed" if status == 499 else "error",
            target=None,
            model=None,
            attempts=exc.attempts if isinstance(exc, LifelineError) else AttemptLog(),
            usage=None,
            usage_estimated=False,
            streamed=streamed,
            ttft=None,
        )
        raise
    return result


async def finish_answer(
    accounting: Accounting, admission: Admission, done: Routed[Completion], usage: dict[str, Any], estimated: bool
) -> None:
    """Account a whole (non-streamed) answer."""
    await accounting.finish(
        admission,
        status=200,
        outcome="ok",
        target=done.target,
        model=done.result.model,
        attempts=done.attempts,
        usage=usage,
        usage_estimated=estimated,
        streamed=False,
        ttft=None,
    )


def stream_finisher(
    gateway: Gateway, routed: Routed[OpenStream], call: ChatCall, admission: Admission, model: str
) -> Callable[[StreamEnd], Awaitable[None]]:
    """What a relayed stream calls when it ends, whatever the client's wire format: the accounting, once."""
    ttft = time.monotonic() - admission.started

    async def on_end(end: StreamEnd) -> None:
        # The answering attempt is the last: a stream that broke, or whose client left, says so there.
        attempts = routed.attempts.ended(end.outcome)
        # A stream that broke after content still cost what it produced; the client left: the same. A
        # continued stream costs each target's share at that target's price.
        parts = [(p.target, *_part_tokens(p, call.body)) for p in end.parts] if len(end.parts) > 1 else None
        await gateway.accounting.finish(
            admission,
            status=200,
            outcome=end.outcome.value,
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
