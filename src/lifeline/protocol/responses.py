"""OpenAI's Responses API as an inbound protocol, translated onto chat completions; pure, no I/O.

A /v1/responses body is validated here (each error names the Responses parameter, e.g. `input[2].type`),
translated once into an OpenAI chat body (`to_chat_body`), and the answer is translated back: a whole
`chat.completion` into a `response` object (`to_response`), or the relayed chat chunks into the Responses
stream events (protocol/response_objects.py).

Translated: `input` (a string, or message / function_call / function_call_output items), `instructions`
(a system message first), function tools (flat ↔ nested) and `tool_choice`, `text.format` (json_schema,
json_object), `max_output_tokens`, `temperature`, `top_p`, `parallel_tool_calls`, `user`; `metadata` and
`store` are the gateway's own. `reasoning` items in the input are dropped (nothing a chat target can read).
Refused with a 400: items and parts no chat target can carry (file inputs, item references), `background`,
`conversation` and `prompt`. Built-in tools (web search, file search, code interpreter …) are kept aside
(`builtin_tools`): only a target that speaks the Responses API natively can run them, so such a request goes
only to those (routing/capabilities.py), as the body `native_body` makes.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

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
    #: the built-in tools offered (as sent), which only a native Responses target runs
    builtin_tools: list[dict[str, Any]] = field(default_factory=list)


def _bad(param: str, message: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(f"Invalid value for '{param}': {message}.", param=param, code=code)


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _optional(
    data: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str, within: str | None = None
) -> Any:
    """`data[name]` when present and of `kind`; a 400 naming it (inside `within`) otherwise."""
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _tuple(kind)):
        param = name if within is None else f"{within}.{name}"
        raise _bad(param, f"expected {what}, got {_type_name(value)}", "invalid_type")
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
    if previous == "":
        raise _bad("previous_response_id", "expected a response id, got an empty string")
    metadata = _metadata(data.get("metadata"))
    tools, builtin = _tools(data.get("tools"))
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
        builtin_tools=builtin,
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
    if isinstance(choice, dict) and choice.get("type") in BUILT_IN_TOOLS:
        pass  # a built-in tool forced: only a native target serves the request, and reads it there
    elif choice is not None:
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
        _optional(item, "id", str, "a string", param)
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


def _tools(value: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The function tools, checked and in their normal form, and the built-in tools as they were sent."""
    if value is None:
        return [], []
    if not isinstance(value, list):
        raise _bad("tools", f"expected an array, got {_type_name(value)}", "invalid_type")
    tools, builtin = [], []
    for i, tool in enumerate(value):
        param = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise _bad(param, "expected a tool (an object)", "invalid_type")
        kind = tool.get("type")
        if kind in BUILT_IN_TOOLS:
            builtin.append(tool)
            continue
        if kind != "function":
            raise _bad(
                f"{param}.type",
                f"unsupported tool type {kind!r} (supported: function, and on native Responses targets the "
                f"built-in tools {', '.join(sorted(BUILT_IN_TOOLS))})",
            )
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise _bad(f"{param}.name", "expected the function's name")
        parameters = tool.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise _bad(f"{param}.parameters", "expected a JSON schema (an object)", "invalid_type")
        _optional(tool, "description", str, "a string", param)
        _optional(tool, "strict", bool, "a boolean", param)
        tools.append({k: tool[k] for k in ("type", "name", "description", "parameters", "strict") if k in tool})
    return tools, builtin


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
        _optional(value, "strict", bool, "a boolean", "text.format")
        _optional(value, "description", str, "a string", "text.format")
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


# --- natively ---------------------------------------------------------------------------------------

#: request fields the gateway answers itself, never sent to a native target: the conversation is resolved
#: here (previous_response_id) and stored here (store); models / fallbacks name further aliases to try
_GATEWAY_FIELDS = frozenset({"previous_response_id", "store", "models", "fallbacks"})


def native_body(data: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
    """The Responses body for a target that speaks the API natively: the client's own (unknown fields, built-in
    tools and `include`, `reasoning` … included) with the conversation so far (`history`, from
    previous_response_id) before its input, and `store: false` — Lifeline keeps the response, so that the
    next turn can go to any target, native or translated."""
    body = {k: v for k, v in data.items() if k not in _GATEWAY_FIELDS}
    if history:
        raw = data["input"]
        items = [{"type": "message", "role": "user", "content": raw}] if isinstance(raw, str) else list(raw)
        # a stored reasoning item is only its type: nothing an upstream could read
        body["input"] = [item for item in history if item["type"] != "reasoning"] + items
    body["store"] = False
    return body
