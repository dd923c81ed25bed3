"""Kind `gemini`: Google's Gemini API (`{base_url}/models/{model}:generateContent` and
`:streamGenerateContent?alt=sse`) behind the OpenAI face.

The client's chat-completions request becomes `contents` (roles user/model), `systemInstruction`, function
declarations and `generationConfig`; the answer's first candidate comes back as an OpenAI `chat.completion`
or a stream of `chat.completion.chunk` events. Gemini's error envelopes (`{"error": {code, message,
status, details}}`) become Lifeline errors in `gemini_error`, by HTTP status, RPC status and ErrorInfo
reason, and nowhere else. Pooling and timeouts work as in `openai_compat`.

Tool calls: Gemini's function calls often carry no id, so answers name them `call_<random>_<n>`, unique
across a conversation as other providers require after a failover. Thought signatures are not carried back
(a gateway keeps no state, and an id long enough to hold one is refused by OpenAI and Anthropic); Gemini 3,
which insists on one, gets Google's documented stand-in instead.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from lifeline.config.schema import GeminiTarget
from lifeline.errors import (
    ContentFiltered,
    ContextLengthExceeded,
    UpstreamCutOff,
    UpstreamError,
    UpstreamModelNotFound,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamSilent,
    UpstreamUnavailable,
)
from lifeline.providers.base import ChatCall, Chunk, Completion, inspect_chunk
from lifeline.providers.http import MAX_ERROR_BODY, MAX_RETRY_AFTER, error_object, retry_after_seconds, scrub
from lifeline.providers.sse import iter_sse_data

log = logging.getLogger("lifeline.providers.gemini")

JSON = dict[str, Any]

#: Google's documented stand-in for a thought signature the client cannot give back (a gateway keeps none,
#: and calls made by another target never had one): Gemini 3 rejects replayed function calls without any.
SIGNATURE_SKIP = "skip_thought_signature_validator"
#: Gemini, like Anthropic, needs a user turn; this stands in when the client sent only system prompts.
PLACEHOLDER_TURN = "."

FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}


class GeminiProvider:
    def __init__(self, name: str, config: GeminiTarget, transport: httpx.AsyncBaseTransport | None = None):
        self.name = name
        self.config = config
        self.model = config.model
        self.context_window = config.context_window
        self.supports_n = False
        self._timeouts = config.timeouts
        # `gemini-2.5-flash` means models/gemini-2.5-flash; `tunedModels/…` and `models/…` are taken as they are.
        # The name is quoted: a fault-wall behaviour such as `status?code=503` must survive as one path segment.
        resource = config.model if "/" in config.model else f"models/{config.model}"
        base = f"{config.base_url.rstrip('/')}/{quote(resource, safe='/')}"
        self._url = base + ":generateContent"
        self._stream_url = base + ":streamGenerateContent?alt=sse"
        self._signatures = needs_signatures(config.model)
        key = config.api_key.get_secret_value() if config.api_key else ""
        self._secrets = tuple(s for s in (key, *config.headers.values()) if len(s) >= 12)
        headers = {"content-type": "application/json", "accept": "application/json", **config.headers}
        if key:
            headers["x-goog-api-key"] = key
        self._headers = headers
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        limits = httpx.Limits(
            max_connections=self.config.max_connections,
            max_keepalive_connections=self.config.max_connections,
            keepalive_expiry=30.0,
        )
        # As in openai_compat: reads are bounded per phase with asyncio.timeout, httpx bounds only connecting.
        timeout = httpx.Timeout(connect=self._timeouts.connect, read=None, write=30.0, pool=self._timeouts.connect)
        self._client = httpx.AsyncClient(
            headers=self._headers, limits=limits, timeout=timeout, transport=self._transport, trust_env=False
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError(f"target {self.name} used before start()")
        return self._client

    # --- one attempt -----------------------------------------------------------------------------

    def _content(self, call: ChatCall) -> bytes:
        try:
            request = generate_request(call.body, signatures=self._signatures)
        except Untranslatable as exc:
            raise UpstreamRejected(str(exc), target=self.name, code="unsupported_value") from None
        return orjson.dumps(request)

    def _headers_for(self, call: ChatCall) -> dict[str, str]:
        return {"x-request-id": call.request_id}

    async def complete(self, call: ChatCall) -> Completion:
        content = self._content(call)
        limit = call.deadline.bound(self._timeouts.response)
        with self._boundary("response"):
            async with asyncio.timeout(limit):
                response = await self.client.post(self._url, content=content, headers=self._headers_for(call))
                if response.status_code >= 400:
                    await self._raise_for_status(response)
                raw = await response.aread()
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamUnavailable("the upstream's answer is not valid JSON", target=self.name) from None
        if not isinstance(data, dict):
            raise UpstreamUnavailable("the upstream's answer is not an object", target=self.name)
        if isinstance(data.get("error"), dict):
            raise self._error(None, data["error"], None)
        self._check_blocked(data)
        if not isinstance(data.get("candidates"), list) or not data["candidates"]:
            raise UpstreamUnavailable("the upstream's answer has no candidates", target=self.name)
        body = completion_from_response(data, self.model)
        return Completion(body=body, model=str(body["model"]), usage=body.get("usage"))

    async def stream(self, call: ChatCall) -> AsyncIterator[Chunk]:
        started = time.monotonic()
        request = self.client.build_request(
            "POST", self._stream_url, content=self._content(call), headers=self._headers_for(call)
        )
        with self._boundary("first_byte"):
            async with asyncio.timeout(call.deadline.bound(self._timeouts.first_byte)):
                response = await self.client.send(request, stream=True)
        try:
            if response.status_code >= 400:
                with self._boundary("first_byte"):
                    await self._raise_for_status(response)
            async for chunk in self._events(response, call, started):
                yield chunk
        finally:
            await response.aclose()

    async def _events(self, response: httpx.Response, call: ChatCall, started: float) -> AsyncIterator[Chunk]:
        events = iter_sse_data(response.aiter_raw())
        translator = StreamTranslator(self.model)
        seen_content = False
        while True:
            if seen_content:
                phase, limit = "idle", call.deadline.bound(self._timeouts.idle)
            else:
                phase = "ttft"
                limit = call.deadline.bound(self._timeouts.ttft - (time.monotonic() - started))
            try:
                with self._boundary(phase):
                    async with asyncio.timeout(limit):
                        data = await anext(events)
            except StopAsyncIteration:
                break
            except UpstreamError:
                if translator.finished:
                    break  # the answer was complete; the upstream just did not close properly
                raise
            try:
                event = orjson.loads(data)
            except orjson.JSONDecodeError:
                log.warning("skipped a malformed stream event from target %s", self.name)
                continue
            if not isinstance(event, dict):
                continue
            if isinstance(event.get("error"), dict):
                raise self._error(None, event["error"], None)
            self._check_blocked(event)
            for out in translator.feed(event):
                chunk = inspect_chunk(out, orjson.dumps(out))
                seen_content = seen_content or chunk.content or chunk.finish
                yield chunk
        # Gemini marks the end of an answer only with a finishReason; the connection closing is not enough.
        if not translator.finished:
            raise UpstreamUnavailable("the upstream closed the stream before the answer finished", target=self.name)
        for out in translator.close():
            yield inspect_chunk(out, orjson.dumps(out))

    def _check_blocked(self, data: JSON) -> None:
        feedback = data.get("promptFeedback")
        reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
        if reason and not data.get("candidates"):
            raise ContentFiltered(f"Gemini refused the prompt (blockReason {reason}).", target=self.name)

    async def _raise_for_status(self, response: httpx.Response) -> None:
        raw = b""
        try:
            async for piece in response.aiter_bytes():
                raw += piece
                if len(raw) > MAX_ERROR_BODY:
                    break
        except httpx.HTTPError:
            pass
        raise self._error(response.status_code, _error_body(raw), retry_after_seconds(response.headers))

    def _error(self, status: int | None, error: JSON, retry_after: float | None) -> UpstreamError:
        err = gemini_error(status, error, target=self.name, retry_after=retry_after)
        err.message = scrub(err.message, self._secrets)
        return err

    @contextmanager
    def _boundary(self, phase: str) -> Iterator[None]:
        """Convert transport failures and timeouts into Lifeline errors."""
        try:
            yield
        except TimeoutError:
            raise UpstreamSilent(
                f"target {self.name} sent nothing within the {phase} timeout", target=self.name
            ) from None
        except httpx.TimeoutException as exc:
            # httpx's own timeouts are only connect and pool: the target is unreachable, not silent.
            raise UpstreamUnavailable(
                f"target {self.name}: {type(exc).__name__} while connecting", target=self.name
            ) from None
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(f"target {self.name}: {type(exc).__name__} ({phase})", target=self.name) from None


def needs_signatures(model: str) -> bool:
    """Gemini 3 and later reject replayed function calls without a thought signature; earlier models do not
    know the stand-in, so it is sent only to those."""
    match = re.match(r"(?:models/)?gemini-(\d+)", model)
    return match is not None and int(match.group(1)) >= 3


# --- errors ----------------------------------------------------------------------------------------

STATUS_CLASSES: dict[str, type[UpstreamError]] = {
    # FAILED_PRECONDITION is Gemini's "not in your region" / "enable billing": the account, not the request
    "FAILED_PRECONDITION": UpstreamCutOff,
    "UNAUTHENTICATED": UpstreamCutOff,
    "PERMISSION_DENIED": UpstreamCutOff,
    "NOT_FOUND": UpstreamModelNotFound,
    "RESOURCE_EXHAUSTED": UpstreamRateLimited,
    "INTERNAL": UpstreamUnavailable,
    "UNAVAILABLE": UpstreamUnavailable,
    "DEADLINE_EXCEEDED": UpstreamUnavailable,
    "UNKNOWN": UpstreamUnavailable,
    "ABORTED": UpstreamUnavailable,
}
REJECTED_STATUSES = frozenset({"INVALID_ARGUMENT", "OUT_OF_RANGE"})
#: google.rpc.ErrorInfo reasons that refuse the key or the project. A bad key arrives as
#: 400 INVALID_ARGUMENT, so the reason is what tells it from a bad request.
CUT_OFF_REASONS = frozenset(
    {
        "API_KEY_INVALID",
        "API_KEY_EXPIRED",
        "API_KEY_SERVICE_BLOCKED",
        "SERVICE_DISABLED",
        "BILLING_DISABLED",
        "CONSUMER_SUSPENDED",
        "ACCESS_TOKEN_EXPIRED",
    }
)
# As for Anthropic, an over-long prompt is a plain 400 INVALID_ARGUMENT with no reason of its own; its wording
# is the only mark, and this is the one place Gemini errors are told apart by text.
CONTEXT_PHRASE = "exceeds the maximum number of tokens"


def gemini_error(status: int | None, error: JSON, *, target: str, retry_after: float | None) -> UpstreamError:
    """Classify a Gemini error by its RPC status, ErrorInfo reason and HTTP status. `status` is None for an
    error inside a 200 stream; the envelope's own `code` stands in."""
    code = error.get("code")
    if status is None:
        status = code if isinstance(code, int) else 502
    rpc = error.get("status") if isinstance(error.get("status"), str) else None
    message = str(error.get("message") or f"upstream answered {status}")
    details = [d for d in error.get("details") or () if isinstance(d, dict)]
    reasons = {d.get("reason") for d in details}
    if retry_after is None:
        retry_after = _retry_delay(details)
    kwargs: dict[str, Any] = {"target": target, "upstream_status": status, "retry_after": retry_after}
    if reasons & CUT_OFF_REASONS:
        return UpstreamCutOff(message, **kwargs)
    cls = STATUS_CLASSES.get(rpc or "")
    if cls is None and (rpc in REJECTED_STATUSES or status in (400, 413, 422)):
        if CONTEXT_PHRASE in message.lower():
            return ContextLengthExceeded(message, **kwargs)
        rejected_status = status if 400 <= status < 500 else 400
        return UpstreamRejected(message, status=rejected_status, type="invalid_request_error", **kwargs)
    if cls is None:
        if status in (401, 402, 403, 451):
            cls = UpstreamCutOff
        elif status == 404:
            cls = UpstreamModelNotFound
        elif status == 429:
            cls = UpstreamRateLimited
        else:
            cls = UpstreamUnavailable
    return cls(message, **kwargs)


def _retry_delay(details: list[JSON]) -> float | None:
    """google.rpc.RetryInfo's retryDelay ("31s", "0.5s"): Gemini's Retry-After, sent in the body."""
    for detail in details:
        delay = detail.get("retryDelay")
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return min(MAX_RETRY_AFTER, max(0.0, float(delay[:-1])))
            except ValueError:
                return None
    return None


def _error_body(raw: bytes) -> JSON:
    # Gemini wraps errors of the non-SSE streaming endpoint in a list; the SSE and unary ones are objects.
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return error_object(raw)
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = data[0]
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        error: JSON = data["error"]
        return error
    return error_object(raw)


# --- the request -----------------------------------------------------------------------------------


class Untranslatable(ValueError):
    """The request holds something Gemini's API cannot express."""


def generate_request(body: JSON, *, signatures: bool = False) -> JSON:
    """An OpenAI chat-completions body (already validated) as a Gemini generateContent request."""
    system: list[str] = []
    contents: list[JSON] = []
    #: tool call id → function name: an OpenAI tool result names only the call, Gemini wants the function
    names: dict[str, str] = {}
    for i, message in enumerate(body.get("messages") or ()):
        role = message.get("role")
        content = message.get("content")
        where = f"messages[{i}]"
        if role in ("system", "developer"):
            text = _plain_text(content)
            if text:
                system.append(text)
        elif role == "user":
            _add_turn(contents, "user", _user_parts(content, where))
        elif role == "assistant":
            _add_turn(contents, "model", _model_parts(message, names, signatures, where))
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in names:
                raise Untranslatable(f"{where}: tool_call_id {call_id!r} answers no earlier tool call")
            _add_turn(contents, "user", [_function_response(names[call_id], content)])
        elif role == "function":
            # The legacy form names the function itself, which is all Gemini needs.
            _add_turn(contents, "user", [_function_response(str(message.get("name") or ""), content)])
        else:
            raise Untranslatable(f"{where}: the role {role!r} cannot be sent to a Gemini target")
    if not contents:
        contents.append({"role": "user", "parts": [{"text": PLACEHOLDER_TURN}]})

    request: JSON = {"contents": contents}
    if system:
        request["systemInstruction"] = {"parts": [{"text": text} for text in system]}
    declarations = _declarations(body.get("tools"))
    if declarations:
        request["tools"] = [{"functionDeclarations": declarations}]
        calling = _calling_config(body.get("tool_choice"))
        if calling is not None:
            request["toolConfig"] = {"functionCallingConfig": calling}
    config = _generation_config(body)
    if config:
        request["generationConfig"] = config
    return request


def _add_turn(contents: list[JSON], role: str, parts: list[JSON]) -> None:
    """Append parts as a turn, merging with a previous turn of the same role: the answers to parallel
    function calls must share one turn, and Gemini prefers user/model alternation."""
    if not parts:
        return
    if contents and contents[-1]["role"] == role:
        contents[-1]["parts"].extend(parts)
    else:
        contents.append({"role": role, "parts": parts})


def _plain_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(p.get("text") or "") for p in content if isinstance(p, dict) and p.get("type") in ("text", "refusal")
        )
    return ""


def _user_parts(content: Any, where: str) -> list[JSON]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[JSON] = []
    for j, part in enumerate(content or ()):
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                parts.append({"text": part["text"]})
        elif kind == "image_url":
            spec = part.get("image_url")
            url = spec.get("url") if isinstance(spec, dict) else spec
            parts.append(_media_part(url, f"{where}.content[{j}]"))
        elif kind == "input_audio":
            audio = part.get("input_audio") if isinstance(part.get("input_audio"), dict) else {}
            fmt = str(audio.get("format") or "wav")
            parts.append({"inlineData": {"mimeType": f"audio/{fmt}", "data": audio.get("data")}})
        elif kind == "file":
            spec = part.get("file") if isinstance(part.get("file"), dict) else {}
            parts.append(_media_part(spec.get("file_data"), f"{where}.content[{j}]"))
        else:
            raise Untranslatable(f"{where}.content[{j}]: content of type {kind!r} cannot be sent to a Gemini target")
    return parts


def _media_part(url: Any, where: str) -> JSON:
    if not isinstance(url, str):
        raise Untranslatable(f"{where}: a media part needs a URL or inline data")
    if url.startswith("data:"):
        head, sep, data = url[5:].partition(",")
        mime, _, encoding = head.partition(";")
        if not sep or encoding.lower() != "base64":
            raise Untranslatable(f"{where}: inline data must be a base64 data: URL")
        return {"inlineData": {"mimeType": mime.lower(), "data": data}}
    if url.startswith(("http://", "https://")):
        # Gemini fetches a fileUri itself but wants a MIME type; the extension is the best guess available.
        return {"fileData": {"mimeType": _guess_mime(url), "fileUri": url}}
    raise Untranslatable(f"{where}: a media URL must be a base64 data: URL or an http(s) URL")


def _guess_mime(url: str) -> str:
    path = url.split("?", 1)[0].lower()
    for suffix, mime in (
        (".png", "image/png"),
        (".webp", "image/webp"),
        (".gif", "image/gif"),
        (".pdf", "application/pdf"),
    ):
        if path.endswith(suffix):
            return mime
    return "image/jpeg"


def _model_parts(message: JSON, names: dict[str, str], signatures: bool, where: str) -> list[JSON]:
    parts: list[JSON] = []
    text = _plain_text(message.get("content"))
    if text:
        parts.append({"text": text})
    legacy = message.get("function_call")
    calls = list(message.get("tool_calls") or ())
    if isinstance(legacy, dict):
        calls.append({"id": "", "function": legacy})
    for position, call in enumerate(calls):
        function = call.get("function") or {}
        name = str(function.get("name") or "")
        names[str(call.get("id") or "")] = name
        part: JSON = {"functionCall": {"name": name, "args": _arguments_object(function.get("arguments"))}}
        if signatures and position == 0:
            # Gemini 3 checks the first call of each step (parallel calls share its signature).
            part["thoughtSignature"] = SIGNATURE_SKIP
        parts.append(part)
    return parts


def _arguments_object(arguments: Any) -> JSON:
    """A tool call's arguments as the object Gemini wants; arguments that are not a JSON object (models
    produce those now and then) are kept as text under "arguments" rather than dropped."""
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {"arguments": arguments}
    return value if isinstance(value, dict) else {"arguments": value}


def _function_response(name: str, content: Any) -> JSON:
    # Gemini wants an object; a tool's JSON object answer is passed as it is, anything else under "result".
    text = _plain_text(content)
    try:
        value = orjson.loads(text) if text.strip() else None
    except orjson.JSONDecodeError:
        value = None
    response = value if isinstance(value, dict) else {"result": text}
    return {"functionResponse": {"name": name, "response": response}}


def _declarations(tools: Any) -> list[JSON]:
    out: list[JSON] = []
    for i, tool in enumerate(tools or ()):
        function = tool.get("function")
        if tool.get("type") != "function" or not isinstance(function, dict):
            raise Untranslatable(f"tools[{i}]: only function tools can be sent to a Gemini target")
        spec: JSON = {"name": function.get("name")}
        if function.get("description"):
            spec["description"] = function["description"]
        if isinstance(function.get("parameters"), dict):
            # parametersJsonSchema takes JSON Schema as OpenAI clients write it (additionalProperties and
            # all); `parameters` takes only Google's OpenAPI subset and would refuse many real schemas.
            spec["parametersJsonSchema"] = function["parameters"]
        out.append(spec)
    return out


def _calling_config(choice: Any) -> JSON | None:
    if choice is None:
        return None
    if choice == "auto":
        return {"mode": "AUTO"}
    if choice == "none":
        return {"mode": "NONE"}
    if choice == "required":
        return {"mode": "ANY"}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return {"mode": "ANY", "allowedFunctionNames": [choice["function"].get("name")]}
    raise Untranslatable(f"tool_choice {choice!r} cannot be sent to a Gemini target")


def _generation_config(body: JSON) -> JSON:
    config: JSON = {}
    for openai_name, gemini_name in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ):
        value = body.get(openai_name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            config[gemini_name] = value
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(limit, int):
        config["maxOutputTokens"] = limit
    stop = body.get("stop")
    if isinstance(stop, str):
        config["stopSequences"] = [stop]
    elif isinstance(stop, list) and stop:
        config["stopSequences"] = [s for s in stop if isinstance(s, str)]
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        spec = response_format.get("json_schema")
        if isinstance(spec, dict) and isinstance(spec.get("schema"), dict):
            # responseJsonSchema, not responseSchema: the OpenAPI subset refuses JSON Schema's common keywords.
            config["responseJsonSchema"] = spec["schema"]
    return config


# --- the answer ------------------------------------------------------------------------------------


def openai_usage(metadata: Any) -> JSON | None:
    """usageMetadata as OpenAI usage: thinking tokens are completion tokens, as OpenAI counts reasoning."""
    if not isinstance(metadata, dict):
        return None

    def count(key: str) -> int:
        value = metadata.get(key)
        return value if isinstance(value, int) else 0

    prompt = count("promptTokenCount")
    thoughts = count("thoughtsTokenCount")
    completion = count("candidatesTokenCount") + thoughts
    total = count("totalTokenCount") or prompt + completion
    usage: JSON = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}
    if count("cachedContentTokenCount"):
        usage["prompt_tokens_details"] = {"cached_tokens": count("cachedContentTokenCount")}
    if thoughts:
        usage["completion_tokens_details"] = {"reasoning_tokens": thoughts}
    return usage


def finish_reason(reason: Any, called_tools: bool) -> str:
    mapped = FINISH_REASONS.get(str(reason), "stop")
    # Gemini says STOP after a function call; OpenAI clients look for tool_calls to run the tools.
    return "tool_calls" if called_tools and mapped == "stop" else mapped


def call_prefix() -> str:
    return f"call_{uuid.uuid4().hex[:12]}"


def tool_call(part: JSON, prefix: str, position: int) -> JSON:
    """A functionCall part as an OpenAI tool call; Gemini's own id is kept when it sends one."""
    call = part["functionCall"]
    call_id = str(call.get("id") or f"{prefix}_{position}")
    arguments = orjson.dumps(call.get("args") or {}).decode()
    return {"id": call_id, "type": "function", "function": {"name": call.get("name"), "arguments": arguments}}


def _parts(candidate: JSON) -> list[JSON]:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    return [p for p in parts or () if isinstance(p, dict)]


def completion_from_response(data: JSON, fallback_model: str) -> JSON:
    """A GenerateContentResponse (its first candidate) as an OpenAI chat.completion."""
    candidate = data["candidates"][0] if isinstance(data["candidates"][0], dict) else {}
    texts: list[str] = []
    reasoning: list[str] = []
    tool_calls: list[JSON] = []
    prefix = call_prefix()
    for part in _parts(candidate):
        if isinstance(part.get("functionCall"), dict):
            tool_calls.append(tool_call(part, prefix, len(tool_calls)))
        elif isinstance(part.get("text"), str):
            (reasoning if part.get("thought") else texts).append(part["text"])
    message: JSON = {"role": "assistant", "content": "".join(texts) if texts or not tool_calls else None}
    message["refusal"] = None
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if tool_calls:
        message["tool_calls"] = tool_calls
    response_id = data.get("responseId")
    body: JSON = {
        "id": f"chatcmpl-{response_id}" if response_id else f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(data.get("modelVersion") or fallback_model),
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(candidate.get("finishReason"), bool(tool_calls)),
            }
        ],
    }
    usage = openai_usage(data.get("usageMetadata"))
    if usage is not None:
        body["usage"] = usage
    return body


class StreamTranslator:
    """Gemini's streamed GenerateContentResponses in, OpenAI chunk dicts out.

    Each response carries the next parts of the first candidate: text becomes content deltas, a function
    call arrives whole and becomes one tool-call delta. The response with a finishReason gives the finishing
    chunk; usage (the latest usageMetadata) follows in its own chunk when the stream ends, always: the
    gateway drops it when the client did not ask for usage.
    """

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.model = model
        self.created = int(time.time())
        self.usage: JSON | None = None
        self.tool_calls = 0
        self._prefix = call_prefix()
        self.finished = False
        self._started = False
        self._usage_sent = False

    def feed(self, data: JSON) -> list[JSON]:
        out: list[JSON] = []
        if not self._started:
            self._started = True
            if data.get("responseId"):
                self.id = f"chatcmpl-{data['responseId']}"
            self.model = str(data.get("modelVersion") or self.model)
            out.append(self.chunk({"role": "assistant", "content": ""}))
        if isinstance(data.get("usageMetadata"), dict):
            self.usage = data["usageMetadata"]
        candidates = data.get("candidates")
        candidate = candidates[0] if isinstance(candidates, list) and candidates else None
        if not isinstance(candidate, dict) or self.finished:
            return out
        for part in _parts(candidate):
            if isinstance(part.get("functionCall"), dict):
                call = {"index": self.tool_calls, **tool_call(part, self._prefix, self.tool_calls)}
                self.tool_calls += 1
                out.append(self.chunk({"tool_calls": [call]}))
            elif isinstance(part.get("text"), str) and part["text"]:
                key = "reasoning_content" if part.get("thought") else "content"
                out.append(self.chunk({key: part["text"]}))
        if candidate.get("finishReason"):
            self.finished = True
            out.append(self.chunk({}, finish_reason(candidate["finishReason"], self.tool_calls > 0)))
        return out

    def close(self) -> list[JSON]:
        """The usage chunk, once, at the end of a complete answer."""
        if self._usage_sent:
            return []
        self._usage_sent = True
        usage = openai_usage(self.usage)
        if usage is None:
            return []
        return [{**self._base(), "choices": [], "usage": usage}]

    def chunk(self, delta: JSON, finish: str | None = None) -> JSON:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**self._base(), "choices": [choice]}

    def _base(self) -> JSON:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model}
