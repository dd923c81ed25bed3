"""Kind `anthropic`: Anthropic's Messages API (`POST {base_url}/v1/messages`) behind the OpenAI face.

The client's chat-completions request is translated into a Messages request (system prompts hoisted to
`system`, turns merged so they alternate and start with the user, tool calls and results as `tool_use` /
`tool_result` blocks), and the answer back into an OpenAI `chat.completion` or a stream of
`chat.completion.chunk` events. Anthropic's error envelopes become Lifeline errors in `anthropic_error`,
by HTTP status and error type, and nowhere else. Pooling, timeouts and the transport's errors are
`HttpProvider`'s (providers/http.py); what Anthropic and Gemini translate alike is in providers/translate.py.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from lifeline.config.schema import AnthropicTarget
from lifeline.errors import (
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
from lifeline.providers.http import HttpProvider, TimedEvents, status_class
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

log = logging.getLogger("lifeline.providers.anthropic")

TOOL_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
#: Anthropic's temperature range is 0..1, OpenAI's 0..2; values above 1 are clamped, not rescaled, so a
#: client's 0.7 means the same on both.
MAX_TEMPERATURE = 1.0

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


#: the fields of a Messages request that count_tokens takes
_COUNTED_FIELDS = frozenset({"model", "messages", "system", "tools", "tool_choice"})


class AnthropicProvider(HttpProvider[AnthropicTarget]):
    _log = log

    def __init__(self, name: str, config: AnthropicTarget, transport: httpx.AsyncBaseTransport | None = None):
        super().__init__(
            name,
            config,
            transport,
            auth=lambda key: {"x-api-key": key},
            headers={"anthropic-version": config.anthropic_version},
        )
        base = config.base_url.rstrip("/")
        # Both `https://api.anthropic.com` (the documented base) and a base ending in /v1 are accepted.
        self._url = self._stream_url = base + ("/messages" if base.endswith("/v1") else "/v1/messages")
        self._count_url = self._url + "/count_tokens"

    # --- one attempt -----------------------------------------------------------------------------

    def _body(self, call: ChatCall, stream: bool) -> bytes:
        body = call.body
        if call.prefill is not None:
            # Anthropic continues a closing assistant turn natively (prefill).
            body = {**body, "messages": [*body["messages"], {"role": "assistant", "content": call.prefill}]}
        return orjson.dumps(self._request(body, stream))

    def _request(self, body: JSON, stream: bool) -> JSON:
        try:
            return messages_request(
                body, model=self.model, default_max_tokens=self.config.default_max_tokens, stream=stream
            )
        except Untranslatable as exc:
            raise UpstreamRejected(str(exc), target=self.name, code="unsupported_value") from None

    async def count_tokens(self, call: ChatCall) -> int:
        """The prompt tokens of `call` as Anthropic counts them (`POST /v1/messages/count_tokens`): the request
        as it would be sent, without what that endpoint does not take."""
        request = self._request(call.body, stream=False)
        counted = {k: v for k, v in request.items() if k in _COUNTED_FIELDS}
        data = await self._post_json(self._count_url, orjson.dumps(counted), call)
        tokens = data.get("input_tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
            raise UpstreamUnavailable("the upstream's answer is not a token count", target=self.name)
        return tokens

    async def complete(self, call: ChatCall) -> Completion:
        data = await self._post_json(self._url, self._body(call, stream=False), call)
        if isinstance(data, dict) and data.get("type") == "error":
            raise self._error(None, _object(data.get("error")), None)
        if not isinstance(data, dict) or not isinstance(data.get("content"), list):
            raise UpstreamUnavailable("the upstream's answer is not a message", target=self.name)
        body = completion_from_message(data, self.model)
        return Completion(body=body, model=str(body["model"]), usage=body.get("usage"))

    async def _chunks(self, events: TimedEvents) -> AsyncIterator[Chunk]:
        translator = StreamTranslator(self.model)
        async for event in self._event_objects(events):
            if event.get("type") == "error":
                raise self._error(None, _object(event.get("error")), None)
            for out in translator.feed(event):
                yield events.seen(inspect_chunk(out, orjson.dumps(out)))
            if translator.stopped:
                return
        for out in translator.close():
            yield inspect_chunk(out, orjson.dumps(out))

    def _classify(self, status: int | None, error: JSON, retry_after: float | None) -> UpstreamError:
        return anthropic_error(status, error, target=self.name, retry_after=retry_after)


# --- errors ----------------------------------------------------------------------------------------

#: the HTTP status Anthropic documents for each error type; used for errors that arrive inside a stream
TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
TYPE_CLASSES: dict[str, type[UpstreamError]] = {
    "authentication_error": UpstreamCutOff,
    "permission_error": UpstreamCutOff,
    "billing_error": UpstreamCutOff,
    "not_found_error": UpstreamModelNotFound,
    "rate_limit_error": UpstreamRateLimited,
    "api_error": UpstreamUnavailable,
    "timeout_error": UpstreamUnavailable,
    # 529: Anthropic as a whole is short of capacity, not this account: transient, retried, then failed over
    "overloaded_error": UpstreamUnavailable,
}
REJECTED_TYPES = frozenset({"invalid_request_error", "request_too_large"})
#: a 429 with one of these `error.details.error_code`s is a spending cap, not a rate: waiting will not help
SPEND_LIMIT_CODES = frozenset({"enforced_spend_limit_reached", "spend_limit_reached"})
# The one documented exception to "never by message text": Anthropic reports an over-long prompt as a plain
# 400 invalid_request_error with no code of its own, so the wording is all there is to tell it apart.
CONTEXT_PHRASES = ("prompt is too long", "exceed context limit")


def anthropic_error(status: int | None, error: JSON | None, *, target: str, retry_after: float | None) -> UpstreamError:
    """Classify an Anthropic error by HTTP status and error type. `status` is None for an error event that
    arrived inside a 200 stream; the type's documented status stands in."""
    error = error or {}
    etype = error.get("type") if isinstance(error.get("type"), str) else None
    if status is None:
        status = TYPE_STATUS.get(etype or "", 502)
    message = str(error.get("message") or f"upstream answered {status}")
    details = error.get("details")
    detail_code = details.get("error_code") if isinstance(details, dict) else None
    kwargs: dict[str, Any] = {"target": target, "upstream_status": status, "retry_after": retry_after}
    if detail_code in SPEND_LIMIT_CODES:
        return UpstreamCutOff(message, **kwargs)
    if etype in REJECTED_TYPES or (etype not in TYPE_CLASSES and status in (400, 413, 422)):
        if status == 400 and any(phrase in message.lower() for phrase in CONTEXT_PHRASES):
            return ContextLengthExceeded(message, **kwargs)
        code = etype if etype and etype != "invalid_request_error" else None
        rejected_status = status if 400 <= status < 500 else 400
        return UpstreamRejected(message, status=rejected_status, type="invalid_request_error", code=code, **kwargs)
    cls = TYPE_CLASSES.get(etype or "") or status_class(status)
    return cls(message, **kwargs)


# --- the request -----------------------------------------------------------------------------------


def messages_request(body: JSON, *, model: str, default_max_tokens: int, stream: bool) -> JSON:
    """An OpenAI chat-completions body (already validated) as an Anthropic Messages request."""
    system: list[str] = []
    turns: list[JSON] = []
    for i, message in enumerate(body.get("messages") or ()):
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            # Anthropic has one system prompt; mid-conversation system messages join it, in order.
            text = plain_text(content)
            if text:
                system.append(text)
        elif role == "user":
            add_turn(turns, "user", _user_blocks(content, f"messages[{i}]"), field="content")
        elif role == "assistant":
            add_turn(turns, "assistant", _assistant_blocks(message, f"messages[{i}]"), field="content")
        elif role == "tool":
            add_turn(turns, "user", [_tool_result(message, f"messages[{i}]")], field="content")
        else:
            raise Untranslatable(f"messages[{i}]: the role {role!r} cannot be sent to an Anthropic target")
    if not turns or turns[0]["role"] != "user":
        turns.insert(0, {"role": "user", "content": [{"type": "text", "text": PLACEHOLDER_TURN}]})
    _trim_prefill(turns)

    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    request: JSON = {"model": model, "max_tokens": limit if isinstance(limit, int) else default_max_tokens}
    if system:
        request["system"] = "\n\n".join(system)
    request["messages"] = turns
    tools = _tools(body.get("tools"))
    if tools:
        request["tools"] = tools
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            request["tool_choice"] = choice
    else:
        used = _used_tool_names(turns)
        if used:
            # Anthropic refuses tool_use blocks in the history unless tools are declared. The client sent
            # none this time, so the names are declared with an open schema and calling them is switched off.
            request["tools"] = [{"name": n, "input_schema": {"type": "object"}} for n in used]
            request["tool_choice"] = {"type": "none"}
    temperature = body.get("temperature")
    if isinstance(temperature, int | float):
        request["temperature"] = min(float(temperature), MAX_TEMPERATURE)
    if isinstance(body.get("top_p"), int | float):
        request["top_p"] = body["top_p"]
    stop = stop_sequences(body.get("stop"))
    if stop is not None:
        request["stop_sequences"] = stop
    if isinstance(body.get("user"), str):
        request["metadata"] = {"user_id": body["user"]}
    if stream:
        request["stream"] = True
    return request


def _trim_prefill(turns: list[JSON]) -> None:
    """A closing assistant turn is a prefill Anthropic continues, and it refuses one that ends in whitespace."""
    last = turns[-1]
    if last["role"] != "assistant" or last["content"][-1].get("type") != "text":
        return
    text = last["content"][-1]["text"].rstrip()
    if text:
        last["content"][-1] = {"type": "text", "text": text}
    else:
        last["content"].pop()
        if not last["content"]:
            turns.pop()


def _user_blocks(content: Any, where: str) -> list[JSON]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[JSON] = []
    for j, part in enumerate(content or ()):
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image_block(part.get("image_url"), f"{where}.content[{j}]"))
        elif kind == "file":
            blocks.append(_document_block(part.get("file"), f"{where}.content[{j}]"))
        else:
            raise Untranslatable(
                f"{where}.content[{j}]: content of type {kind!r} cannot be sent to an Anthropic target"
            )
    return blocks


def _image_block(spec: Any, where: str) -> JSON:
    url = spec.get("url") if isinstance(spec, dict) else spec
    if not isinstance(url, str):
        raise Untranslatable(f"{where}: an image_url part needs a url")
    inline = data_url(url)
    if inline is not None:
        media_type, data = inline
        if media_type not in IMAGE_TYPES:
            raise Untranslatable(f"{where}: images of type {media_type!r} cannot be sent to an Anthropic target")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise Untranslatable(f"{where}: an image URL must be a base64 data: URL or an http(s) URL")


def _document_block(spec: Any, where: str) -> JSON:
    file_data = spec.get("file_data") if isinstance(spec, dict) else None
    inline = data_url(file_data) if isinstance(file_data, str) else None
    if inline is None or inline[0] != "application/pdf":
        raise Untranslatable(f"{where}: only PDF files sent inline as file_data reach an Anthropic target")
    return {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": inline[1]}}


def _assistant_blocks(message: JSON, where: str) -> list[JSON]:
    blocks: list[JSON] = []
    text = plain_text(message.get("content"))
    if text:
        blocks.append({"type": "text", "text": text})
    if message.get("function_call"):
        raise Untranslatable(f"{where}: legacy function_call messages cannot be sent to an Anthropic target")
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        blocks.append(
            {
                "type": "tool_use",
                "id": _tool_id(call.get("id")),
                "name": function.get("name"),
                "input": arguments_object(function.get("arguments")),
            }
        )
    return blocks


def _tool_id(call_id: Any) -> str:
    """A tool call id Anthropic accepts ([A-Za-z0-9_-]+). Ids minted by other providers (a conversation that
    failed over) may hold other characters; they are replaced by a digest, the same for the call and its
    result, so the pair still matches."""
    text = str(call_id or "")
    if TOOL_ID.fullmatch(text):
        return text
    return "toolu_" + hashlib.sha256(text.encode()).hexdigest()[:24]


def _tool_result(message: JSON, where: str) -> JSON:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise Untranslatable(f"{where}: a tool message needs its tool_call_id")
    block: JSON = {"type": "tool_result", "tool_use_id": _tool_id(call_id)}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    elif content:
        parts = _user_blocks(content, where)
        if parts:
            block["content"] = parts
    return block


def _tools(tools: Any) -> list[JSON]:
    out: list[JSON] = []
    for i, tool in enumerate(tools or ()):
        function = tool.get("function")
        if tool.get("type") != "function" or not isinstance(function, dict):
            raise Untranslatable(f"tools[{i}]: only function tools can be sent to an Anthropic target")
        spec: JSON = {"name": function.get("name")}
        if function.get("description"):
            spec["description"] = function["description"]
        parameters = function.get("parameters")
        spec["input_schema"] = parameters if isinstance(parameters, dict) else {"type": "object", "properties": {}}
        out.append(spec)
    return out


def _tool_choice(choice: Any, parallel: Any) -> JSON | None:
    out: JSON | None
    if choice is None:
        out = None
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        out = {"type": "tool", "name": choice["function"].get("name")}
    else:
        raise Untranslatable(f"tool_choice {choice!r} cannot be sent to an Anthropic target")
    if parallel is False:
        out = {**(out or {"type": "auto"}), "disable_parallel_tool_use": True}
    return out


def _used_tool_names(turns: list[JSON]) -> list[str]:
    names: dict[str, None] = {}
    for turn in turns:
        for block in turn["content"]:
            if block.get("type") == "tool_use" and isinstance(block.get("name"), str):
                names[block["name"]] = None
    return list(names)


# --- the answer ------------------------------------------------------------------------------------


def openai_usage(usage: Any) -> JSON | None:
    """Anthropic's usage as OpenAI's: cache reads and writes are prompt tokens too (OpenAI counts them in
    prompt_tokens; Anthropic reports them beside input_tokens)."""
    if not isinstance(usage, dict) or not any(k in usage for k in ("input_tokens", "output_tokens")):
        return None

    def count(key: str) -> int:
        value = usage.get(key)
        return value if isinstance(value, int) else 0

    cached = count("cache_read_input_tokens")
    prompt = count("input_tokens") + count("cache_creation_input_tokens") + cached
    completion = count("output_tokens")
    out: JSON = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if cached:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    return out


def finish_reason(stop_reason: Any, called_tools: bool) -> str:
    if called_tools and stop_reason in (None, "tool_use", "end_turn"):
        return "tool_calls"
    return FINISH_REASONS.get(str(stop_reason), "stop")


def completion_from_message(data: JSON, fallback_model: str) -> JSON:
    """An Anthropic message as an OpenAI chat.completion."""
    texts: list[str] = []
    reasoning: list[str] = []
    tool_calls: list[JSON] = []
    for block in data.get("content") or ():
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text") or ""))
        elif kind == "thinking":
            reasoning.append(str(block.get("thinking") or ""))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            tool_calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments},
                }
            )
    return chat_completion(
        completion_id=str(data.get("id") or f"chatcmpl-{uuid.uuid4().hex}"),
        model=str(data.get("model") or fallback_model),
        texts=texts,
        reasoning=reasoning,
        tool_calls=tool_calls,
        finish_reason=finish_reason(data.get("stop_reason"), bool(tool_calls)),
        usage=openai_usage(data.get("usage")),
    )


class StreamTranslator(ChunkWriter):
    """Anthropic's stream events in, OpenAI chunk dicts out.

    message_start gives the role chunk, text and tool-use blocks give content and tool-call deltas (tool
    calls numbered in order of appearance, whatever their block index), message_delta's stop_reason gives
    the finishing chunk and message_stop the usage chunk, which is always sent: the gateway drops it when
    the client did not ask for usage.
    """

    def __init__(self, model: str) -> None:
        super().__init__(model)
        self.usage: JSON = {}
        #: content block index → tool call index
        self.tools: dict[int, int] = {}
        #: a stop_reason arrived: the answer is complete even if message_stop never does
        self.finished = False
        #: message_stop arrived: nothing more will come
        self.stopped = False
        self._role_sent = False

    def feed(self, event: JSON) -> list[JSON]:
        kind = event.get("type")
        out: list[JSON] = []
        if kind == "message_start":
            message = _object(event.get("message"))
            self.id = str(message.get("id") or self.id)
            self.model = str(message.get("model") or self.model)
            self._add_usage(message.get("usage"))
            return self._role(out)
        if kind == "content_block_start":
            block = _object(event.get("content_block"))
            if block.get("type") == "tool_use":
                position = len(self.tools)
                self.tools[_index(event)] = position
                call = {"index": position, "id": block.get("id"), "type": "function"}
                call["function"] = {"name": block.get("name"), "arguments": ""}
                out.append(self.chunk({"tool_calls": [call]}))
            elif block.get("type") == "text" and block.get("text"):
                out.append(self.chunk({"content": block["text"]}))
        elif kind == "content_block_delta":
            delta = _object(event.get("delta"))
            dtype = delta.get("type")
            if dtype == "text_delta" and delta.get("text"):
                out.append(self.chunk({"content": delta["text"]}))
            elif dtype == "input_json_delta" and delta.get("partial_json"):
                call_index = self.tools.get(_index(event))
                if call_index is not None:
                    piece = {"index": call_index, "function": {"arguments": delta["partial_json"]}}
                    out.append(self.chunk({"tool_calls": [piece]}))
            elif dtype == "thinking_delta" and delta.get("thinking"):
                out.append(self.chunk({"reasoning_content": delta["thinking"]}))
        elif kind == "message_delta":
            self._add_usage(event.get("usage"))
            delta = _object(event.get("delta"))
            if delta.get("stop_reason") and not self.finished:
                self.finished = True
                out.append(self.chunk({}, finish_reason(delta["stop_reason"], bool(self.tools))))
        elif kind == "message_stop":
            self.stopped = True
            if not self.finished:
                # A message_stop without a stop_reason is still Anthropic saying the message is whole.
                self.finished = True
                out.append(self.chunk({}, finish_reason(None, bool(self.tools))))
            out.extend(self.close())
        # ping, content_block_stop and event types added later carry nothing for the client
        return self._role(out) if out else out

    def close(self) -> list[JSON]:
        """The usage chunk, once, at the end of a complete answer."""
        return self.usage_chunk(openai_usage(self.usage))

    def _role(self, out: list[JSON]) -> list[JSON]:
        if self._role_sent:
            return out
        self._role_sent = True
        return [self.chunk({"role": "assistant", "content": ""}), *out]

    def _add_usage(self, usage: Any) -> None:
        # message_delta's counts are cumulative, so the latest value of each field is the total.
        if isinstance(usage, dict):
            self.usage.update({k: v for k, v in usage.items() if isinstance(v, int)})


def _object(value: Any) -> JSON:
    return value if isinstance(value, dict) else {}


def _index(event: JSON) -> int:
    index = event.get("index")
    return index if isinstance(index, int) else -1
