"""A streamed chat answer assembled into the whole answer it amounts to (a `chat.completion` body).

Fed the chunks a client received, in order (continuations included), it concatenates each choice's text
and each tool call's arguments by their indexes, keeps the last finish reason and usage, and builds the
body a non-streamed request would have returned. Used to capture streamed answers (accounting/captures.py)
and to keep them in the response cache (accounting/cache.py); `chunks_of` goes the other way, for a cached
answer served to a streaming client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Call:
    id: str | None = None
    type: str = "function"
    name: str = ""
    arguments: str = ""


@dataclass
class _Choice:
    role: str = "assistant"
    content: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    calls: dict[int, _Call] = field(default_factory=dict)
    finish_reason: str | None = None


class Assembler:
    """Feed it chunks (`add`), then read the whole answer (`completion`)."""

    def __init__(self) -> None:
        self.id: str | None = None
        self.model: str | None = None
        self.created: int | None = None
        self.usage: dict[str, Any] | None = None
        self._choices: dict[int, _Choice] = {}

    def add(self, chunk: dict[str, Any]) -> None:
        self.id = self.id or _text(chunk.get("id"))
        self.model = self.model or _text(chunk.get("model"))
        if self.created is None and isinstance(chunk.get("created"), int):
            self.created = chunk["created"]
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if isinstance(choice, dict):
                self._add_choice(choice)

    def _add_choice(self, choice: dict[str, Any]) -> None:
        index = choice.get("index", 0)
        state = self._choices.setdefault(index if isinstance(index, int) else 0, _Choice())
        if isinstance(choice.get("finish_reason"), str):
            state.finish_reason = choice["finish_reason"]
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return
        if isinstance(delta.get("role"), str):
            state.role = delta["role"]
        if isinstance(delta.get("content"), str):
            state.content.append(delta["content"])
        if isinstance(delta.get("refusal"), str):
            state.refusal.append(delta["refusal"])
        for position, call in enumerate(delta.get("tool_calls") or []):
            if not isinstance(call, dict):
                continue
            at = call.get("index", position)
            slot = state.calls.setdefault(at if isinstance(at, int) else position, _Call())
            slot.id = slot.id or _text(call.get("id"))
            slot.type = _text(call.get("type")) or slot.type
            function = call.get("function")
            if isinstance(function, dict):
                slot.name += _text(function.get("name")) or ""
                slot.arguments += _text(function.get("arguments")) or ""

    def completion(self) -> dict[str, Any]:
        """The answer so far as a `chat.completion` body."""
        choices = []
        for index in sorted(self._choices):
            state = self._choices[index]
            message: dict[str, Any] = {"role": state.role, "content": "".join(state.content) or None}
            if state.refusal:
                message["refusal"] = "".join(state.refusal)
            if state.calls:
                message["tool_calls"] = [
                    {
                        "id": call.id or f"call_{index}_{at}",
                        "type": call.type,
                        "function": {"name": call.name, "arguments": call.arguments},
                    }
                    for at, call in sorted(state.calls.items())
                ]
            choices.append({"index": index, "message": message, "finish_reason": state.finish_reason})
        body: dict[str, Any] = {
            "id": self.id or "",
            "object": "chat.completion",
            "created": self.created or 0,
            "model": self.model or "",
            "choices": choices,
        }
        if self.usage is not None:
            body["usage"] = self.usage
        return body


def chunks_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    """A whole `chat.completion` body as the chunks of a stream that carries the same answer: per choice its
    role, its text (reasoning, refusal, content), its tool calls, then its finish reason. Usage is not among
    them (the stream's encoder sends it at the end when the client asked for it)."""
    head: dict[str, Any] = {"id": body.get("id", ""), "object": "chat.completion.chunk"}
    head["created"] = body.get("created", 0)
    head["model"] = body.get("model", "")
    if body.get("system_fingerprint") is not None:
        head["system_fingerprint"] = body["system_fingerprint"]
    chunks = []
    for position, choice in enumerate(body.get("choices") or []):
        if not isinstance(choice, dict):
            continue
        index = choice.get("index", position)
        found = choice.get("message")
        message: dict[str, Any] = found if isinstance(found, dict) else {}
        deltas: list[dict[str, Any]] = [{"role": message.get("role") or "assistant", "content": ""}]
        for field_name in ("reasoning_content", "refusal", "content"):
            if isinstance(message.get(field_name), str) and message[field_name]:
                deltas.append({field_name: message[field_name]})
        calls = [c for c in message.get("tool_calls") or [] if isinstance(c, dict)]
        if calls:
            deltas.append({"tool_calls": [{"index": at, **call} for at, call in enumerate(calls)]})
        for delta in deltas:
            chunks.append({**head, "choices": [{"index": index, "delta": delta, "finish_reason": None}]})
        chunks.append(
            {**head, "choices": [{"index": index, "delta": {}, "finish_reason": choice.get("finish_reason")}]}
        )
    return chunks


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
