"""The fault wall's Gemini face: a real HTTP server on loopback that speaks Google's Gemini API.

It is the fault wall (same server, attempt log and behaviour specs chosen through the model name) answering
``POST /v1beta/models/{model}:generateContent`` and ``:streamGenerateContent?alt=sse`` with
GenerateContentResponses, and errors in Google's envelope (``{"error": {code, message, status, details}}``,
RetryInfo included for 429). The model is part of the URL path, so a behaviour spec arrives percent-encoded.
Requests are checked the way Gemini checks them (known fields only, roles user/model, a functionResponse
only after a model turn calling that function), so a translation mistake meets Gemini's own 400.

Behaviours: ok, status?code=N[&status=RPC_STATUS][&reason=ERRORINFO_REASON], rate_limit?retry_after=S,
fail_once?code=N&times=K, cut?after=N, tool_call, context_length?limit=L, content_filter (the prompt is
blocked). With tool_call, a request whose last turn answers function calls is answered with text.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any, Self
from urllib.parse import parse_qs, unquote

import orjson

from lifeline.testing.behaviours import Behaviour, parse_behaviour, stream_piece, wall_text
from lifeline.testing.payloads import DEFAULT_TOOL, TOOL_ARGUMENTS
from lifeline.testing.wall import Attempt, FaultWall
from lifeline.testing.wire import CHUNK_END, Request, chunk, stream_head
from lifeline.testing.wire import json_object as _json_object
from lifeline.testing.wire import send as _send
from lifeline.testing.wire import send_json as _send_json

API_PREFIX = "/v1beta/"
TOOL_CALL_TOKENS = 8
CUT_DEFAULT = 3

#: status → (RPC status, message) as Gemini sends them
STATUS_ERRORS: dict[int, tuple[str, str]] = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "Request had invalid authentication credentials."),
    403: ("PERMISSION_DENIED", "Method doesn't allow unregistered callers."),
    404: ("NOT_FOUND", "models/{model} is not found for API version v1beta."),
    429: ("RESOURCE_EXHAUSTED", "You exceeded your current quota, please check your plan and billing details."),
    500: ("INTERNAL", "An internal error has occurred."),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}
REQUEST_FIELDS = frozenset(
    {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "safetySettings", "cachedContent"}
)

CONFIG_FIELDS = frozenset(
    {
        "stopSequences",
        "responseMimeType",
        "responseSchema",
        "responseJsonSchema",
        "candidateCount",
        "maxOutputTokens",
        "temperature",
        "topP",
        "topK",
        "seed",
        "presencePenalty",
        "frequencyPenalty",
        "responseLogprobs",
        "logprobs",
        "thinkingConfig",
        "responseModalities",
    }
)
PART_FIELDS = frozenset({"text", "inlineData", "fileData", "functionCall", "functionResponse"})


class GeminiFace(FaultWall):
    """``with GeminiFace().running() as face:`` — point a target's base_url at ``face.url``."""

    @property
    def url(self) -> str:
        # The base URL a Gemini target is configured with includes the API version, as Google's does.
        return f"{super().url}/v1beta"

    @property
    def base_url(self) -> str:
        return self.url

    @contextlib.contextmanager
    def running(self, timeout: float = 10.0) -> Iterator[Self]:
        with super().running(timeout):
            yield self

    async def _dispatch(self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if request.path.startswith("/_wall/"):
            return await super()._dispatch(request, reader, writer)
        keep = request.keep_alive
        # Split off the method before decoding: the model name may hold an encoded ':' or '?'.
        resource, _, method = request.path.removeprefix(API_PREFIX).rpartition(":")
        resource = unquote(resource)
        if (
            request.method != "POST"
            or not request.path.startswith(API_PREFIX)
            or not resource.startswith("models/")
            or method not in ("generateContent", "streamGenerateContent")
        ):
            return await _send_error(writer, 404, "NOT_FOUND", f"Not found: {request.path}", keep)
        model = resource.removeprefix("models/")
        stream = method == "streamGenerateContent"
        sse = parse_qs(request.query).get("alt") == ["sse"]
        body = _json_object(request.body)
        behaviour = parse_behaviour(model)
        error = _check(body, request.headers) or self._error_for_gemini(behaviour, model, body or {})
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
                outcome=f"status:{error.status}" if error else behaviour.name,
            )
        )
        if error is not None:
            return await _send_json(writer, error.status, error.body(), keep, error.headers)
        assert body is not None
        reply = _Reply(self, behaviour, model, body)
        if behaviour.name == "content_filter":
            blocked = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": reply.usage(0)}
            return await _send_json(writer, 200, blocked, keep)
        if not stream:
            if behaviour.name == "cut":
                return False  # the connection closes without a single response byte
            return await _send_json(writer, 200, reply.whole(), keep)
        if not sse:
            # Without alt=sse Gemini streams one JSON array; sent here in one piece, which is still valid.
            return await _send_json(writer, 200, list(reply.pieces()), keep)
        return await _stream(writer, behaviour, reply, keep)

    def _error_for_gemini(self, behaviour: Behaviour, model: str, body: dict[str, Any]) -> _Error | None:
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
                code = behaviour.get_int("code", 503)
        elif name == "context_length":
            limit = behaviour.get_int("limit", 1_048_576)
            tokens = max(_prompt_words(body), limit + 1)
            message = f"The input token count ({tokens}) exceeds the maximum number of tokens allowed ({limit})."
            return _Error(400, "INVALID_ARGUMENT", message)
        if code is None:
            return None
        rpc, message = STATUS_ERRORS.get(code, ("INTERNAL" if code >= 500 else "INVALID_ARGUMENT", "Error."))
        error = _Error(code, behaviour.get_str("status", rpc), message.replace("{model}", model))
        if behaviour.has("reason"):
            error.details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": behaviour.get_str("reason", ""),
                    "domain": "googleapis.com",
                }
            )
        if code == 429 and behaviour.has("retry_after"):
            # Gemini says when to come back in the body (RetryInfo), not in a Retry-After header.
            delay = f"{behaviour.get_str('retry_after', '1')}s"
            error.details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay})
        return error


class _Error:
    def __init__(self, status: int, rpc: str, message: str) -> None:
        self.status = status
        self.rpc = rpc
        self.message = message
        self.details: list[dict[str, Any]] = []
        self.headers: list[tuple[str, str]] = []

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.status, "message": self.message, "status": self.rpc}
        if self.details:
            error["details"] = self.details
        return {"error": error}


class _Reply:
    """Everything fixed about one answer, so the whole response and every streamed piece agree."""

    def __init__(self, face: GeminiFace, behaviour: Behaviour, model: str, body: dict[str, Any]) -> None:
        self.id = f"wall-{next(face._ids)}"
        self.model = behaviour.get_opt_str("served_model") or model
        self.prompt_tokens = _prompt_words(body)
        self.tool = behaviour.name == "tool_call" and not _answers_functions(body)
        self.tool_name = _tool_name(body)
        self.tokens, self.finish = behaviour.tokens, "STOP"
        config = body.get("generationConfig")
        limit = config.get("maxOutputTokens") if isinstance(config, dict) else None
        if self.tool:
            self.tokens = TOOL_CALL_TOKENS
        elif isinstance(limit, int) and limit < self.tokens:
            self.tokens, self.finish = limit, "MAX_TOKENS"

    def usage(self, output: int) -> dict[str, int]:
        return {
            "promptTokenCount": self.prompt_tokens,
            "candidatesTokenCount": output,
            "totalTokenCount": self.prompt_tokens + output,
        }

    def response(self, parts: list[dict[str, Any]], finish: str | None, output: int | None) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        response: dict[str, Any] = {"candidates": [candidate]}
        if output is not None:
            response["usageMetadata"] = self.usage(output)
        response["modelVersion"] = self.model
        response["responseId"] = self.id
        return response

    def whole(self) -> dict[str, Any]:
        if self.tool:
            return self.response([self.call_part()], "STOP", self.tokens)
        return self.response([{"text": wall_text(self.tokens)}], self.finish, self.tokens)

    def call_part(self) -> dict[str, Any]:
        return {"functionCall": {"name": self.tool_name, "args": orjson.loads(TOOL_ARGUMENTS)}}

    def pieces(self) -> Iterator[dict[str, Any]]:
        """The streamed responses: one text piece each, the last one finishing and counting usage."""
        if self.tool:
            yield self.response([self.call_part()], "STOP", self.tokens)
            return
        for i in range(self.tokens):
            last = i == self.tokens - 1
            yield self.response(
                [{"text": stream_piece(i)}], self.finish if last else None, self.tokens if last else None
            )
        if self.tokens == 0:
            yield self.response([{"text": ""}], self.finish, 0)


async def _stream(writer: asyncio.StreamWriter, behaviour: Behaviour, reply: _Reply, keep: bool) -> bool:
    strike = behaviour.get_int("after", CUT_DEFAULT) if behaviour.name == "cut" else -1
    writer.write(stream_head(keep_alive=keep))
    for i, piece in enumerate(reply.pieces()):
        if i == strike:
            return False  # closing now leaves the chunked body without its terminator
        # Google separates its events with CRLF pairs.
        await _send(writer, chunk(b"data: " + orjson.dumps(piece) + b"\r\n\r\n"))
    await _send(writer, CHUNK_END)
    return keep


# --- checking a request the way Gemini does -------------------------------------------------------


def _check(body: dict[str, Any] | None, headers: dict[str, str]) -> _Error | None:
    def bad(message: str) -> _Error:
        return _Error(400, "INVALID_ARGUMENT", message)

    if not headers.get("x-goog-api-key"):
        return _Error(
            403,
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without "
            "established identity). Please use API Key or other form of API consumer identity to call "
            "this API.",
        )
    if body is None:
        return bad("Invalid JSON payload received.")
    unknown = sorted(set(body) - REQUEST_FIELDS)
    if unknown:
        return bad(f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.')
    config = body.get("generationConfig") or {}
    unknown = sorted(set(config) - CONFIG_FIELDS) if isinstance(config, dict) else ["generationConfig"]
    if unknown:
        return bad(f"Invalid JSON payload received. Unknown name \"{unknown[0]}\" at 'generation_config'.")
    if "responseSchema" in config and "responseJsonSchema" in config:
        return bad("responseSchema and responseJsonSchema cannot both be set.")
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return bad("* GenerateContentRequest.contents: contents is not specified")
    system = body.get("systemInstruction")
    if system is not None and not _parts_ok(system.get("parts") if isinstance(system, dict) else None):
        return bad("* GenerateContentRequest.system_instruction: parts must hold text")
    called: set[str] = set()
    for i, content in enumerate(contents):
        role = content.get("role", "user") if isinstance(content, dict) else None
        parts = content.get("parts") if isinstance(content, dict) else None
        if role not in ("user", "model") or not _parts_ok(parts):
            return bad(f"* GenerateContentRequest.contents[{i}]: a role of user or model and non-empty parts")
        assert isinstance(parts, list)
        for part in parts:
            response = part.get("functionResponse")
            if isinstance(response, dict) and (
                response.get("name") not in called or not isinstance(response.get("response"), dict)
            ):
                return bad(
                    f"* GenerateContentRequest.contents[{i}]: a function response must answer a function call "
                    "of the turn before and carry a response object"
                )
        called = {str(p["functionCall"].get("name")) for p in parts if isinstance(p.get("functionCall"), dict)}
    for tool in body.get("tools") or ():
        for declaration in tool.get("functionDeclarations") or () if isinstance(tool, dict) else ():
            if "parameters" in declaration and "parametersJsonSchema" in declaration:
                return bad("parameters and parametersJsonSchema cannot both be set.")
    return None


def _parts_ok(parts: Any) -> bool:
    if not isinstance(parts, list) or not parts:
        return False
    for part in parts:
        if not isinstance(part, dict):
            return False
        data = [k for k in part if k in PART_FIELDS]
        if len(data) != 1 or set(part) - PART_FIELDS - {"thought", "thoughtSignature"}:
            return False
    return True


def _texts(parts: Any) -> list[str]:
    return [str(p["text"]) for p in parts or () if isinstance(p, dict) and isinstance(p.get("text"), str)]


def _prompt_words(body: dict[str, Any]) -> int:
    """Whitespace-separated words of the system instruction and text parts: the wall's tokens."""
    system = body.get("systemInstruction")
    texts = _texts(system.get("parts")) if isinstance(system, dict) else []
    for content in body.get("contents") or ():
        if isinstance(content, dict):
            texts.extend(_texts(content.get("parts")))
    return sum(len(t.split()) for t in texts)


def _answers_functions(body: dict[str, Any]) -> bool:
    contents = body.get("contents") or []
    last = contents[-1] if contents and isinstance(contents[-1], dict) else {}
    return any(isinstance(p, dict) and "functionResponse" in p for p in last.get("parts") or ())


def _tool_name(body: dict[str, Any]) -> str:
    for tool in body.get("tools") or ():
        for declaration in tool.get("functionDeclarations") or () if isinstance(tool, dict) else ():
            if isinstance(declaration, dict) and isinstance(declaration.get("name"), str):
                return str(declaration["name"])
    return DEFAULT_TOOL


# --- bytes on the wire ----------------------------------------------------------------------------


async def _send_error(writer: asyncio.StreamWriter, status: int, rpc: str, message: str, keep: bool) -> bool:
    return await _send_json(writer, status, _Error(status, rpc, message).body(), keep)
