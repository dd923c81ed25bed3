"""OpenAI's Responses API as an inbound protocol, translated onto chat completions; pure, no I/O.

A /v1/responses body is validated here (each error names the Responses parameter, e.g. `input[2].type`),
translated once into an OpenAI chat body (`to_chat_body`), and the answer is translated back: a whole
`chat.completion` into a `response` object (`to_response`), or the relayed chat chunks into the Responses
stream events (`ResponseStream`, driven by server/sse.py's `ResponsesEncoder`).

Translated: `input` (a string, or message / function_call / function_call_output items), `instructions`
(a system message first), function tools (flat ↔ nested) and `tool_choice`, `text.format` (json_schema,
json_object), `max_output_tokens`, `temperature`, `top_p`, `parallel_tool_calls`, `user`; `metadata` and
`store` are the gateway's own. `reasoning` items in the input are dropped (nothing a chat target can read).
Refused with a 400: built-in tools (web search, file search, code interpreter, computer use …), items and
parts no chat target can carry (file inputs, item references), `background`, `conversation` and `prompt`.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from lifeline.errors import InvalidRequest

#: tool types the Responses API runs itself: no chat target can, so they are refused by name
BUILT_IN_TOOLS = frozenset(
    {
        "web_search",
        "web_search_preview",
        "web_search_2025_08_26",
        "web_search_preview_2025_03_11",
        "file_search",
        "code_interpreter",
        "computer_use_preview",
        "computer",
        "image_generation",
        "mcp",
        "local_shell",
        "shell",
        "apply_patch",
        "custom",
    }
)

#: request fields that ask for a feature only OpenAI's own service has
_REFUSED_FIELDS = {
    "background": "background responses are not supported by the gateway",
    "conversation": "conversations are not supported; use previous_response_id",
    "prompt": "stored prompt templates are not supported",
}

_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


@dataclass(slots=True)
class ResponsesRequest:
    """A validated Responses request: the input as items (a string input becomes one user message item)."""

    model: str
    items: list[dict[str, Any]]
    instructions: str | None
    tools: list[dict[str, Any]]
    stream: bool
    store: bool
    previous_response_id: str | None
    metadata: dict[str, str]
    #: what the response object echoes back
    echo: dict[str, Any] = field(default_factory=dict)
    #: chat parameters translated from the Responses ones
    chat: dict[str, Any] = field(default_factory=dict)


def _bad(param: str, message: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(f"Invalid value for '{param}': {message}.", param=param, code=code)


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _optional(data: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _tuple(kind)):
        raise _bad(name, f"expected {what}, got {_type_name(value)}", "invalid_type")
    return value


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def validate_request(data: dict[str, Any]) -> ResponsesRequest:
    """The body of POST /v1/responses, checked; a 400 naming the parameter at the first mistake."""
    model = data.get("model")
    if model is None:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise _bad("model", "expected a non-empty string")
    for name, why in _REFUSED_FIELDS.items():
        if data.get(name) not in (None, False):
            raise InvalidRequest(f"Unsupported parameter: '{name}': {why}.", param=name, code="unsupported_parameter")
    raw_input = data.get("input")
    if raw_input is None:
        raise InvalidRequest("Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
    if isinstance(raw_input, str):
        items = [{"type": "message", "role": "user", "content": raw_input}]
    elif isinstance(raw_input, list):
        items = [_item(item, f"input[{i}]") for i, item in enumerate(raw_input)]
        if all(item["type"] == "reasoning" for item in items):
            raise _bad("input", "expected at least one message, function_call or function_call_output item")
    else:
        raise _bad(
            "input", f"expected a string or an array of input items, got {_type_name(raw_input)}", "invalid_type"
        )
    instructions = _optional(data, "instructions", str, "a string")
    stream = bool(_optional(data, "stream", bool, "a boolean"))
    store = _optional(data, "store", bool, "a boolean")
    previous = _optional(data, "previous_response_id", str, "a string")
    metadata = _metadata(data.get("metadata"))
    tools = _tools(data.get("tools"))
    chat, echo = _parameters(data, tools)
    return ResponsesRequest(
        model=model,
        items=items,
        instructions=instructions,
        tools=tools,
        stream=stream,
        store=True if store is None else store,
        previous_response_id=previous,
        metadata=metadata,
        echo=echo,
        chat=chat,
    )


def _parameters(data: dict[str, Any], tools: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The chat parameters the Responses ones translate to, and what the response object echoes back."""
    chat: dict[str, Any] = {}
    echo: dict[str, Any] = {}
    for name in ("temperature", "top_p"):
        value = _optional(data, name, (int, float), "a number")
        if value is not None:
            chat[name] = value
        echo[name] = value
    max_output = _optional(data, "max_output_tokens", int, "an integer")
    if max_output is not None:
        if max_output < 1:
            raise _bad("max_output_tokens", "expected a positive integer")
        chat["max_tokens"] = max_output
    echo["max_output_tokens"] = max_output
    parallel = _optional(data, "parallel_tool_calls", bool, "a boolean")
    if parallel is not None and tools:
        chat["parallel_tool_calls"] = parallel
    echo["parallel_tool_calls"] = True if parallel is None else parallel
    user = _optional(data, "user", str, "a string")
    if user is not None:
        chat["user"] = user
    choice = data.get("tool_choice")
    if choice is not None:
        chat["tool_choice"] = _tool_choice(choice, tools)
    echo["tool_choice"] = "auto" if choice is None else choice
    text = _optional(data, "text", dict, "an object") or {}
    text_format = _text_format(text.get("format"))
    if text_format is not None:
        chat["response_format"] = text_format
    echo["text"] = {"format": text.get("format") or {"type": "text"}}
    return chat, echo


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad("metadata", f"expected an object, got {_type_name(value)}", "invalid_type")
    if len(value) > 16:
        raise _bad("metadata", "at most 16 keys")
    for key, item in value.items():
        if len(key) > 64 or not isinstance(item, str) or len(item) > 512:
            raise _bad(f"metadata.{key}", "keys of at most 64 characters, values strings of at most 512")
    return dict(value)


# --- input items ------------------------------------------------------------------------------------


def _item(item: Any, param: str) -> dict[str, Any]:
    """One input item, checked and in its normal form (every message item with `type: message`)."""
    if not isinstance(item, dict):
        raise _bad(param, f"expected an input item (an object), got {_type_name(item)}", "invalid_type")
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        return _message_item(item, param)
    if kind == "function_call":
        for name in ("call_id", "name", "arguments"):
            if not isinstance(item.get(name), str):
                raise _bad(f"{param}.{name}", "expected a string", "invalid_type")
        return {k: item[k] for k in ("type", "id", "call_id", "name", "arguments") if k in item} | {"type": kind}
    if kind == "function_call_output":
        if not isinstance(item.get("call_id"), str):
            raise _bad(f"{param}.call_id", "expected a string", "invalid_type")
        output = item.get("output")
        if isinstance(output, list):
            output = _parts_text(output, f"{param}.output")
        if not isinstance(output, str):
            raise _bad(f"{param}.output", "expected a string or an array of input_text parts", "invalid_type")
        return {"type": kind, "call_id": item["call_id"], "output": output}
    if kind == "reasoning":
        return {"type": kind}
    if kind is None:
        raise InvalidRequest(
            f"Missing required parameter: '{param}.type'.", param=f"{param}.type", code="missing_required_parameter"
        )
    if kind == "item_reference":
        raise _bad(f"{param}.type", "item references are not supported; send the items themselves")
    raise _bad(
        f"{param}.type",
        f"unsupported input item type {kind!r} (supported: message, function_call, function_call_output, reasoning)",
    )


def _message_item(item: dict[str, Any], param: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in _ROLES:
        raise _bad(f"{param}.role", "expected one of user, assistant, system, developer")
    content = item.get("content")
    if isinstance(content, list):
        content = [_part(part, f"{param}.content[{j}]", role) for j, part in enumerate(content)]
    elif not isinstance(content, str):
        raise _bad(f"{param}.content", "expected a string or an array of content parts", "invalid_type")
    return {"type": "message", "role": role, "content": content}


def _part(part: Any, param: str, role: str) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise _bad(param, f"expected a content part (an object), got {_type_name(part)}", "invalid_type")
    kind = part.get("type")
    if kind in ("input_text", "output_text", "refusal"):
        key = "refusal" if kind == "refusal" else "text"
        if not isinstance(part.get(key), str):
            raise _bad(f"{param}.{key}", "expected a string", "invalid_type")
        return {"type": kind, key: part[key]}
    if kind == "input_image":
        if role != "user":
            raise _bad(f"{param}.type", "images belong in user messages")
        url = part.get("image_url")
        if not isinstance(url, str):
            raise _bad(f"{param}.image_url", "expected a URL or a data URL (file_id is not supported)")
        return {"type": kind, "image_url": url, "detail": part.get("detail") or "auto"}
    raise _bad(
        f"{param}.type", f"unsupported content part type {kind!r} (supported: input_text, output_text, input_image)"
    )


def _parts_text(parts: list[Any], param: str) -> str:
    texts = []
    for j, part in enumerate(parts):
        if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text"):
            raise _bad(f"{param}[{j}]", "expected an input_text part")
        if not isinstance(part.get("text"), str):
            raise _bad(f"{param}[{j}].text", "expected a string", "invalid_type")
        texts.append(part["text"])
    return "".join(texts)


# --- tools and formats ------------------------------------------------------------------------------


def _tools(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad("tools", f"expected an array, got {_type_name(value)}", "invalid_type")
    tools = []
    for i, tool in enumerate(value):
        param = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise _bad(param, "expected a tool (an object)", "invalid_type")
        kind = tool.get("type")
        if kind in BUILT_IN_TOOLS:
            raise InvalidRequest(
                f"Unsupported tool: '{param}.type' is {kind!r}, a built-in tool of OpenAI's Responses API; "
                "the gateway serves Responses over chat targets, which cannot run it. Only function tools are "
                "supported.",
                param=f"{param}.type",
                code="unsupported_tool",
            )
        if kind != "function":
            raise _bad(f"{param}.type", f"unsupported tool type {kind!r} (supported: function)")
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise _bad(f"{param}.name", "expected the function's name")
        parameters = tool.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise _bad(f"{param}.parameters", "expected a JSON schema (an object)", "invalid_type")
        tools.append({k: tool[k] for k in ("type", "name", "description", "parameters", "strict") if k in tool})
    return tools


def _tool_choice(choice: Any, tools: list[dict[str, Any]]) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        if choice["name"] not in {t["name"] for t in tools}:
            raise _bad("tool_choice.name", f"no function tool is named {choice['name']!r}")
        return {"type": "function", "function": {"name": choice["name"]}}
    raise _bad("tool_choice", "expected auto, none, required or {type: function, name}")


def _text_format(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _bad("text.format", "expected an object", "invalid_type")
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        if not isinstance(value.get("name"), str) or not value["name"]:
            raise _bad("text.format.name", "expected the schema's name")
        if not isinstance(value.get("schema"), dict):
            raise _bad("text.format.schema", "expected a JSON schema (an object)", "invalid_type")
        schema = {k: value[k] for k in ("name", "schema", "strict", "description") if value.get(k) is not None}
        return {"type": "json_schema", "json_schema": schema}
    raise _bad("text.format.type", "expected text, json_object or json_schema")


# --- to chat ----------------------------------------------------------------------------------------


def to_chat_body(request: ResponsesRequest, history: list[dict[str, Any]]) -> dict[str, Any]:
    """The chat body for `request`, after the items of the conversation so far (`history`, from
    previous_response_id: earlier inputs and outputs, in order)."""
    messages: list[dict[str, Any]] = []
    if request.instructions:
        messages.append({"role": "system", "content": request.instructions})
    for item in [*history, *request.items]:
        _append(messages, item)
    body: dict[str, Any] = {"model": request.model, "messages": messages, **request.chat}
    if request.tools:
        body["tools"] = [
            {"type": "function", "function": {k: v for k, v in t.items() if k != "type"}} for t in request.tools
        ]
    if request.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def _append(messages: list[dict[str, Any]], item: dict[str, Any]) -> None:
    kind = item["type"]
    if kind == "message":
        messages.append({"role": _ROLES[item["role"]], "content": _chat_content(item["content"], item["role"])})
    elif kind == "function_call":
        call = {
            "id": item["call_id"],
            "type": "function",
            "function": {"name": item["name"], "arguments": item["arguments"]},
        }
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant" and "tool_calls" in last:
            last["tool_calls"].append(call)
        elif last is not None and last["role"] == "assistant" and isinstance(last.get("content"), str):
            last["tool_calls"] = [call]
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]})
    # reasoning items: nothing a chat target can read


def _chat_content(content: str | list[dict[str, Any]], role: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if role != "user" or all(p["type"] != "input_image" for p in content):
        return "".join(p.get("text") or p.get("refusal") or "" for p in content)
    parts: list[dict[str, Any]] = []
    for p in content:
        if p["type"] == "input_image":
            parts.append({"type": "image_url", "image_url": {"url": p["image_url"], "detail": p["detail"]}})
        else:
            parts.append({"type": "text", "text": p.get("text") or p.get("refusal") or ""})
    return parts


# --- from chat --------------------------------------------------------------------------------------


def usage_of(usage: dict[str, Any] | None) -> dict[str, Any]:
    """Chat usage as the Responses API words it."""
    usage = usage or {}
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    reasoning = int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion,
    }


def message_item(text: str, item_id: str, status: str = "completed") -> dict[str, Any]:
    content = (
        [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if status != "in_progress" else []
    )
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
    if isinstance(text, str) and text:
        output.append(message_item(text, new_id("msg")))
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
    incomplete = _incomplete(choice.get("finish_reason"))
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
                events += self._text(text)
            for call in delta.get("tool_calls") or []:
                if isinstance(call, dict):
                    events += self._call(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def _text(self, text: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if self.open is None or self.open.kind != "message":
            events += self._close()
            self.open = _Open(len(self.output), new_id("msg"), "message")
            self.output.append(message_item("", self.open.item_id, "in_progress"))
            events.append(self._event("response.output_item.added", output_index=self.open.index, item=self.output[-1]))
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            events.append(self._part("response.content_part.added", part))
        self.open.text += text
        events.append(
            self._event(
                "response.output_text.delta",
                item_id=self.open.item_id,
                output_index=self.open.index,
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return events

    def _part(self, kind: str, part: dict[str, Any]) -> dict[str, Any]:
        assert self.open is not None
        return self._event(kind, item_id=self.open.item_id, output_index=self.open.index, content_index=0, part=part)

    def _call(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        index = int(call.get("index") or 0)
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

    def _close(self) -> list[dict[str, Any]]:
        """Close the item under way, if any."""
        item, self.open = self.open, None
        if item is None:
            return []
        if item.kind == "message":
            done = message_item(item.text, item.item_id)
            self.output[item.index] = done
            part = done["content"][0]
            return [
                self._event(
                    "response.output_text.done",
                    item_id=item.item_id,
                    output_index=item.index,
                    content_index=0,
                    text=item.text,
                    logprobs=[],
                ),
                self._event(
                    "response.content_part.done",
                    item_id=item.item_id,
                    output_index=item.index,
                    content_index=0,
                    part=part,
                ),
                self._event("response.output_item.done", output_index=item.index, item=done),
            ]
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

    def finalize(self, usage: dict[str, Any]) -> dict[str, Any]:
        """The final response object of a complete answer (the open item closed); idempotent, so that it can
        be stored before response.completed goes out."""
        if self.final is None:
            self._closing = self._close()
            incomplete = _incomplete(self.finish_reason)
            status = "incomplete" if incomplete else "completed"
            self.final = self.shell.response(status, list(self.output), usage_of(usage), incomplete=incomplete)
        return self.final

    def completed(self, usage: dict[str, Any]) -> list[dict[str, Any]]:
        """The end of a complete answer: the open item closed, then response.completed (or .incomplete after
        an answer cut off by its token limit)."""
        final = self.finalize(usage)
        events, self._closing = self._closing, []
        kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        return [*events, self._event(kind, response=final)]

    def failed(self, message: str) -> list[dict[str, Any]]:
        """The answer broke and could not be continued: response.failed, never a completed truncated answer."""
        output = [dict(item, status="incomplete") for item in self.output]
        if self.open is not None and self.open.kind == "message":
            output[self.open.index]["content"] = [
                {"type": "output_text", "text": self.open.text, "annotations": [], "logprobs": []}
            ]
        error = {"code": "server_error", "message": message}
        return [self._event("response.failed", response=self.shell.response("failed", output, error=error))]
