"""What the translating providers (kinds `anthropic` and `gemini`) share on the way in and out.

On the way in, pieces of an OpenAI chat-completions body read the same whatever they become: a message's
plain text, a base64 `data:` URL, a tool call's arguments, stop sequences, turns merged by role. On the way
out, `chat_completion` and `ChunkWriter` give an answer OpenAI's shape. What each API calls these things
stays in its provider module.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

JSON = dict[str, Any]

#: Anthropic and Gemini insist on a first user turn with non-empty text; this stands in when the client sent
#: none (a conversation of only system prompts, or one that opens with the assistant). Kept minimal on purpose.
PLACEHOLDER_TURN = "."


# --- the request -----------------------------------------------------------------------------------


def plain_text(content: Any) -> str:
    """A message's text: a string as it is, the text and refusal parts of a list joined by newlines."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(p.get("text") or "") for p in content if isinstance(p, dict) and p.get("type") in ("text", "refusal")
        )
    return ""


def data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a `data:<type>;base64,<data>` URL, or None for any other URL."""
    if not url.startswith("data:"):
        return None
    head, sep, data = url[5:].partition(",")
    media_type, _, encoding = head.partition(";")
    if not sep or encoding.lower() != "base64":
        return None
    return media_type.lower(), data


def arguments_object(arguments: Any) -> JSON:
    """A tool call's arguments as the object Anthropic and Gemini want. Models sometimes emit arguments
    that are not a JSON object; they are kept as text under "arguments" rather than dropped."""
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {"arguments": arguments}
    return value if isinstance(value, dict) else {"arguments": value}


def stop_sequences(stop: Any) -> list[str] | None:
    """OpenAI's `stop` (a string or a list) as a list of strings; None when there is none to send."""
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and stop:
        return [s for s in stop if isinstance(s, str)]
    return None


def add_turn(turns: list[JSON], role: str, items: list[JSON], *, field: str) -> None:
    """Append items (blocks, parts) under `field` as a turn, merging with the previous turn of the same role:
    both APIs want user/assistant alternation, and the results of parallel tool calls must share one turn."""
    if not items:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1][field].extend(items)
    else:
        turns.append({"role": role, field: items})


# --- the answer ------------------------------------------------------------------------------------


def chat_completion(
    *,
    completion_id: str,
    model: str,
    texts: list[str],
    reasoning: list[str],
    tool_calls: list[JSON],
    finish_reason: str,
    usage: JSON | None,
) -> JSON:
    """An OpenAI chat.completion with one choice, from what a foreign answer was read into."""
    message: JSON = {"role": "assistant", "content": "".join(texts) if texts or not tool_calls else None}
    message["refusal"] = None
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if tool_calls:
        message["tool_calls"] = tool_calls
    body: JSON = {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
    }
    if usage is not None:
        body["usage"] = usage
    return body


class ChunkWriter:
    """OpenAI chunk dicts for one translated stream: every chunk carries the same id, model and time."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.model = model
        self.created = int(time.time())
        self._usage_sent = False

    def chunk(self, delta: JSON, finish: str | None = None) -> JSON:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**self._base(), "choices": [choice]}

    def usage_chunk(self, usage: JSON | None) -> list[JSON]:
        """The usage chunk, once, at the end of a complete answer (none when the upstream sent no usage)."""
        if self._usage_sent:
            return []
        self._usage_sent = True
        if usage is None:
            return []
        return [{**self._base(), "choices": [], "usage": usage}]

    def _base(self) -> JSON:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model}
