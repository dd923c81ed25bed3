"""A native Responses target's answer on its way to the client; pure, no I/O.

The upstream's `response` object and its stream events pass through as it sent them, with what the gateway
owns put back: the response's `id` (the one Lifeline stores it under, so that GET /v1/responses/{id} and
previous_response_id find it whichever target answered), `previous_response_id` and `store` as the client
sent them (the upstream was sent neither). `NativeStream` also follows the output items as they stream, so
that a stream that breaks after content ends with a `response.failed` carrying what was produced — never a
`response.completed` for a truncated answer — numbered after the upstream's last event.
"""

from __future__ import annotations

from typing import Any

from lifeline.protocol.response_objects import Shell

#: the stream events that carry the whole response object
_WITH_RESPONSE = frozenset(
    {
        "response.created",
        "response.in_progress",
        "response.queued",
        "response.completed",
        "response.incomplete",
        "response.failed",
    }
)


def native_response(response: dict[str, Any], shell: Shell) -> dict[str, Any]:
    """The upstream's response object as the client sees it: under Lifeline's id, with the client's own
    previous_response_id and store."""
    request = shell.request
    return {**response, "id": shell.id, "previous_response_id": request.previous_response_id, "store": request.store}


class NativeStream:
    """The events of a native Responses stream, passed through (`feed`); `final` is the whole response once
    response.completed (or .incomplete) went by; `failed` ends a stream that broke."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell
        self.sequence = 0
        self.snapshot: dict[str, Any] = shell.response("in_progress", [])
        self.final: dict[str, Any] | None = None
        self.items: dict[int, dict[str, Any]] = {}
        self.texts: dict[int, str] = {}

    def feed(self, event: dict[str, Any]) -> dict[str, Any]:
        """The event for the client (rewritten when it carries the response object)."""
        kind = event.get("type")
        number = event.get("sequence_number")
        if isinstance(number, int):
            self.sequence = number + 1
        index = event.get("output_index")
        if kind in ("response.output_item.added", "response.output_item.done") and isinstance(index, int):
            if isinstance(event.get("item"), dict):
                self.items[index] = event["item"]
        elif kind == "response.output_text.delta" and isinstance(index, int):
            self.texts[index] = self.texts.get(index, "") + str(event.get("delta") or "")
        if kind in _WITH_RESPONSE and isinstance(event.get("response"), dict):
            response = native_response(event["response"], self.shell)
            self.snapshot = response
            if kind in ("response.completed", "response.incomplete"):
                self.final = response
            return {**event, "response": response}
        return event

    def failed(self, message: str) -> list[dict[str, Any]]:
        """The answer broke after content reached the client and could not be continued: response.failed,
        with the output so far (items not finished marked incomplete, a message's text as far as it came)."""
        output = []
        for index in sorted(self.items):
            item = dict(self.items[index])
            if item.get("status") != "completed":
                item["status"] = "incomplete"
                if item.get("type") == "message" and index in self.texts:
                    item["content"] = [
                        {"type": "output_text", "text": self.texts[index], "annotations": [], "logprobs": []}
                    ]
            output.append(item)
        response = {
            **self.snapshot,
            "status": "failed",
            "error": {"code": "server_error", "message": message},
            "output": output,
        }
        event = {"type": "response.failed", "sequence_number": self.sequence, "response": response}
        self.sequence += 1
        return [event]
