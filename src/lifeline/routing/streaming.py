"""Relaying an open stream to the client as server-sent events, under the streaming rules.

- Events pass through as the upstream sent them (parsed once, re-sent unchanged).
- If the upstream fails after content reached the client, the stream ends with an OpenAI-style error
  event, which the `openai` SDK raises: never a truncated answer that looks complete — no [DONE] follows.
- Usage goes to the client exactly when it asked for it (`stream_options.include_usage`); when the
  upstream sent none, it is estimated and marked so under `x_lifeline`.
- The stream's verdict on its target (success, failure, or none when the client left) reaches the circuits
  when it ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from lifeline.errors import UpstreamBroken, UpstreamError
from lifeline.protocol.usage import delta_chars, estimate_usage
from lifeline.providers.base import ChatCall
from lifeline.routing.health import Health
from lifeline.routing.router import OpenStream, Routed

log = logging.getLogger("lifeline.stream")

DONE = b"data: [DONE]\n\n"


def sse(raw: bytes) -> bytes:
    return b"data: " + raw + b"\n\n"


@dataclass(slots=True)
class StreamEnd:
    """How a relayed stream ended: "ok", "broken" (the upstream failed after content) or "client_closed"."""

    outcome: str
    usage: dict[str, Any] | None
    usage_estimated: bool


async def relay(
    routed: Routed[OpenStream],
    call: ChatCall,
    health: Health,
    on_end: Callable[[StreamEnd], Awaitable[None]] | None = None,
) -> AsyncIterator[bytes]:
    wants_usage = call.request.wants_usage
    opened = routed.result
    usage: dict[str, Any] | None = None
    usage_sent = False
    completion_chars = 0
    last: dict[str, Any] | None = None
    verdict: bool | None = None  # None: the client left before the end
    estimated = False
    try:
        for chunk in opened.head:
            out = _pass(chunk.data, chunk.raw, chunk.usage, wants_usage)
            completion_chars += delta_chars(chunk.data)
            usage = chunk.usage or usage
            last = chunk.data
            if out:
                usage_sent = usage_sent or chunk.usage is not None
                yield out
        try:
            async for chunk in opened.rest:
                out = _pass(chunk.data, chunk.raw, chunk.usage, wants_usage)
                completion_chars += delta_chars(chunk.data)
                usage = chunk.usage or usage
                last = chunk.data
                if out:
                    usage_sent = usage_sent or chunk.usage is not None
                    yield out
        except UpstreamError as err:
            verdict = False
            health.record_failure(routed.target, err)
            log.warning(
                "stream broke after content was sent",
                extra={"request_id": call.request_id, "target": routed.target, "outcome": err.outcome},
            )
            broken = UpstreamBroken(
                f"The upstream ({routed.target}) failed after the answer had started: {err.message} "
                "The answer is incomplete.",
                code="upstream_stream_broken",
            )
            yield sse(orjson.dumps(broken.envelope()))
            return
        if usage is None:
            estimated = True
            usage = estimate_usage(call.body, completion_chars)
        if wants_usage and not usage_sent:
            yield sse(orjson.dumps(_usage_chunk(call, last, usage, estimated)))
        yield DONE
        verdict = True
        log.info("stream finished", extra={"request_id": call.request_id, "target": routed.target})
    finally:
        await opened.rest.aclose()  # type: ignore[attr-defined]
        if verdict is True:
            health.record_success(routed.target)
        elif verdict is None:
            health.release(routed.target)
        if on_end is not None:
            if usage is None:
                estimated = True
                usage = estimate_usage(call.body, completion_chars)
            outcome = "ok" if verdict else "broken" if verdict is False else "client_closed"
            # shielded: a client that left must not cancel the bookkeeping of what it consumed
            await asyncio.shield(on_end(StreamEnd(outcome, usage, estimated)))


def _pass(data: dict[str, Any], raw: bytes, usage: dict[str, Any] | None, wants_usage: bool) -> bytes | None:
    """The SSE bytes to send for one chunk, or None to drop it (a usage chunk the client did not ask for)."""
    if usage is not None and not data.get("choices") and not wants_usage:
        return None
    return sse(raw)


def _usage_chunk(call: ChatCall, last: dict[str, Any] | None, usage: dict[str, Any], estimated: bool) -> dict[str, Any]:
    base = last or {}
    chunk: dict[str, Any] = {
        "id": base.get("id", f"chatcmpl-{call.request_id}"),
        "object": "chat.completion.chunk",
        "created": base.get("created", int(time.time())),
        "model": base.get("model", ""),
        "choices": [],
        "usage": usage,
    }
    if estimated:
        chunk["x_lifeline"] = {"usage_estimated": True}
    return chunk
