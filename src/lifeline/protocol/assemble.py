"""A streamed chat answer assembled into the whole answer it amounts to (a `chat.completion` body).

Fed the chunks a client received, in order (continuations included), it concatenates each choice's text
and each tool call's arguments by their indexes, keeps the last finish reason and usage, and builds the
body a non-streamed request would have returned. Used to capture streamed answers (accounting/captures.py).
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


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
