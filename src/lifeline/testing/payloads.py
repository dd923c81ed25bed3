"""OpenAI-shaped JSON bodies the fault wall sends: completions, stream chunks and error envelopes.

The shapes follow OpenAI's wire format closely enough for the official SDK to parse them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lifeline.testing.behaviours import Behaviour, wall_text
from lifeline.testing.wire import reason

# status -> (type, code, message); "{model}" and "{limit}" are filled in when known.
_STATUS_DEFAULTS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", "invalid_request", "The request was invalid."),
    401: (
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided: sk-***. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
    ),
    402: (
        "insufficient_quota",
        "insufficient_quota",
        "You exceeded your current quota, please check your plan and billing details.",
    ),
    403: (
        "request_forbidden",
        "unsupported_country_region_territory",
        "Country, region, or territory not supported",
    ),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model `{model}` does not exist or you do not have access to it.",
    ),
    408: ("timeout", "timeout", "Request timed out."),
    409: (
        "invalid_request_error",
        "conflict",
        "The request conflicts with the current state of the resource.",
    ),
    413: ("invalid_request_error", "request_too_large", "Request too large."),
    422: ("invalid_request_error", "unprocessable_entity", "The request could not be processed."),
    429: (
        "rate_limit_exceeded",
        "rate_limit_exceeded",
        "Rate limit reached for {model}. Please try again later.",
    ),
    451: ("request_forbidden", "unavailable_for_legal_reasons", "Unavailable for legal reasons."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", "bad_gateway", "Bad gateway."),
    503: ("server_error", "service_unavailable", "The server is overloaded or not ready yet."),
    504: ("server_error", "gateway_timeout", "Gateway timeout."),
}

TOOL_ARGUMENT_PIECES: tuple[str, ...] = ('{"city": ', '"Paris"', "}")
TOOL_ARGUMENTS = "".join(TOOL_ARGUMENT_PIECES)
DEFAULT_TOOL = "get_weather"


@dataclass(frozen=True)
class ErrorReply:
    status: int
    envelope: dict[str, Any]
    headers: list[tuple[str, str]]


def envelope(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _retry_headers(behaviour: Behaviour) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    retry_after = behaviour.get_opt_str("retry_after")
    if retry_after is not None:
        headers.append(("Retry-After", retry_after))
    retry_after_ms = behaviour.get_opt_str("retry_after_ms")
    if retry_after_ms is not None:
        headers.append(("retry-after-ms", retry_after_ms))
    return headers


def status_error(status: int, behaviour: Behaviour, model: str | None) -> ErrorReply:
    """An error reply for ``status``, with OpenAI-like defaults that the behaviour params may override."""
    if not 400 <= status <= 599:
        status = 500
    default = _STATUS_DEFAULTS.get(status)
    if default is None:
        if status >= 500:
            default = ("server_error", None, _STATUS_DEFAULTS[500][2])
        else:
            default = ("invalid_request_error", None, reason(status) + ".")
    type_, code, message = default
    message = behaviour.get_str("message", message).replace("{model}", model or "unknown")
    body = envelope(
        message,
        behaviour.get_str("error_type", type_),
        behaviour.get_opt_str("param"),
        behaviour.get_str("error_code", code) if code else behaviour.get_opt_str("error_code"),
    )
    return ErrorReply(status, body, _retry_headers(behaviour))


def context_length_error(behaviour: Behaviour, prompt_tokens: int) -> ErrorReply:
    limit = behaviour.get_int("limit", 4096)
    requested = max(prompt_tokens, limit + 1)
    message = (
        f"This model's maximum context length is {limit} tokens. However, your messages resulted in "
        f"{requested} tokens. Please reduce the length of the messages."
    )
    return ErrorReply(400, envelope(message, "invalid_request_error", "messages", "context_length_exceeded"), [])


def content_filter_error() -> ErrorReply:
    message = "The response was filtered due to the prompt triggering content management policy."
    return ErrorReply(400, envelope(message, "invalid_request_error", "prompt", "content_filter"), [])


def bad_request_error(behaviour: Behaviour) -> ErrorReply:
    param = behaviour.get_str("param", "temperature")
    code = behaviour.get_str("error_code", "invalid_value")
    message = behaviour.get_str("message", f"Invalid value for '{param}'.")
    return ErrorReply(400, envelope(message, "invalid_request_error", param, code), [])


def tool_name(body: dict[str, Any]) -> str:
    tools = body.get("tools")
    if isinstance(tools, list) and tools and isinstance(tools[0], dict):
        function = tools[0].get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return str(function["name"])
    return DEFAULT_TOOL


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


@dataclass(frozen=True)
class Reply:
    """Everything fixed about one chat answer, so the body and every chunk agree."""

    id: str
    created: int
    model: str
    tokens: int
    finish_reason: str
    prompt_tokens: int
    include_usage: bool
    #: a continuation (prefill): the words of the answer already given, which are not repeated
    start: int = 0
    #: the answer starts at this wall word (a behaviour's `offset`): a different text
    offset: int = 0

    def usage(self) -> dict[str, int]:
        return usage(self.prompt_tokens, self.tokens - self.start)

    def completion(self, message: dict[str, Any], *, with_usage: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self.finish_reason,
                }
            ],
        }
        if with_usage:
            body["usage"] = self.usage()
        return body

    def text_message(self) -> dict[str, Any]:
        if self.start:
            rest = wall_text(self.tokens, self.offset)[len(wall_text(self.start, self.offset)) :]
            return {"role": "assistant", "content": rest, "refusal": None}
        return {"role": "assistant", "content": wall_text(self.tokens, self.offset), "refusal": None}

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if self.include_usage:
            # OpenAI marks every chunk before the usage chunk with an explicit null.
            body["usage"] = None
        return body

    def usage_chunk(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": self.usage(),
        }


def tool_call_message(call_id: str, name: str) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": TOOL_ARGUMENTS}}],
    }


def tool_call_deltas(call_id: str, name: str) -> list[dict[str, Any]]:
    """Deltas after the role chunk: the call header, then the arguments in pieces."""
    deltas: list[dict[str, Any]] = [
        {"tool_calls": [{"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}]}
    ]
    deltas.extend({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]} for piece in TOOL_ARGUMENT_PIECES)
    return deltas
