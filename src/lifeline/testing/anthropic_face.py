"""The fault wall's Anthropic face: a real HTTP server on loopback that speaks Anthropic's Messages API.

It is the fault wall (same server, attempt log and behaviour specs chosen through ``model``) answering
``POST /v1/messages`` (and ``/v1/messages/count_tokens``, the prompt's words) in Anthropic's formats: a
message object, or the event stream (message_start, content_block_*, ping, message_delta, message_stop) with
``event:`` names, and errors in Anthropic's envelope, 529 overloaded_error included. Requests are checked
the way Anthropic checks them (max_tokens, alternating turns opening with the user, every tool_use answered
by a tool_result in the next turn), so a translation mistake meets the 400 Anthropic itself would send.

Behaviours: ok, status?code=N, rate_limit?retry_after=S, fail_once?code=N&times=K, cut?after=N,
error_event?after=N&type=T, tool_call, context_length?limit=L. With tool_call, a request whose last turn
carries tool results is answered with text, as a model would once it has what it asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any, Self

import orjson

from lifeline.testing.behaviours import Behaviour, parse_behaviour, stream_piece, wall_text
from lifeline.testing.payloads import DEFAULT_TOOL, TOOL_ARGUMENT_PIECES, TOOL_ARGUMENTS
from lifeline.testing.wall import Attempt, FaultWall
from lifeline.testing.wire import CHUNK_END, Request, chunk, stream_head
from lifeline.testing.wire import json_object as _json_object
from lifeline.testing.wire import send as _send
from lifeline.testing.wire import send_json as _send_json

MESSAGES_PATH = "/v1/messages"
COUNT_PATH = "/v1/messages/count_tokens"
TOOL_CALL_TOKENS = 8
AFTER_DEFAULTS = {"cut": 3, "error_event": 2}

#: status → (error type, message) as Anthropic sends them
STATUS_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "The request was invalid."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "model: {model}"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out"),
    529: ("overloaded_error", "Overloaded"),
}
BLOCK_TYPES = frozenset({"text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking"})


class AnthropicFace(FaultWall):
    """``with AnthropicFace().running() as face:`` — point a target's base_url at ``face.url``."""

    @property
    def base_url(self) -> str:
        # Anthropic's base URL is the server root: clients add /v1/messages themselves.
        return self.url

    @contextlib.contextmanager
    def running(self, timeout: float = 10.0) -> Iterator[Self]:
        with super().running(timeout):
            yield self

    async def _dispatch(self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if request.path.startswith("/_wall/"):
            return await super()._dispatch(request, reader, writer)
        keep = request.keep_alive
        # count_tokens takes a Messages request without max_tokens: it answers the prompt's words
        counting = (request.method, request.path) == ("POST", COUNT_PATH)
        if (request.method, request.path) != ("POST", MESSAGES_PATH) and not counting:
            return await _send_error(writer, 404, "not_found_error", f"Not found: {request.path}", keep)
        body = _json_object(request.body)
        if counting:
            body = body or {}
        model = body.get("model") if body and isinstance(body.get("model"), str) else None
        behaviour = parse_behaviour(model)
        stream = bool(body and body.get("stream") is True)
        problem = None if counting else _check(body, request.headers)
        error = problem or self._error_for_anthropic(behaviour, model or "", body or {})
        outcome = f"status:{error[0]}" if error else behaviour.name
        self._record(
            Attempt(
                at=request.received_at,
                wall_time=request.received_wall_time,
                method=request.method,
                path=request.path,
                model=model,
                behaviour=behaviour.name,
                stream=stream,
                body=body,
                headers=dict(request.headers),
                outcome=outcome,
            )
        )
        if error is not None:
            status, etype, message, headers = error
            return await _send_error(writer, status, etype, message, keep, headers)
        assert body is not None
        if counting:
            return await _send_json(writer, 200, {"input_tokens": _prompt_words(body)}, keep)
        reply = _Reply(self, behaviour, model or "claude-wall", body)
        if stream:
            return await _stream(writer, behaviour, reply, keep)
        if behaviour.name == "cut":
            return False  # the connection closes without a single response byte
        return await _send_json(writer, 200, reply.message(), keep)

    def _error_for_anthropic(self, behaviour: Behaviour, model: str, body: dict[str, Any]) -> _Error | None:
        name = behaviour.name
        code: int | None = None
        if name == "status":
            code = behaviour.get_int("code", 500)
        elif name == "rate_limit":
            code = 429
        elif name == "fail_once":
            with self._lock:
                seen = self._failures.get(model, 0)
                self._failures[model] = seen + 1
            if seen < behaviour.get_int("times", 1):
                code = behaviour.get_int("code", 529)
        elif name == "context_length":
            limit = behaviour.get_int("limit", 200_000)
            tokens = max(_prompt_words(body), limit + 1)
            return 400, "invalid_request_error", f"prompt is too long: {tokens} tokens > {limit} maximum", []
        if code is None:
            return None
        etype, message = STATUS_ERRORS.get(code, ("api_error" if code >= 500 else "invalid_request_error", "Error"))
        headers = []
        if behaviour.has("retry_after"):
            headers.append(("retry-after", behaviour.get_str("retry_after", "1")))
        return code, behaviour.get_str("type", etype), message.replace("{model}", model), headers


# status, error type, message, extra headers
_Error = tuple[int, str, str, list[tuple[str, str]]]


class _Reply:
    """Everything fixed about one answer, so the message and every event agree."""

    def __init__(self, face: AnthropicFace, behaviour: Behaviour, model: str, body: dict[str, Any]) -> None:
        number = next(face._ids)
        self.id = f"msg_wall_{number}"
        self.tool_id = f"toolu_wall_{number}"
        self.model = behaviour.get_opt_str("served_model") or model
        self.prompt_tokens = _prompt_words(body)
        self.tool = behaviour.name == "tool_call" and not _answers_tools(body)
        self.tool_name = _tool_name(body)
        self.tokens, self.stop_reason = behaviour.tokens, "end_turn"
        if self.tool:
            self.tokens, self.stop_reason = TOOL_CALL_TOKENS, "tool_use"
        elif isinstance(body.get("max_tokens"), int) and body["max_tokens"] < self.tokens:
            self.tokens, self.stop_reason = body["max_tokens"], "max_tokens"
        # A closing assistant turn is a prefill: Anthropic continues it rather than starting again.
        self.first = min(len(_prefill(body).split()), self.tokens) if not self.tool else 0

    def usage(self, output: int) -> dict[str, int]:
        return {
            "input_tokens": self.prompt_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output,
        }

    def message(self) -> dict[str, Any]:
        if self.tool:
            input_ = orjson.loads(TOOL_ARGUMENTS)
            content = [{"type": "tool_use", "id": self.tool_id, "name": self.tool_name, "input": input_}]
        else:
            content = [{"type": "text", "text": wall_text(self.tokens)[len(wall_text(self.first)) :]}]
        output = self.tokens - self.first
        return {**self.start(), "content": content, "stop_reason": self.stop_reason, "usage": self.usage(output)}

    def start(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": self.usage(1),
        }


async def _stream(writer: asyncio.StreamWriter, behaviour: Behaviour, reply: _Reply, keep: bool) -> bool:
    name = behaviour.name
    strike = behaviour.get_int("after", AFTER_DEFAULTS[name]) if name in AFTER_DEFAULTS else -1
    writer.write(stream_head(keep_alive=keep))
    await _event(writer, "message_start", {"type": "message_start", "message": reply.start()})
    if reply.tool:
        block = {"type": "tool_use", "id": reply.tool_id, "name": reply.tool_name, "input": {}}
        pieces = [{"type": "input_json_delta", "partial_json": p} for p in ("", *TOOL_ARGUMENT_PIECES)]
    else:
        block = {"type": "text", "text": ""}
        pieces = [{"type": "text_delta", "text": stream_piece(i)} for i in range(reply.first, reply.tokens)]
    await _event(writer, "content_block_start", {"type": "content_block_start", "index": 0, "content_block": block})
    await _event(writer, "ping", {"type": "ping"})
    for i, delta in enumerate(pieces):
        if i == strike:
            if name == "cut":
                return False  # closing now leaves the chunked body without its terminator
            error_type = behaviour.get_str("type", "overloaded_error")
            message = STATUS_ERRORS.get(529, ("", "Overloaded"))[1] if error_type == "overloaded_error" else "Error"
            await _event(writer, "error", {"type": "error", "error": {"type": error_type, "message": message}})
            await _send(writer, CHUNK_END)
            return keep
        await _event(writer, "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
    await _event(writer, "content_block_stop", {"type": "content_block_stop", "index": 0})
    end = {"stop_reason": reply.stop_reason, "stop_sequence": None}
    await _event(
        writer,
        "message_delta",
        {"type": "message_delta", "delta": end, "usage": {"output_tokens": reply.tokens - reply.first}},
    )
    await _event(writer, "message_stop", {"type": "message_stop"})
    await _send(writer, CHUNK_END)
    return keep


# --- checking a request the way Anthropic does ------------------------------------------------------


def _check(body: dict[str, Any] | None, headers: dict[str, str]) -> _Error | None:
    def bad(message: str) -> _Error:
        return 400, "invalid_request_error", message, []

    # Anthropic takes the key as x-api-key (what Lifeline sends) or as a bearer token (newer SDKs).
    if not headers.get("x-api-key") and not headers.get("authorization", "").startswith("Bearer "):
        return 401, "authentication_error", "x-api-key header is required", []
    if not headers.get("anthropic-version"):
        return bad("anthropic-version: header is required")
    if body is None:
        return bad("There was an error parsing the body of your request")
    if not isinstance(body.get("model"), str):
        return bad("model: Field required")
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        return bad("max_tokens: Field required")
    temperature = body.get("temperature")
    if temperature is not None and not (isinstance(temperature, int | float) and 0 <= temperature <= 1):
        return bad("temperature: Input should be less than or equal to 1")
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        return bad("system: Input should be a valid string or list")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return bad("messages: at least one message is required")
    tool_names = {t.get("name") for t in body.get("tools") or () if isinstance(t, dict)}
    for tool in body.get("tools") or ():
        schema = tool.get("input_schema") if isinstance(tool, dict) else None
        if not isinstance(schema, dict) or schema.get("type") != "object":
            return bad("tools: each tool needs an input_schema of type object")
    pending: set[str] = set()
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role != ("user" if i % 2 == 0 else "assistant"):
            if i == 0:
                return bad('messages: first message must use the "user" role')
            return bad('messages: roles must alternate between "user" and "assistant"')
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list) or not blocks:
            return bad(f"messages.{i}: content must be a non-empty string or list")
        answered: set[str] = set()
        for block in blocks:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind not in BLOCK_TYPES:
                return bad(f"messages.{i}.content: unknown block type {kind!r}")
            if kind == "text" and not block.get("text"):
                return bad(f"messages.{i}: text content blocks must be non-empty")
            if kind == "tool_use":
                if role != "assistant" or not isinstance(block.get("input"), dict) or not block.get("id"):
                    return bad(f"messages.{i}: malformed tool_use block")
                if not tool_names:
                    return bad("Requests which include `tool_use` or `tool_result` blocks must define tools.")
                answered.add(block["id"])
            if kind == "tool_result":
                if block.get("tool_use_id") not in pending:
                    return bad(
                        f"messages.{i}: unexpected `tool_use_id` found in `tool_result` blocks: "
                        f"{block.get('tool_use_id')}. Each `tool_result` block must have a corresponding "
                        "`tool_use` block in the previous message."
                    )
                pending.discard(block["tool_use_id"])
        if role == "user" and pending:
            missing = ", ".join(sorted(pending))
            return bad(
                f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: {missing}"
            )
        pending = answered
    choice = body.get("tool_choice")
    if choice is not None and (
        not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none")
    ):
        return bad("tool_choice: Input tag does not match any of the expected tags")
    return None


def _prefill(body: dict[str, Any]) -> str:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return ""
    last = messages[-1]
    if last.get("role") != "assistant":
        return ""
    return "".join(b.get("text", "") for b in _blocks(last.get("content")) if b.get("type") == "text")


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content or () if isinstance(b, dict)]


def _prompt_words(body: dict[str, Any]) -> int:
    """Whitespace-separated words of the system prompt, text blocks and tool results: the wall's tokens."""
    total = 0
    system = body.get("system")
    for block in _blocks(system) if system else ():
        total += len(str(block.get("text") or "").split())
    for message in body.get("messages") or ():
        for block in _blocks(message.get("content") if isinstance(message, dict) else None):
            if block.get("type") == "text":
                total += len(str(block.get("text") or "").split())
            elif block.get("type") == "tool_result":
                total += sum(len(str(b.get("text") or "").split()) for b in _blocks(block.get("content")))
    return total


def _answers_tools(body: dict[str, Any]) -> bool:
    messages = body.get("messages") or []
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    return any(b.get("type") == "tool_result" for b in _blocks(last.get("content")))


def _tool_name(body: dict[str, Any]) -> str:
    tools = body.get("tools")
    if isinstance(tools, list) and tools and isinstance(tools[0], dict) and isinstance(tools[0].get("name"), str):
        return str(tools[0]["name"])
    return DEFAULT_TOOL


# --- bytes on the wire ----------------------------------------------------------------------------


async def _event(writer: asyncio.StreamWriter, name: str, payload: dict[str, Any]) -> None:
    # Anthropic names every event; its SDK dispatches on the name, not on the payload's type.
    await _send(writer, chunk(b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"))


async def _send_error(
    writer: asyncio.StreamWriter,
    status: int,
    etype: str,
    message: str,
    keep: bool,
    headers: list[tuple[str, str]] | None = None,
) -> bool:
    body = {"type": "error", "error": {"type": etype, "message": message}, "request_id": "req_wall"}
    return await _send_json(writer, status, body, keep, headers)
