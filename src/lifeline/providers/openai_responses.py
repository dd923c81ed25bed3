"""OpenAI's Responses API as an upstream wire format, for `openai` targets with `responses: native`.

A /v1/responses request routed to such a target is sent to `{base_url}/responses` as the Responses body the
gateway prepared (`ChatCall.responses`: the client's body with the conversation resolved and Lifeline's own
fields removed), with the target's model. What comes back is handed up unchanged in shape — the `response`
object, or each stream event as one `Chunk` — so that the router's failover, hold-back and the relay's
end-of-answer rules apply to it as to chat chunks: the deltas and finished output items are content,
`response.completed` / `response.incomplete` finish the answer and carry its usage (here in chat's words, for
the ledger), and an `error` or `response.failed` event is the upstream failing.
"""

from __future__ import annotations

from typing import Any

import orjson

from lifeline.providers.base import ChatCall, Chunk

#: the stream events that end a whole answer
FINISHED = frozenset({"response.completed", "response.incomplete"})
#: the stream events that say the upstream failed the answer
FAILED = frozenset({"error", "response.failed"})


def speaks_natively(call: ChatCall, native: bool) -> bool:
    """Whether this attempt goes to the target's Responses endpoint: a Responses request, to a native target,
    that is not a continuation (a broken stream is continued through chat completions, with a prefix)."""
    return native and call.responses is not None and call.prefill is None


def request_body(call: ChatCall, model: str, stream: bool) -> bytes:
    body = dict(call.responses or {})
    body["model"] = model
    if stream:
        body["stream"] = True
    else:
        body.pop("stream", None)
        body.pop("stream_options", None)
    return orjson.dumps(body)


def chat_usage(usage: Any) -> dict[str, Any] | None:
    """A Responses usage object in chat's words (what the ledger and the price book read)."""
    if not isinstance(usage, dict):
        return None
    prompt = int(usage.get("input_tokens") or 0)
    completion = int(usage.get("output_tokens") or 0)
    chat: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": int(usage.get("total_tokens") or prompt + completion),
    }
    cached = (usage.get("input_tokens_details") or {}).get("cached_tokens")
    if cached:
        chat["prompt_tokens_details"] = {"cached_tokens": int(cached)}
    reasoning = (usage.get("output_tokens_details") or {}).get("reasoning_tokens")
    if reasoning:
        chat["completion_tokens_details"] = {"reasoning_tokens": int(reasoning)}
    return chat


def failure(event: dict[str, Any]) -> dict[str, Any] | None:
    """The error object of a failed answer (an `error` event, `response.failed`, or a whole response whose
    status is failed); None when it did not fail."""
    kind = event.get("type")
    if kind == "error":
        return {k: event.get(k) for k in ("message", "code", "param")}
    response = event.get("response") if kind == "response.failed" else event
    if isinstance(response, dict) and (kind == "response.failed" or response.get("status") == "failed"):
        error = response.get("error")
        return error if isinstance(error, dict) else {"message": "the upstream failed the response"}
    return None


def event_chunk(event: dict[str, Any], raw: bytes) -> Chunk:
    """One stream event as a chunk: content when the client sees something of the answer in it, a finish
    (with the usage) when the answer is whole."""
    kind = str(event.get("type") or "")
    chunk = Chunk(data=event, raw=raw)
    chunk.content = kind.endswith(".delta") or kind == "response.output_item.done"
    if kind in FINISHED:
        chunk.finish = True
        response = event.get("response")
        chunk.usage = chat_usage(response.get("usage") if isinstance(response, dict) else None)
    return chunk
