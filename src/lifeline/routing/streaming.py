"""Relaying an open stream to the client as server-sent events, under the streaming rules.

- Events pass through as the upstream sent them (parsed once, re-sent unchanged).
- If the upstream fails after content reached the client, the same answer is continued on the next target
  that accepts an assistant prefix (mid-stream continuation): the client sees one uninterrupted stream,
  and the final chunk says so under `x_lifeline.continued`. A tool call already partly sent is never
  spliced from two models, and when no target can continue, the stream ends with an OpenAI-style error
  event the `openai` SDK raises — never a truncated answer that looks complete: no [DONE] follows.
- Usage goes to the client exactly when it asked for it (`stream_options.include_usage`); when the
  upstream sent none (or the answer came from several), it is estimated and marked under `x_lifeline`.
- Each target's verdict (success, failure, or none when the client left) reaches the circuits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from lifeline.attempts import Outcome
from lifeline.errors import UpstreamBroken, UpstreamError
from lifeline.protocol.usage import delta_chars, estimate_usage
from lifeline.providers.base import ChatCall, Chunk
from lifeline.routing.health import Health
from lifeline.routing.router import OpenStream, Routed

if TYPE_CHECKING:
    from lifeline.routing.router import Router

log = logging.getLogger("lifeline.stream")

DONE = b"data: [DONE]\n\n"


def sse(raw: bytes) -> bytes:
    return b"data: " + raw + b"\n\n"


@dataclass(slots=True)
class Part:
    """What one target contributed to a streamed answer: for usage and cost."""

    target: str
    usage: dict[str, Any] | None = None
    chars: int = 0


@dataclass(slots=True)
class StreamEnd:
    """How a relayed stream ended: OK, BROKEN (failed after content, not continued) or CLIENT_CLOSED."""

    outcome: Outcome
    usage: dict[str, Any] | None
    usage_estimated: bool
    #: the target that produced the end of the answer
    target: str = ""
    #: each target's share, in order (more than one after a continuation)
    parts: list[Part] = field(default_factory=list)


class Encoder(Protocol):
    """Turns the relayed OpenAI chunks into the client's wire format (OpenAI's SSE, Anthropic's events)."""

    #: whether usage-only chunks reach `usage_chunk` (OpenAI: when the client asked; Anthropic: always)
    wants_usage: bool

    def start(self, call: ChatCall) -> bytes:
        """Bytes before the first chunk (may be empty)."""
        ...

    def chunk(self, data: dict[str, Any], raw: bytes | None) -> bytes:
        """One chunk; `raw` is its JSON as the upstream sent it, or None when Lifeline changed it."""
        ...

    def usage_chunk(self, data: dict[str, Any], raw: bytes) -> bytes:
        """A usage-only chunk from the upstream, which the client asked for."""
        ...

    def finish(self, call: ChatCall, last: dict[str, Any] | None, usage: dict[str, Any], estimated: bool,
               usage_sent: bool) -> bytes:  # fmt: skip
        """The end of a complete answer."""
        ...

    def error(self, broken: UpstreamBroken, call: ChatCall) -> bytes:
        """The end of an answer that broke and could not be continued."""
        ...


class OpenAIEncoder:
    """OpenAI's server-sent events: chunks as they came, usage when asked for, `[DONE]` only when complete,
    an error event otherwise."""

    def __init__(self, wants_usage: bool) -> None:
        self.wants_usage = wants_usage

    def start(self, call: ChatCall) -> bytes:
        return b""

    def chunk(self, data: dict[str, Any], raw: bytes | None) -> bytes:
        return sse(raw if raw is not None else orjson.dumps(data))

    def usage_chunk(self, data: dict[str, Any], raw: bytes) -> bytes:
        return sse(raw)

    def finish(
        self, call: ChatCall, last: dict[str, Any] | None, usage: dict[str, Any], estimated: bool, usage_sent: bool
    ) -> bytes:
        if self.wants_usage and not usage_sent:
            return sse(orjson.dumps(_usage_chunk(call, last, usage, estimated))) + DONE
        return DONE

    def error(self, broken: UpstreamBroken, call: ChatCall) -> bytes:
        return sse(orjson.dumps(broken.envelope()))


@dataclass
class _State:
    wants_usage: bool
    text: str = ""  # the assistant text the client has received (choice 0)
    tool_sent: bool = False
    usage_sent: bool = False
    last: dict[str, Any] | None = None
    continued: list[dict[str, Any]] = field(default_factory=list)


async def relay(
    routed: Routed[OpenStream],
    call: ChatCall,
    health: Health,
    on_end: Callable[[StreamEnd], Awaitable[None]] | None = None,
    router: Router | None = None,
    alias: str | None = None,
    encoder: Encoder | None = None,
) -> AsyncIterator[bytes]:
    encoder = encoder or OpenAIEncoder(call.request.wants_usage)
    state = _State(wants_usage=encoder.wants_usage)
    target, head, rest = routed.target, list(routed.result.head), routed.result.rest
    parts = [Part(target)]
    tried = {target, *routed.attempts.tried_targets}
    verdict: bool | None = None  # None: the client left before the end
    limit = router.alias(alias).max_continuations if router is not None and alias is not None else 0
    try:
        opening = encoder.start(call)
        if opening:
            yield opening
        while True:
            try:
                for chunk in head:
                    out = _emit(state, chunk, parts[-1], encoder)
                    if out:
                        yield out
                async for chunk in rest:
                    out = _emit(state, chunk, parts[-1], encoder)
                    if out:
                        yield out
                break
            except UpstreamError as err:
                health.record_failure(target, err)
                log.warning(
                    "stream broke after content was sent",
                    extra={"request_id": call.request_id, "target": target, "outcome": err.outcome.value},
                )
                await rest.aclose()  # type: ignore[attr-defined]
                follow = None
                if (
                    router is not None
                    and alias is not None
                    and len(state.continued) < limit
                    and _continuable(state, call)
                ):
                    follow = await router.continue_stream(alias, call, state.text, tried)
                if follow is None:
                    verdict = False
                    yield encoder.error(_broken(target, err, state), call)
                    return
                routed.attempts.extend(follow.attempts)
                state.continued.append(
                    {"from": target, "to": follow.target, "after_chars": len(state.text), "reason": err.outcome.value}
                )
                log.info(
                    "stream continued on another target", extra={"request_id": call.request_id, "target": follow.target}
                )
                target, head, rest = follow.target, list(follow.result.head), follow.result.rest
                parts.append(Part(target))
        usage, estimated = _usage(call, parts)
        yield encoder.finish(call, state.last, usage, estimated, state.usage_sent and not state.continued)
        verdict = True
        log.info("stream finished", extra={"request_id": call.request_id, "target": target})
    finally:
        await rest.aclose()  # type: ignore[attr-defined]
        if verdict is True:
            health.record_success(target)
        elif verdict is None:
            health.release(target)
        if on_end is not None:
            usage, estimated = _usage(call, parts)
            outcome = Outcome.OK if verdict else Outcome.BROKEN if verdict is False else Outcome.CLIENT_CLOSED
            # shielded: a client that left must not cancel the bookkeeping of what it consumed
            await asyncio.shield(on_end(StreamEnd(outcome, usage, estimated, target, parts)))


def _emit(state: _State, chunk: Chunk, part: Part, encoder: Encoder) -> bytes | None:
    """The bytes to send for one chunk, or None to drop it."""
    data = chunk.data
    choices = data.get("choices") or []
    if chunk.usage is not None:
        part.usage = chunk.usage
        if not choices:
            # A usage-only chunk: passed on when asked for, unless the answer came from several targets
            # (then one combined usage chunk is sent at the end).
            if not state.wants_usage or state.continued:
                return None
            state.usage_sent = True
            return encoder.usage_chunk(data, chunk.raw)
    if state.continued and not chunk.content and not chunk.finish:
        return None  # the continuation's opening role chunk: the client has had one already
    for choice in choices:
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict):
            if delta.get("tool_calls") or delta.get("function_call"):
                state.tool_sent = True
            content = delta.get("content")
            if isinstance(content, str) and choice.get("index", 0) == 0:
                state.text += content
    part.chars += delta_chars(data)
    state.last = data
    if state.continued and chunk.finish:
        data = {**data, "x_lifeline": {**(data.get("x_lifeline") or {}), "continued": state.continued}}
        return encoder.chunk(data, None)
    return encoder.chunk(data, chunk.raw)


def _continuable(state: _State, call: ChatCall) -> bool:
    # A half-sent tool call is never finished by another model, and several choices cannot be continued.
    return not state.tool_sent and (call.request.n or 1) == 1 and bool(state.text)


def _broken(target: str, err: UpstreamError, state: _State) -> UpstreamBroken:
    why = "a tool call had started" if state.tool_sent else "no other target could continue it"
    return UpstreamBroken(
        f"The upstream ({target}) failed after the answer had started: {err.message} The answer is incomplete ({why}).",
        code="upstream_stream_broken",
    )


def _usage(call: ChatCall, parts: list[Part]) -> tuple[dict[str, Any], bool]:
    """The answer's usage: the upstream's own when one target answered and reported it; otherwise the
    prompt once and each part's completion, estimated where unknown (and then marked)."""
    if len(parts) == 1 and parts[0].usage is not None:
        return parts[0].usage, False
    first = parts[0].usage or estimate_usage(call.body, 0)
    completion = 0
    for part in parts:
        completion += (
            int(part.usage["completion_tokens"]) if part.usage else estimate_usage({}, part.chars)["completion_tokens"]
        )
    prompt = int(first.get("prompt_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}, True


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
