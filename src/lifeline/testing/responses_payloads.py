"""What the fault wall answers on OpenAI's Responses API (`POST /v1/responses`): the response object and its
stream events in the order OpenAI sends them, each numbered by `sequence_number`.

The answer is the wall's words (or, with `scripted`, what the last user message asks it to say after
`SAY:`), a `function_call` item with `tool_call` when a function tool is offered, and — the built-in tools
that only a native Responses upstream runs — a completed `web_search_call` or `file_search_call` item first
for each such tool offered, so a test can see that a request carrying one reached a native upstream and came
back. `max_output_tokens` below the answer's length makes an incomplete response. Usage counts the input's
words and the answer's tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from lifeline.testing.behaviours import SAY_MARKER, stream_piece
from lifeline.testing.payloads import DEFAULT_TOOL, TOOL_ARGUMENT_PIECES, TOOL_ARGUMENTS

RESPONSES_PATH = "/v1/responses"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
    return ""


def _messages(body: dict[str, Any]) -> list[tuple[str, str]]:
    """(role, text) of each message in the input (a string input is one user message)."""
    raw = body.get("input")
    if isinstance(raw, str):
        return [("user", raw)]
    items = raw if isinstance(raw, list) else []
    return [
        (str(item.get("role")), _text_of(item.get("content")))
        for item in items
        if isinstance(item, dict) and item.get("type", "message") == "message"
    ]


def input_words(body: dict[str, Any]) -> int:
    words = sum(len(text.split()) for _, text in _messages(body))
    instructions = body.get("instructions")
    return words + (len(instructions.split()) if isinstance(instructions, str) else 0)


def said(body: dict[str, Any]) -> str | None:
    """What `scripted` says: the text after SAY: in the last user message, else None."""
    for role, text in reversed(_messages(body)):
        if role == "user":
            marker = text.find(SAY_MARKER)
            return text[marker + len(SAY_MARKER) :].strip() if marker >= 0 else None
    return None


def _function_tool(body: dict[str, Any]) -> str | None:
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else []:
        if isinstance(tool, dict) and tool.get("type") == "function":
            return str(tool.get("name") or DEFAULT_TOOL)
    return None


def builtin_items(body: dict[str, Any], serial: int) -> list[dict[str, Any]]:
    """A completed call item for each built-in search tool offered (web_search*, file_search)."""
    items: list[dict[str, Any]] = []
    tools = body.get("tools")
    for i, tool in enumerate(tools if isinstance(tools, list) else []):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if isinstance(kind, str) and kind.startswith("web_search"):
            action = {"type": "search", "query": "lifeline wall"}
            items.append(
                {"type": "web_search_call", "id": f"ws_wall_{serial}_{i}", "status": "completed", "action": action}
            )
        elif kind == "file_search":
            items.append(
                {
                    "type": "file_search_call",
                    "id": f"fs_wall_{serial}_{i}",
                    "status": "completed",
                    "queries": ["lifeline wall"],
                    "results": None,
                }
            )
    return items


@dataclass
class ResponsesReply:
    """Everything fixed about one Responses answer, so that the response object and every event agree."""

    serial: int
    created_at: int
    model: str
    body: dict[str, Any]
    tokens: int
    tool_call: bool = False
    sequence: int = 0
    texts: list[str] = field(default_factory=list)

    @classmethod
    def of(
        cls, serial: int, created_at: int, model: str, body: dict[str, Any], tokens: int, scripted: bool
    ) -> ResponsesReply:
        text = said(body) if scripted else None
        pieces = text.split(" ") if text else [stream_piece(i).strip() for i in range(tokens)]
        limit = body.get("max_output_tokens")
        if isinstance(limit, int) and not isinstance(limit, bool) and 0 < limit < len(pieces):
            pieces = pieces[:limit]
            tokens = limit
        reply = cls(serial, created_at, model, body, len(pieces) if text else tokens)
        reply.texts = [p if i == 0 else " " + p for i, p in enumerate(pieces)]
        return reply

    @property
    def id(self) -> str:
        return f"resp_wall_{self.serial}"

    @property
    def incomplete(self) -> bool:
        limit = self.body.get("max_output_tokens")
        return (
            isinstance(limit, int) and not isinstance(limit, bool) and self.tokens >= limit > 0 and not self.tool_call
        )

    def usage(self) -> dict[str, Any]:
        prompt, output = input_words(self.body), self.tokens
        return {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + output,
        }

    def response(self, status: str, output: list[dict[str, Any]], *, usage: bool = False) -> dict[str, Any]:
        body = self.body
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": self.model,
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": body.get("previous_response_id"),
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_p": body.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": self.usage() if usage else None,
            "metadata": body.get("metadata") or {},
        }

    def final_items(self) -> list[dict[str, Any]]:
        items = builtin_items(self.body, self.serial)
        name = _function_tool(self.body)
        if self.tool_call and name is not None:
            items.append(
                {
                    "type": "function_call",
                    "id": f"fc_wall_{self.serial}",
                    "call_id": f"call_wall_{self.serial}",
                    "name": name,
                    "arguments": TOOL_ARGUMENTS,
                    "status": "completed",
                }
            )
        else:
            items.append(self._message("".join(self.texts), "incomplete" if self.incomplete else "completed"))
        return items

    def _message(self, text: str, status: str) -> dict[str, Any]:
        content = (
            []
            if status == "in_progress"
            else [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
        )
        return {
            "type": "message",
            "id": f"msg_wall_{self.serial}",
            "status": status,
            "role": "assistant",
            "content": content,
        }

    def whole(self) -> dict[str, Any]:
        status = "incomplete" if self.incomplete else "completed"
        return self.response(status, self.final_items(), usage=True)

    # --- the stream ---------------------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def events(self) -> Iterator[tuple[bool, dict[str, Any]]]:
        """The stream's events, each with whether it is a delta (where the breaking behaviours count)."""
        yield False, self._event("response.created", response=self.response("in_progress", []))
        yield False, self._event("response.in_progress", response=self.response("in_progress", []))
        final = self.final_items()
        for index, item in enumerate(final):
            kind = item["type"]
            if kind == "message":
                yield from self._message_events(index, item)
                continue
            yield (
                False,
                self._event("response.output_item.added", output_index=index, item={**item, "status": "in_progress"}),
            )
            if kind == "function_call":
                opened = {"item_id": item["id"], "output_index": index}
                for piece in TOOL_ARGUMENT_PIECES:
                    yield True, self._event("response.function_call_arguments.delta", **opened, delta=piece)
                yield False, self._event("response.function_call_arguments.done", **opened, arguments=item["arguments"])
            else:
                prefix = "response.web_search_call" if kind == "web_search_call" else "response.file_search_call"
                for step in ("in_progress", "searching", "completed"):
                    yield False, self._event(f"{prefix}.{step}", item_id=item["id"], output_index=index)
            yield False, self._event("response.output_item.done", output_index=index, item=item)
        kind = "response.incomplete" if self.incomplete else "response.completed"
        yield False, self._event(kind, response=self.whole())

    def _message_events(self, index: int, item: dict[str, Any]) -> Iterator[tuple[bool, dict[str, Any]]]:
        at = {"item_id": item["id"], "output_index": index}
        yield (
            False,
            self._event("response.output_item.added", output_index=index, item=self._message("", "in_progress")),
        )
        empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        yield False, self._event("response.content_part.added", **at, content_index=0, part=empty)
        for piece in self.texts:
            yield True, self._event("response.output_text.delta", **at, content_index=0, delta=piece, logprobs=[])
        text = "".join(self.texts)
        yield False, self._event("response.output_text.done", **at, content_index=0, text=text, logprobs=[])
        yield False, self._event("response.content_part.done", **at, content_index=0, part=item["content"][0])
        yield False, self._event("response.output_item.done", output_index=index, item=item)


def error_event(sequence: int) -> dict[str, Any]:
    """The `error` event OpenAI sends when it fails a response mid-stream."""
    return {
        "type": "error",
        "sequence_number": sequence,
        "code": "server_error",
        "message": "The server had an error while processing your request.",
        "param": None,
    }
