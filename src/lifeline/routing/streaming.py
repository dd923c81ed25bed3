"""Relaying an open stream under the streaming rules, as typed events; the server encodes them (server/sse.py).

- Chunks pass through as the upstream sent them (parsed once; `Content.raw` is the upstream's JSON).
- If the upstream fails after content reached the client, the same answer is continued on the next target
  that accepts an assistant prefix (mid-stream continuation, `Router.continue_stream`): a `Continued` event,
  then the next target's chunks, and the client sees one uninterrupted answer. When no target can continue
  it, the request is restarted on the next target and only what follows the text already sent goes out, if
  the regenerated answer reproduces that text (`Router.replay_stream`, routing/replay.py). A tool call
  already partly sent is never spliced from two models, and when nothing can finish the answer, the stream
  ends with `Broken` — never a truncated answer that looks complete.
- A complete answer ends with `End`, carrying its usage: the upstream's own when one target answered and
  reported it; otherwise estimated (and marked so).
- Each target's verdict (success, failure, or none when the client left) reaches the circuits, and `on_end`
  hears how the stream ended — complete, broken or abandoned by the client — exactly once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from lifeline.attempts import AttemptLog, Outcome
from lifeline.errors import UpstreamBroken, UpstreamError
from lifeline.protocol.usage import answer_usage, delta_chars
from lifeline.providers.base import ChatCall, Chunk
from lifeline.routing.router import OpenStream, Routed

if TYPE_CHECKING:
    from lifeline.routing.router import Router

log = logging.getLogger("lifeline.stream")

#: how an answer went on after a break: continued from the text sent, or restarted and verified against it
Mode = Literal["prefill", "replay"]


@dataclass(slots=True)
class Content:
    """A chunk for the client. `raw` is its JSON as the upstream sent it; `finish`: a choice finished in it;
    `usage_only`: it carries only the usage (OpenAI sends it last, when the client asked for it). Made for
    every event, and never changed after: not frozen, which would cost a setattr call per field."""

    data: dict[str, Any]
    raw: bytes
    finish: bool = False
    usage_only: bool = False


@dataclass(frozen=True, slots=True)
class Continued:
    """The answer broke on `source` after `after_chars` characters of text and goes on on `target`:
    continued from those characters ("prefill"), or restarted and found to reproduce them ("replay")."""

    source: str
    target: str
    after_chars: int
    #: the broken target's outcome
    reason: Outcome
    mode: Mode = "prefill"

    def as_dict(self) -> dict[str, Any]:
        return {
            "from": self.source,
            "to": self.target,
            "after_chars": self.after_chars,
            "reason": self.reason.value,
            "mode": self.mode,
        }


@dataclass(frozen=True, slots=True)
class Broken:
    """The answer broke after content was sent and could not be continued: the stream's last event."""

    error: UpstreamBroken


@dataclass(slots=True)
class Part:
    """What one target contributed to a streamed answer: for usage and cost."""

    target: str
    usage: dict[str, Any] | None = None
    chars: int = 0

    def tokens(self, body: dict[str, Any]) -> tuple[int, int]:
        """The prompt and completion tokens this target is charged for: each target read the conversation
        (a continuation, the partial answer too) as its prompt. Estimated where it reported none."""
        usage, _ = answer_usage(body, self.usage, self.chars)
        return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


@dataclass(slots=True)
class End:
    """How a relayed stream ended: OK (then it is the stream's last event), BROKEN (failed after content, not
    continued) or CLIENT_CLOSED."""

    outcome: Outcome
    usage: dict[str, Any]
    usage_estimated: bool
    #: the target that produced the end of the answer
    target: str = ""
    #: each target's share, in order (more than one after a continuation)
    parts: list[Part] = field(default_factory=list)


StreamEvent = Content | Continued | Broken | End


@dataclass
class _State:
    text: str = ""  # the assistant text the client has received (choice 0)
    tool_sent: bool = False
    continuations: int = 0


async def relay(
    routed: Routed[OpenStream],
    call: ChatCall,
    router: Router,
    alias: str,
    on_end: Callable[[End], Awaitable[None]],
) -> AsyncGenerator[StreamEvent, None]:
    """The events of an open stream, continued on other targets of `alias` (the one that answered) when it breaks
    after content."""
    health = router.health
    state = _State()
    target, head, rest = routed.target, list(routed.result.head), routed.result.rest
    parts = [Part(target)]
    tried = {target, *routed.attempts.tried_targets}
    verdict: bool | None = None  # None: the client left before the end
    limit = router.alias(alias).max_continuations
    replay = router.alias(alias).replay
    try:
        while True:
            try:
                for chunk in head:
                    event = _event(state, chunk, parts[-1])
                    if event is not None:
                        yield event
                async for chunk in rest:
                    event = _event(state, chunk, parts[-1])
                    if event is not None:
                        yield event
                break
            except UpstreamError as err:
                health.record_failure(target, err)
                log.warning(
                    "stream broke after content was sent",
                    extra={"request_id": call.request_id, "target": target, "outcome": err.outcome.value},
                )
                await rest.aclose()  # type: ignore[attr-defined]
                follow: Routed[OpenStream] | None = None
                mode: Mode = "prefill"
                if state.continuations < limit and _continuable(state, call):
                    follow, made = await router.continue_stream(alias, call, state.text, tried)
                    _extend(routed.attempts, made, alias)
                    if follow is not None and follow.result.restarted:
                        mode = "replay"
                    if follow is None and replay:
                        follow, made = await router.replay_stream(alias, call, state.text, tried)
                        _extend(routed.attempts, made, alias)
                        mode = "replay"
                if follow is None:
                    verdict = False
                    yield Broken(_broken(target, err, state))
                    return
                state.continuations += 1
                log.info(
                    "stream continued on another target",
                    extra={"request_id": call.request_id, "target": follow.target, "mode": mode},
                )
                continued = Continued(target, follow.target, len(state.text), err.outcome, mode)
                target, head, rest = follow.target, list(follow.result.head), follow.result.rest
                # a replay produced the sent text again: its share of the answer includes it
                parts.append(Part(target, chars=len(state.text) if mode == "replay" else 0))
                yield continued
        usage, estimated = _usage(call, parts)
        yield End(Outcome.OK, usage, estimated, target, parts)
        verdict = True
        log.info("stream finished", extra={"request_id": call.request_id, "target": target})
    finally:
        await rest.aclose()  # type: ignore[attr-defined]
        if verdict is True:
            health.record_success(target)
        elif verdict is None:
            health.release(target)
        usage, estimated = _usage(call, parts)
        outcome = Outcome.OK if verdict else Outcome.BROKEN if verdict is False else Outcome.CLIENT_CLOSED
        # shielded: a client that left must not cancel the bookkeeping of what it consumed
        await asyncio.shield(on_end(End(outcome, usage, estimated, target, parts)))


def _event(state: _State, chunk: Chunk, part: Part) -> Content | None:
    """The event for one chunk, or None to drop it."""
    data = chunk.data
    choices = data.get("choices") or []
    if chunk.usage is not None:
        part.usage = chunk.usage
        if not choices:
            # A usage-only chunk: passed on unless the answer came from several targets (then one combined
            # usage goes with the end).
            return None if state.continuations else Content(data, chunk.raw, False, True)
    if state.continuations and not chunk.content and not chunk.finish:
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
    return Content(data, chunk.raw, chunk.finish)


def _continuable(state: _State, call: ChatCall) -> bool:
    # A half-sent tool call is never finished by another model, and several choices cannot be continued.
    return not state.tool_sent and (call.request.n or 1) == 1 and bool(state.text)


def _broken(target: str, err: UpstreamError, state: _State) -> UpstreamBroken:
    why = "a tool call had started" if state.tool_sent else "no other target could continue or reproduce it"
    return UpstreamBroken(
        f"The upstream ({target}) failed after the answer had started: {err.message} The answer is incomplete ({why}).",
        code="upstream_stream_broken",
    )


def _usage(call: ChatCall, parts: list[Part]) -> tuple[dict[str, Any], bool]:
    """The answer's usage: the upstream's own when one target answered and reported it; otherwise the
    prompt once and each part's completion, estimated where unknown (and then marked)."""
    if len(parts) == 1 and parts[0].usage is not None:
        return parts[0].usage, False
    prompt = parts[0].tokens(call.body)[0]
    completion = sum(part.tokens(call.body)[1] for part in parts)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}, True


def _extend(attempts: AttemptLog, made: AttemptLog, alias: str) -> None:
    """Add a continuation's attempts to the answer's; in a request with fallbacks, each says its alias."""
    if attempts.aliased:
        made.for_alias(alias)
    attempts.extend(made)
