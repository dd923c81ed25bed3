"""The Responses API's answers, from chat's: the `response` object and its stream events; pure, no I/O.

`to_response` turns a whole `chat.completion` into a `response` (the text as a message item, each tool call
as a function_call item, usage as input/output/total tokens); `ResponseStream` turns the relayed chat chunks
into the Responses events in order, each with its `sequence_number`, for server/sse.py's `ResponsesEncoder`;
`output_as_input` makes a stored response's output the next turn's input (previous_response_id).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from lifeline.protocol.responses import ResponsesRequest, new_id

# --- from chat --------------------------------------------------------------------------------------


def usage_of(usage: dict[str, Any] | None) -> dict[str, Any]:
    """Chat usage as the Responses API words it."""
    usage = usage or {}
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    details = usage.get("prompt_tokens_details") or {}
    cached = int(details.get("cached_tokens") or 0)
    written = int(details.get("cache_write_tokens") or 0)
    reasoning = int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion,
    }


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def refusal_part(refusal: str) -> dict[str, Any]:
    return {"type": "refusal", "refusal": refusal}


def message_item(text: str, item_id: str, status: str = "completed", refusal: str = "") -> dict[str, Any]:
    """A message item: its text, then the model's refusal (chat's `message.refusal`) when there is one."""
    content = []
    if status != "in_progress":
        content = ([text_part(text)] if text or not refusal else []) + ([refusal_part(refusal)] if refusal else [])
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def function_call_item(
    call_id: str, name: str, arguments: str, item_id: str, status: str = "completed"
) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def _incomplete(finish_reason: Any) -> dict[str, Any] | None:
    if finish_reason == "length":
        return {"reason": "max_output_tokens"}
    if finish_reason == "content_filter":
        return {"reason": "content_filter"}
    return None


@dataclass(slots=True)
class Shell:
    """What every response object of one request shares."""

    id: str
    model: str
    created_at: int
    request: ResponsesRequest

    @classmethod
    def of(cls, request: ResponsesRequest, model: str) -> Shell:
        return cls(new_id("resp"), model, int(time.time()), request)

    def response(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None = None,
        *,
        incomplete: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        request = self.request
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": error,
            "incomplete_details": incomplete,
            "instructions": request.instructions,
            "model": self.model,
            "output": output,
            "previous_response_id": request.previous_response_id,
            "store": request.store,
            "metadata": request.metadata,
            "tools": request.tools,
            "usage": usage,
            "background": False,
            "reasoning": {"effort": None, "summary": None},
            "truncation": "disabled",
            **request.echo,
        }


def to_response(shell: Shell, completion: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
    """A whole chat completion as a `response` object: its text as a message item, then its tool calls as
    function_call items."""
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    text = message.get("content")
    text = text if isinstance(text, str) else ""
    refusal = message.get("refusal")
    refusal = refusal if isinstance(refusal, str) else ""
    incomplete = _incomplete(choice.get("finish_reason"))
    if text or refusal:
        # a text cut by max_output_tokens (or a filter) is an incomplete item, as the response is
        output.append(message_item(text, new_id("msg"), "incomplete" if incomplete else "completed", refusal))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        output.append(
            function_call_item(
                str(call.get("id") or new_id("call")),
                str(function.get("name") or ""),
                _arguments(function.get("arguments")),
                new_id("fc"),
            )
        )
    return shell.response("incomplete" if incomplete else "completed", output, usage_of(usage), incomplete=incomplete)


def _arguments(arguments: Any) -> str:
    if isinstance(arguments, str):
        return arguments
    return orjson.dumps(arguments or {}).decode()


def output_as_input(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A response's output items as input items of the next turn (previous_response_id)."""
    items: list[dict[str, Any]] = []
    for item in output:
        if item.get("type") == "message":
            text = "".join(p.get("text") or "" for p in item.get("content") or [])
            items.append({"type": "message", "role": "assistant", "content": text})
        elif item.get("type") == "function_call":
            items.append(
                {
                    "type": "function_call",
                    "call_id": item["call_id"],
                    "name": item["name"],
                    "arguments": item["arguments"],
                }
            )
    return items


# --- the stream -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Open:
    """An output item under way in the stream."""

    index: int
    item_id: str
    kind: str
    text: str = ""
    call_id: str = ""
    name: str = ""
    refusal: str = ""
    #: a message's content parts in the order they opened ("output_text", "refusal")
    parts: list[str] = field(default_factory=list)

    def content(self) -> list[dict[str, Any]]:
        return [text_part(self.text) if part == "output_text" else refusal_part(self.refusal) for part in self.parts]


class ResponseStream:
    """Chat stream chunks in, Responses stream events out, each with its `sequence_number`. The items open as
    their content arrives (text as a message, each tool call as a function_call) and close before the next
    one opens or at the end; `completed` sends response.completed (or .incomplete, after a cut-off answer),
    `failed` response.failed with what was produced so far."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell
        self.sequence = 0
        self.output: list[dict[str, Any]] = []
        self.open: _Open | None = None
        self.calls: dict[int, _Open] = {}
        self.finish_reason: Any = None
        self.final: dict[str, Any] | None = None
        self._closing: list[dict[str, Any]] = []
        self.continuations: list[dict[str, Any]] = []

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def start(self) -> list[dict[str, Any]]:
        response = self.shell.response("in_progress", [])
        return [
            self._event("response.created", response=response),
            self._event("response.in_progress", response=response),
        ]

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                events += self._text(text, "output_text")
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                events += self._text(refusal, "refusal")
            for call in delta.get("tool_calls") or []:
                if isinstance(call, dict):
                    events += self._call(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def _text(self, text: str, part: str) -> list[dict[str, Any]]:
        """A piece of the message's text (`output_text`) or of its refusal (`refusal`), each its own part."""
        events: list[dict[str, Any]] = []
        if self.open is None or self.open.kind != "message":
            events += self._close()
            self.open = _Open(len(self.output), new_id("msg"), "message")
            self.output.append(message_item("", self.open.item_id, "in_progress"))
            events.append(self._event("response.output_item.added", output_index=self.open.index, item=self.output[-1]))
        item = self.open
        if part not in item.parts:
            item.parts.append(part)
            empty = text_part("") if part == "output_text" else refusal_part("")
            events.append(self._part("response.content_part.added", item.parts.index(part), empty))
        where = {"item_id": item.item_id, "output_index": item.index, "content_index": item.parts.index(part)}
        if part == "refusal":
            item.refusal += text
            events.append(self._event("response.refusal.delta", **where, delta=text))
        else:
            item.text += text
            events.append(self._event("response.output_text.delta", **where, delta=text, logprobs=[]))
        return events

    def _part(self, kind: str, content_index: int, part: dict[str, Any]) -> dict[str, Any]:
        assert self.open is not None
        return self._event(
            kind, item_id=self.open.item_id, output_index=self.open.index, content_index=content_index, part=part
        )

    def _call_index(self, call: dict[str, Any]) -> int:
        """Which call a tool-call delta belongs to. Some upstreams (Gemini's OpenAI-compatible endpoint) leave
        out `index`, or give every call index 0: a new call id then starts a new call, and a delta without an
        id goes on with the latest call."""
        index = call.get("index")
        call_id = call.get("id")
        latest = max(self.calls, default=None)
        if isinstance(index, int) and not isinstance(index, bool):
            known = self.calls.get(index)
            if known is None or not call_id or call_id == known.call_id:
                return index
        elif not call_id or latest is None:
            return 0 if latest is None else latest
        for i, known in self.calls.items():
            if known.call_id == call_id:
                return i
        return 0 if latest is None else latest + 1

    def _call(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        index = self._call_index(call)
        function = call.get("function") or {}
        current = self.calls.get(index)
        if current is None:
            events += self._close()
            current = _Open(len(self.output), new_id("fc"), "function_call")
            current.call_id = str(call.get("id") or new_id("call"))
            current.name = str(function.get("name") or "")
            self.calls[index] = current
            self.open = current
            item = function_call_item(current.call_id, current.name, "", current.item_id, "in_progress")
            self.output.append(item)
            events.append(self._event("response.output_item.added", output_index=current.index, item=item))
        elif function.get("name"):
            current.name += str(function["name"])
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            current.text += arguments
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=current.item_id,
                    output_index=current.index,
                    delta=arguments,
                )
            )
        return events

    def _close(self, status: str = "completed") -> list[dict[str, Any]]:
        """Close the item under way, if any (`incomplete`: the answer was cut while it was being written)."""
        item, self.open = self.open, None
        if item is None:
            return []
        if item.kind == "message":
            done = message_item("", item.item_id, status) | {"content": item.content()}
            self.output[item.index] = done
            events = []
            for content_index, part in enumerate(done["content"]):
                where = {"item_id": item.item_id, "output_index": item.index, "content_index": content_index}
                if part["type"] == "refusal":
                    events.append(self._event("response.refusal.done", **where, refusal=item.refusal))
                else:
                    events.append(self._event("response.output_text.done", **where, text=item.text, logprobs=[]))
                events.append(self._event("response.content_part.done", **where, part=part))
            return [*events, self._event("response.output_item.done", output_index=item.index, item=done)]
        done = function_call_item(item.call_id, item.name, item.text, item.item_id)
        self.output[item.index] = done
        return [
            self._event(
                "response.function_call_arguments.done",
                item_id=item.item_id,
                output_index=item.index,
                name=item.name,
                arguments=item.text,
            ),
            self._event("response.output_item.done", output_index=item.index, item=done),
        ]

    def continued(self, note: dict[str, Any]) -> None:
        """The answer went on on another target (routing's `Continued`, as a dict): said in the final response."""
        self.continuations.append(note)

    def finalize(self, usage: dict[str, Any], usage_estimated: bool = False) -> dict[str, Any]:
        """The final response object of a complete answer (the open item closed); idempotent, so that it can
        be stored before response.completed goes out. Lifeline's own notes go under `x_lifeline`."""
        if self.final is None:
            incomplete = _incomplete(self.finish_reason)
            status = "incomplete" if incomplete else "completed"
            self._closing = self._close(status)
            self.final = self.shell.response(status, list(self.output), usage_of(usage), incomplete=incomplete)
            notes: dict[str, Any] = {"usage_estimated": True} if usage_estimated else {}
            if self.continuations:
                notes["continued"] = self.continuations
            if notes:
                self.final["x_lifeline"] = notes
        return self.final

    def completed(self, usage: dict[str, Any], usage_estimated: bool = False) -> list[dict[str, Any]]:
        """The end of a complete answer: the open item closed, then response.completed (or .incomplete after
        an answer cut off by its token limit)."""
        final = self.finalize(usage, usage_estimated)
        events, self._closing = self._closing, []
        kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        return [*events, self._event(kind, response=final)]

    def failed(self, message: str) -> list[dict[str, Any]]:
        """The answer broke and could not be continued: response.failed, never a completed truncated answer."""
        output = [dict(item, status="incomplete") for item in self.output]
        if self.open is not None and self.open.kind == "message":
            output[self.open.index]["content"] = self.open.content()
        error = {"code": "server_error", "message": message}
        return [self._event("response.failed", response=self.shell.response("failed", output, error=error))]
