"""The wire encoders: a relayed stream's typed events (routing/streaming.py) as the client's server-sent events.

- `OpenAIEncoder`: chat completion chunks as the upstream sent them, usage when the client asked for it
  (`stream_options.include_usage`; estimated and marked under `x_lifeline` when the upstream sent none or the
  answer came from several targets), `[DONE]` only after a complete answer, and after a broken one an
  OpenAI-style error event the `openai` SDK raises. A continued answer's final chunk says so under
  `x_lifeline.continued`.
- `AnthropicEncoder`: Anthropic's Messages events (message_start … message_stop), translated by
  protocol/anthropic.py; a broken answer ends with an `error` event.
- `ResponsesEncoder`: the Responses API's events (response.created … response.completed, each with its
  `sequence_number`), translated by protocol/responses.py; a broken answer that could not be continued ends
  with response.failed, never a completed truncated answer. `EitherResponsesEncoder` picks it, or passes a
  native Responses target's own events through (protocol/native_responses.py), by what the stream carries.
- `CompletionsEncoder`: legacy `text_completion` chunks (protocol/completions.py) from the relayed chat chunks,
  the usage chunk when asked for, `[DONE]` only after a complete answer, an OpenAI error event otherwise.

Each takes `cost` when the client asked for the answer's cost (`x-lifeline-include-cost: true`): the final
usage then carries `cost` in USD — the chat usage chunk, message_delta's usage, response.completed's usage —
as the ledger records it. A stream's headers go out before its answer is known, so they cannot carry it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any, Protocol

import orjson
from starlette.responses import StreamingResponse

from lifeline.protocol.anthropic import StreamTranslator, error_event
from lifeline.protocol.completions import CompletionChunks
from lifeline.protocol.native_responses import NativeStream
from lifeline.protocol.response_objects import ResponseStream
from lifeline.protocol.usage import estimate_usage
from lifeline.routing.streaming import Broken, Content, Continued, End, StreamEvent

DONE = b"data: [DONE]\n\n"

#: what a stream that ended as `End` costs, in nano-USD (server/exchange.py's Stream.cost)
Cost = Callable[[End], int]


def with_cost(usage: dict[str, Any], cost: Cost | None, end: End) -> dict[str, Any]:
    """`usage` with the answer's cost in USD added, as OpenRouter words it (`usage.cost`), when asked for."""
    return usage if cost is None else {**usage, "cost": cost(end) / 1e9}


def sse(raw: bytes) -> bytes:
    """One unnamed server-sent event (OpenAI's)."""
    return b"data: " + raw + b"\n\n"


def anthropic_event(event: dict[str, Any]) -> bytes:
    """One server-sent event, named by its type as Anthropic's stream names them."""
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


class Encoder(Protocol):
    """Turns a relayed stream's events into the client's wire format."""

    def start(self) -> bytes:
        """Bytes before the first event (may be empty)."""
        ...

    def encode(self, event: StreamEvent) -> bytes:
        """The bytes for one event (may be empty)."""
        ...


class OpenAIEncoder:
    """OpenAI's server-sent events: chunks as they came, usage when asked for, `[DONE]` only when complete,
    an error event otherwise."""

    def __init__(self, wants_usage: bool, request_id: str, cost: Cost | None = None) -> None:
        # Asking for the cost asks for the usage chunk that carries it.
        self.wants_usage = wants_usage or cost is not None
        self.request_id = request_id
        self.cost = cost
        self.usage_sent = False
        self.last: dict[str, Any] | None = None  # the last chunk sent, which the usage chunk resembles
        self.continued: list[dict[str, Any]] = []

    def start(self) -> bytes:
        return b""

    def encode(self, event: StreamEvent) -> bytes:
        if isinstance(event, Content):
            return self._content(event)
        if isinstance(event, Continued):
            self.continued.append(event.as_dict())
            return b""
        if isinstance(event, Broken):
            return sse(orjson.dumps(event.error.envelope()))
        # One usage chunk after the end, unless the upstream's own went by (one target's, whole).
        if self.wants_usage and (not self.usage_sent or self.continued):
            return sse(orjson.dumps(self._usage_chunk(event))) + DONE
        return DONE

    def _content(self, event: Content) -> bytes:
        if event.usage_only:
            if not self.wants_usage or self.cost is not None:
                return b""  # with the cost asked for, the usage chunk is Lifeline's own, after the end
            self.usage_sent = True
            return sse(event.raw)
        self.last = event.data
        if self.continued and event.finish:
            data = event.data
            data = {**data, "x_lifeline": {**(data.get("x_lifeline") or {}), "continued": self.continued}}
            return sse(orjson.dumps(data))
        return sse(event.raw)

    def _usage_chunk(self, end: End) -> dict[str, Any]:
        base = self.last or {}
        chunk: dict[str, Any] = {
            "id": base.get("id", f"chatcmpl-{self.request_id}"),
            "object": "chat.completion.chunk",
            "created": base.get("created", int(time.time())),
            "model": base.get("model", ""),
            "choices": [],
            "usage": with_cost(end.usage, self.cost, end),
        }
        if end.usage_estimated:
            chunk["x_lifeline"] = {"usage_estimated": True}
        return chunk


class AnthropicEncoder:
    """Anthropic's event stream from the relayed OpenAI chunks. Usage goes to the translator, which reports it
    in message_start (estimated, from `body`) and message_delta; a broken answer ends with an `error` event."""

    def __init__(
        self, translator: StreamTranslator, body: dict[str, Any], request_id: str, cost: Cost | None = None
    ) -> None:
        self.translator = translator
        self.body = body
        self.request_id = request_id
        self.cost = cost

    def start(self) -> bytes:
        return _events(self.translator.start(estimate_usage(self.body, 0)["prompt_tokens"]))

    def encode(self, event: StreamEvent) -> bytes:
        if isinstance(event, Content):
            return _events(self.translator.feed(event.data))
        if isinstance(event, Continued):
            return b""
        if isinstance(event, Broken):
            return anthropic_event(error_event("api_error", event.error.message, self.request_id))
        events = self.translator.finish(event.usage)
        for e in events:
            if e["type"] == "message_delta":  # the usage clients take as the final total
                e["usage"] = with_cost(e["usage"], self.cost, event)
        return _events(events)


class ResponsesEncoder:
    """The Responses API's event stream from the relayed OpenAI chunks (protocol/responses.py). A continuation
    is invisible (the text goes on in the same item); a broken answer ends with response.failed."""

    def __init__(self, translator: ResponseStream, cost: Cost | None = None) -> None:
        self.translator = translator
        self.cost = cost

    def start(self) -> bytes:
        return _events(self.translator.start())

    def encode(self, event: StreamEvent) -> bytes:
        if isinstance(event, Content):
            return _events(self.translator.feed(event.data))
        if isinstance(event, Continued):
            self.translator.continued(event.as_dict())
            return b""
        if isinstance(event, Broken):
            return _events(self.translator.failed(event.error.message))
        events = self.translator.completed(event.usage, event.usage_estimated)
        if self.cost is not None:  # on the event only: the stored response is the translator's, without it
            last = events[-1]
            response = last["response"]
            events[-1] = {**last, "response": {**response, "usage": with_cost(response["usage"], self.cost, event)}}
        return _events(events)


class CompletionsEncoder:
    """Legacy text completion chunks from the relayed chat chunks. The upstream's usage chunk is not passed
    on: the answer's usage (the whole answer's, of every target a continuation used) ends the stream when
    the client asked for it."""

    def __init__(self, chunks: CompletionChunks, wants_usage: bool) -> None:
        self.chunks = chunks
        self.wants_usage = wants_usage

    def start(self) -> bytes:
        return b""

    def encode(self, event: StreamEvent) -> bytes:
        if isinstance(event, Content):
            chunk = self.chunks.chunk(event.data)
            return b"" if chunk is None else sse(orjson.dumps(chunk))
        if isinstance(event, Continued):
            return b""
        if isinstance(event, Broken):
            return sse(orjson.dumps(event.error.envelope()))
        if self.wants_usage:
            return sse(orjson.dumps(self.chunks.usage(event.usage, event.usage_estimated))) + DONE
        return DONE


class EitherResponsesEncoder:
    """A Responses stream from whichever target answered: a native target's events pass through (under
    Lifeline's response id; a break ends with response.failed), a chat target's chunks are translated by
    `translated`. The first event says which: nothing is sent before it."""

    def __init__(self, translated: ResponsesEncoder, native: NativeStream) -> None:
        self.translated = translated
        self.native = native
        self.passthrough: bool | None = None

    def start(self) -> bytes:
        return b""

    def encode(self, event: StreamEvent) -> bytes:
        opening = b""
        if self.passthrough is None:
            self.passthrough = isinstance(event, Content) and is_native_event(event.data)
            opening = b"" if self.passthrough else self.translated.start()
        if not self.passthrough:
            return opening + self.translated.encode(event)
        if isinstance(event, Content):
            fed = self.native.feed(event.data)
            # re-sent as the upstream wrote it unless it carried the response (now under Lifeline's id)
            raw = event.raw if fed is event.data else orjson.dumps(fed)
            return b"event: " + str(fed["type"]).encode() + b"\ndata: " + raw + b"\n\n"
        if isinstance(event, Broken):
            return _events(self.native.failed(event.error.message))
        return b""  # the upstream's response.completed went by already; a native stream is never continued


def is_native_event(data: dict[str, Any]) -> bool:
    """A Responses stream event (a native target's), not a chat completion chunk."""
    return isinstance(data.get("type"), str) and "choices" not in data


def _events(events: list[dict[str, Any]]) -> bytes:
    return b"".join(anthropic_event(e) for e in events)


async def encode(events: AsyncGenerator[StreamEvent, None], encoder: Encoder) -> AsyncGenerator[bytes, None]:
    """A stream's bytes. The opening goes out with the first event's, so that nothing is sent before the
    relay has started (and with it, its promise to end once, however the client leaves)."""
    opening = encoder.start()
    async with contextlib.aclosing(events):
        async for event in events:
            out = opening + encoder.encode(event)
            opening = b""
            if out:
                yield out


def event_stream(
    events: AsyncGenerator[StreamEvent, None], encoder: Encoder, headers: Mapping[str, str]
) -> StreamingResponse:
    return StreamingResponse(
        encode(events, encoder), media_type="text/event-stream", headers={**headers, "cache-control": "no-cache"}
    )
