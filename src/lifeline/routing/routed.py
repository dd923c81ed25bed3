"""What the router hands back: a `Routed` answer (its target, model and attempts) and an `OpenStream`, a
stream read up to its first content (`read_head`, with the alias's hold-back window) so that a failure until
then can still move to another target unseen. Shared by the attempt loop (routing/router.py) and the taking
over of a broken stream (routing/continuation.py).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from lifeline.attempts import AttemptLog
from lifeline.providers.base import Chunk

T = TypeVar("T")


@dataclass(slots=True)
class Routed(Generic[T]):
    target: str
    model: str
    result: T
    attempts: AttemptLog = field(default_factory=AttemptLog)
    #: the alias that answered: the requested one, or one of the request's own fallbacks
    alias: str = ""

    @property
    def tries(self) -> int:
        return self.attempts.tries


@dataclass(slots=True)
class OpenStream:
    """A stream that has produced its first content: `head` is what was read so far, `rest` the remainder."""

    head: list[Chunk]
    rest: AsyncIterator[Chunk]
    #: a continuation that turned out to be the answer started again, verified against the text sent and
    #: cut to what follows it (the target ignored the prefix)
    restarted: bool = False


async def read_head(rest: AsyncIterator[Chunk], hold_tokens: int, hold_seconds: float) -> OpenStream:
    """Read a stream up to its first content — or, with a hold-back window, until `hold_tokens` content
    events and `hold_seconds` since the first have passed (or it finished) — so that a failure until then
    can still move to another target unseen."""
    head: list[Chunk] = []
    seen = 0
    first_at: float | None = None
    try:
        async for chunk in rest:
            head.append(chunk)
            if chunk.finish:
                break
            if chunk.content:
                seen += 1
                first_at = first_at or time.monotonic()
                if seen >= max(1, hold_tokens) and time.monotonic() - first_at >= hold_seconds:
                    break
    except BaseException:
        await rest.aclose()  # type: ignore[attr-defined]
        raise
    return OpenStream(head, rest)
