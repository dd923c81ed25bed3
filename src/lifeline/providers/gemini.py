"""Kind `gemini`: Google's Gemini API (`{base_url}/models/{model}:generateContent` and
`:streamGenerateContent?alt=sse`) behind the OpenAI face.

The client's chat-completions request becomes `contents` (roles user/model), `systemInstruction`, function
declarations and `generationConfig`; the answer's first candidate comes back as an OpenAI `chat.completion`
or a stream of `chat.completion.chunk` events. Gemini's error envelopes (`{"error": {code, message,
status, details}}`) become Lifeline errors in `gemini_error`, by HTTP status, RPC status and ErrorInfo
reason, and nowhere else. Pooling, timeouts and the transport's errors are `HttpProvider`'s
(providers/http.py); what Gemini and Anthropic translate alike is in providers/translate.py.

Tool calls: Gemini's function calls often carry no id, so answers name them `call_<random>_<n>`, unique
across a conversation as other providers require after a failover. Thought signatures are not carried back
(a gateway keeps no state, and an id long enough to hold one is refused by OpenAI and Anthropic); Gemini 3,
which insists on one, gets Google's documented stand-in instead.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from lifeline.config.schema import GeminiTarget
from lifeline.errors import (
    ContentFiltered,
    ContextLengthExceeded,
    Untranslatable,
    UpstreamCutOff,
    UpstreamError,
    UpstreamModelNotFound,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamUnavailable,
)
from lifeline.providers.base import ChatCall, Chunk, Completion, inspect_chunk
from lifeline.providers.http import MAX_RETRY_AFTER, HttpProvider, TimedEvents, error_object, status_class
from lifeline.providers.translate import (
    JSON,
    PLACEHOLDER_TURN,
    ChunkWriter,
    add_turn,
    arguments_object,
    chat_completion,
    data_url,
    plain_text,
    stop_sequences,
)

log = logging.getLogger("lifeline.providers.gemini")

#: Google's documented stand-in for a thought signature the client cannot give back (a gateway keeps none,
#: and calls made by another target never had one): Gemini 3 rejects replayed function calls without any.
SIGNATURE_SKIP = "skip_thought_signature_validator"

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


class GeminiProvider(HttpProvider[GeminiTarget]):
    _log = log

    def __init__(self, name: str, config: GeminiTarget, transport: httpx.AsyncBaseTransport | None = None):
        super().__init__(name, config, transport, auth=lambda key: {"x-goog-api-key": key})
        # `gemini-2.5-flash` means models/gemini-2.5-flash; `tunedModels/…` and `models/…` are taken as they are.
        # The name is quoted: a fault-wall behaviour such as `status?code=503` must survive as one path segment.
        resource = config.model if "/" in config.model else f"models/{config.model}"
        base = f"{config.base_url.rstrip('/')}/{quote(resource, safe='/')}"
        self._url = base + ":generateContent"
        self._stream_url = base + ":streamGenerateContent?alt=sse"
        self._signatures = needs_signatures(config.model)

    # --- one attempt -----------------------------------------------------------------------------

    def _body(self, call: ChatCall, stream: bool) -> bytes:
        # Streaming is chosen by the URL; the request is the same either way.
        try:
            request = generate_request(call.body, signatures=self._signatures)
        except Untranslatable as exc:
            raise UpstreamRejected(str(exc), target=self.name, code="unsupported_value") from None
        return orjson.dumps(request)

    async def complete(self, call: ChatCall) -> Completion:
        data = await self._post_json(self._url, self._body(call, stream=False), call)
        if not isinstance(data, dict):
            raise UpstreamUnavailable("the upstream's answer is not an object", target=self.name)
        if isinstance(data.get("error"), dict):
            raise self._error(None, data["error"], None)
        self._check_blocked(data)
        if not isinstance(data.get("candidates"), list) or not data["candidates"]:
            raise UpstreamUnavailable("the upstream's answer has no candidates", target=self.name)
        body = completion_from_response(data, self.model)
        return Completion(body=body, model=str(body["model"]), usage=body.get("usage"))

    async def _chunks(self, events: TimedEvents) -> AsyncIterator[Chunk]:
        # Gemini marks the end of an answer only with a finishReason, so `events` treats a stream that closes
        # before one as cut off, as it does for every kind.
        translator = StreamTranslator(self.model)
        async for event in self._event_objects(events):
            if isinstance(event.get("error"), dict):
                raise self._error(None, event["error"], None)
            self._check_blocked(event)
            for out in translator.feed(event):
                yield events.seen(inspect_chunk(out, orjson.dumps(out)))
        for out in translator.close():
            yield inspect_chunk(out, orjson.dumps(out))

    def _check_blocked(self, data: JSON) -> None:
        feedback = data.get("promptFeedback")
        reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
        if reason and not data.get("candidates"):
            raise ContentFiltered(f"Gemini refused the prompt (blockReason {reason}).", target=self.name)

    def _classify(self, status: int | None, error: JSON, retry_after: float | None) -> UpstreamError:
        return gemini_error(status, error, target=self.name, retry_after=retry_after)

    def _error_body(self, raw: bytes) -> JSON:
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
        cls = status_class(status)
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


# --- the request -----------------------------------------------------------------------------------


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
            text = plain_text(content)
            if text:
                system.append(text)
        elif role == "user":
            add_turn(contents, "user", _user_parts(content, where), field="parts")
        elif role == "assistant":
            add_turn(contents, "model", _model_parts(message, names, signatures, where), field="parts")
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in names:
                raise Untranslatable(f"{where}: tool_call_id {call_id!r} answers no earlier tool call")
            add_turn(contents, "user", [_function_response(names[call_id], content)], field="parts")
        elif role == "function":
            # The legacy form names the function itself, which is all Gemini needs.
            add_turn(contents, "user", [_function_response(str(message.get("name") or ""), content)], field="parts")
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
        inline = data_url(url)
        if inline is None:
            raise Untranslatable(f"{where}: inline data must be a base64 data: URL")
        return {"inlineData": {"mimeType": inline[0], "data": inline[1]}}
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
    text = plain_text(message.get("content"))
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
        part: JSON = {"functionCall": {"name": name, "args": arguments_object(function.get("arguments"))}}
        if signatures and position == 0:
            # Gemini 3 checks the first call of each step (parallel calls share its signature).
            part["thoughtSignature"] = SIGNATURE_SKIP
        parts.append(part)
    return parts


def _function_response(name: str, content: Any) -> JSON:
    # Gemini wants an object; a tool's JSON object answer is passed as it is, anything else under "result".
    text = plain_text(content)
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
    stop = stop_sequences(body.get("stop"))
    if stop is not None:
        config["stopSequences"] = stop
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
    response_id = data.get("responseId")
    return chat_completion(
        completion_id=f"chatcmpl-{response_id}" if response_id else f"chatcmpl-{uuid.uuid4().hex}",
        model=str(data.get("modelVersion") or fallback_model),
        texts=texts,
        reasoning=reasoning,
        tool_calls=tool_calls,
        finish_reason=finish_reason(candidate.get("finishReason"), bool(tool_calls)),
        usage=openai_usage(data.get("usageMetadata")),
    )


class StreamTranslator(ChunkWriter):
    """Gemini's streamed GenerateContentResponses in, OpenAI chunk dicts out.

    Each response carries the next parts of the first candidate: text becomes content deltas, a function
    call arrives whole and becomes one tool-call delta. The response with a finishReason gives the finishing
    chunk; usage (the latest usageMetadata) follows in its own chunk when the stream ends, always: the
    gateway drops it when the client did not ask for usage.
    """

    def __init__(self, model: str) -> None:
        super().__init__(model)
        self.usage: JSON | None = None
        self.tool_calls = 0
        self._prefix = call_prefix()
        self.finished = False
        self._started = False

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
        return self.usage_chunk(openai_usage(self.usage))
