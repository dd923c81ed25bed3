"""The Provider protocol every target kind implements, and the values that cross it.

A provider turns one chat call into one attempt at one upstream. It raises only Lifeline's
`UpstreamError` classes (converted at its own boundary) and enforces the target's timeouts, each bounded
by the request's deadline. It knows nothing of aliases, retries or circuits: that is routing/.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from lifeline.protocol.chat import ChatCompletionRequest


@dataclass(slots=True)
class Deadline:
    """The moment (time.monotonic) by which the whole request must be answered."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def bound(self, timeout: float) -> float:
        """The timeout, shortened to what is left of the deadline (never negative)."""
        return max(0.0, min(timeout, self.remaining()))

    @property
    def expired(self) -> bool:
        # uvloop's clock has millisecond resolution and is cached per loop iteration, so a timer bounded by
        # the deadline can fire a few milliseconds before time.monotonic() reaches it.
        return self.remaining() <= 0.005


@dataclass(slots=True)
class ChatCall:
    """One client request as the providers see it."""

    #: the client's JSON body, unchanged (unknown fields included); providers copy before changing it
    body: dict[str, Any]
    request: ChatCompletionRequest
    request_id: str
    deadline: Deadline
    #: mid-stream continuation: the assistant text already sent to the client, which the target must
    #: continue rather than repeat (a prefix / prefill); None for an ordinary request
    prefill: str | None = None
    #: a /v1/responses request: the Responses body a target that speaks that API natively is sent instead of
    #: `body` (the chat translation every other target gets); None for a chat request
    responses: dict[str, Any] | None = None
    #: this attempt's limit on the time to first content (seconds; math.inf: only the deadline), set by the
    #: router from the alias and the target's place in the chain; None: the target's own timeouts.ttft
    ttft: float | None = None


@dataclass(slots=True)
class EmbeddingCall:
    """One embeddings request: the client's JSON body (`input`, `model`, `encoding_format`, `dimensions` …)."""

    body: dict[str, Any]
    request_id: str
    deadline: Deadline


@dataclass(slots=True)
class Completion:
    """A whole (non-streaming) answer."""

    body: dict[str, Any]
    model: str
    usage: dict[str, Any] | None


@dataclass(slots=True)
class Chunk:
    """One streamed event, parsed once; `raw` is its JSON text, re-sent unchanged where possible."""

    data: dict[str, Any]
    raw: bytes
    #: carries something the client sees: content, a refusal, reasoning or tool-call deltas
    content: bool = False
    #: some choice finished (finish_reason set)
    finish: bool = False
    #: the chunk's usage, when it carries one (OpenAI sends it on a last chunk with no choices)
    usage: dict[str, Any] | None = None


def inspect_chunk(data: dict[str, Any], raw: bytes) -> Chunk:
    content = finish = False
    choices = data.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            if not content:
                delta = choice.get("delta")
                if isinstance(delta, dict) and (
                    delta.get("content")
                    or delta.get("tool_calls")
                    or delta.get("refusal")
                    or delta.get("reasoning_content")
                    or delta.get("reasoning")
                    or delta.get("function_call")
                ):
                    content = True
            if choice.get("finish_reason"):
                finish = True
    usage = data.get("usage")
    return Chunk(data, raw, content, finish, usage if isinstance(usage, dict) else None)


class Provider(Protocol):
    """One target: an upstream reached through one wire format."""

    name: str
    #: the model name the target serves (used when an answer does not name one)
    model: str
    context_window: int | None
    supports_n: bool

    async def start(self) -> None:
        """Open pools or load models. Called once at start-up."""

    async def close(self) -> None:
        """Release everything. Called once at shutdown."""

    async def complete(self, call: ChatCall) -> Completion:
        """One non-streaming attempt."""
        ...

    def stream(self, call: ChatCall) -> AsyncIterator[Chunk]:
        """One streaming attempt. Ends normally only when the answer is complete; raises UpstreamError
        (subclasses) otherwise. Closing the iterator early releases the upstream at once."""
        ...


@runtime_checkable
class TokenCounter(Protocol):
    """A provider that can count a chat request's prompt tokens as its model will (Anthropic's count_tokens
    endpoint, the embedded model's own tokenizer)."""

    async def count_tokens(self, call: ChatCall) -> int:
        """The prompt tokens of `call`'s body on this target."""
        ...


class EmbeddingProvider(Provider, Protocol):
    """A target that can also turn text into vectors (kinds openai, and llamacpp with `embedding: true`)."""

    async def embed(self, call: EmbeddingCall) -> Completion:
        """One embeddings attempt; the body is OpenAI's embeddings response (`data`, `model`, `usage`)."""
        ...
