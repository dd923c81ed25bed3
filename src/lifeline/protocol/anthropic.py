"""Anthropic's Messages API as an inbound protocol: its wire types and pure translations to and from OpenAI.

Lifeline routes one OpenAI-shaped request whatever the client spoke. A /v1/messages body is validated here
(errors name the Anthropic parameter), translated once into an OpenAI chat body, and the answer is translated
back: a whole `chat.completion` into a `message`, or OpenAI stream chunks into Anthropic's stream events.
Nothing here does I/O. Errors render in Anthropic's shape from here too.

What an OpenAI upstream cannot express is dropped or refused, never faked:
- `thinking`/`redacted_thinking` blocks in the history are dropped (their signatures mean nothing elsewhere);
- `top_k`, `thinking`, `service_tier`, `container`, `mcp_servers` and other unknown fields are dropped;
- server tools (web search, bash, text editor …) and content blocks other than text, image, tool_use and
  tool_result (documents, search results …) are refused with a 400 naming the parameter;
- a tool_result's `is_error` becomes an "Error: " prefix; its images move to the user message that follows;
- `cache_control` is ignored; a final assistant message (a prefill) is sent but not continued.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lifeline.errors import InvalidRequest, LifelineError


class Wire(BaseModel):
    # strict, as Anthropic itself is: "0.7" is not a temperature
    model_config = ConfigDict(extra="allow", strict=True)


# --- content blocks ----------------------------------------------------------------------------------


class TextBlock(Wire):
    type: Literal["text"]
    text: str


class Base64Source(Wire):
    type: Literal["base64"]
    media_type: str
    data: str


class URLSource(Wire):
    type: Literal["url"]
    url: str


class ImageBlock(Wire):
    type: Literal["image"]
    source: Annotated[Base64Source | URLSource, Field(discriminator="type")]


class ToolUseBlock(Wire):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(Wire):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[Annotated[TextBlock | ImageBlock, Field(discriminator="type")]] | None = None
    is_error: bool | None = None


class ThinkingBlock(Wire):
    """Extended thinking from an earlier Anthropic answer, sent back with the history (and dropped)."""

    type: Literal["thinking", "redacted_thinking"]


ContentBlock = Annotated[
    TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock, Field(discriminator="type")
]


class MessageParam(Wire):
    #: "system" turns are a recent addition: instructions given mid-conversation, text only
    role: Literal["user", "assistant", "system"]
    content: str | list[ContentBlock]


# --- tools -------------------------------------------------------------------------------------------


class Tool(Wire):
    #: "custom" or absent for a client tool; server tools (web search, bash …) carry a versioned type
    type: str | None = None
    name: Annotated[str, Field(min_length=1)]
    description: str | None = None
    #: required for a client tool; checked in translation, where the tool's type is known
    input_schema: dict[str, Any] | None = None


class ToolChoiceAuto(Wire):
    type: Literal["auto"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceAny(Wire):
    type: Literal["any"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceTool(Wire):
    type: Literal["tool"]
    name: str
    disable_parallel_tool_use: bool | None = None


class ToolChoiceNone(Wire):
    type: Literal["none"]


ToolChoice = Annotated[ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone, Field(discriminator="type")]


# --- the request -------------------------------------------------------------------------------------


class Metadata(Wire):
    user_id: str | None = None


class MessagesRequest(Wire):
    model: str
    messages: Annotated[list[MessageParam], Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)]
    metadata: Metadata | None = None
    stop_sequences: list[str] | None = None
    stream: bool | None = None
    system: str | list[TextBlock] | None = None
    temperature: Annotated[float, Field(ge=0, le=1)] | None = None
    tool_choice: ToolChoice | None = None
    tools: list[Tool] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None


def validate_messages_request(data: dict[str, Any]) -> MessagesRequest:
    try:
        return MessagesRequest.model_validate(data)
    except ValidationError as exc:
        raise _invalid(data, exc) from None


def _invalid(data: dict[str, Any], exc: ValidationError) -> InvalidRequest:
    errors = exc.errors(include_url=False, include_input=False)
    # A union reports one error per member; the deepest one is where the input went furthest, so the most
    # telling (a bad field inside a text block, rather than "not a string" for the whole content).
    deepest = max(len(e["loc"]) for e in errors)
    err = next(e for e in errors if len(e["loc"]) == deepest)
    missing = err["type"] == "missing"
    param = _param(data, err["loc"], missing)
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        param = f"{param}.type"  # a block (or a source, a tool_choice) whose type is unknown or absent
        missing = err["type"] == "union_tag_not_found"
    if missing:
        return InvalidRequest(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    # Union members that failed at the same place (content neither a string nor a list) are all worth naming.
    alternatives = [e["msg"] for e in errors if e is not err and _param(data, e["loc"], False) == param]
    message = " or ".join([err["msg"], *(m.removeprefix("Input should be ") for m in alternatives)])
    code = "invalid_type" if err["type"].endswith("_type") else "invalid_value"
    return InvalidRequest(f"Invalid value for '{param}': {message}.", param=param, code=code)


def _param(data: Any, loc: tuple[int | str, ...], missing: bool) -> str:
    """The parameter a pydantic location points at, in the client's terms: the location is walked through
    the input itself, so the union members' tags pydantic adds ("str", "list[...]", a block's type) drop out."""
    out = ""
    node = data
    for i, part in enumerate(loc):
        if isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node):
            out += f"[{part}]"
            node = node[part]
        elif isinstance(part, str) and isinstance(node, dict) and (part in node or (missing and i == len(loc) - 1)):
            out += f".{part}" if out else part
            node = node.get(part)
    return out


# --- Anthropic request → OpenAI chat body -----------------------------------------------------------


def to_chat_body(request: MessagesRequest) -> dict[str, Any]:
    """The OpenAI chat-completions body that asks an upstream the same question."""
    messages: list[dict[str, Any]] = []
    system = _system_text(request.system)
    if system:
        messages.append({"role": "system", "content": system})
    for i, message in enumerate(request.messages):
        if message.role == "user":
            messages.extend(_user_messages(message.content, i))
        elif message.role == "assistant":
            messages.append(_assistant_message(message.content, i))
        else:
            messages.append({"role": "system", "content": _system_turn(message.content, i)})
    body: dict[str, Any] = {"model": request.model, "messages": messages, "max_tokens": request.max_tokens}
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop_sequences:
        body["stop"] = list(request.stop_sequences)
    if request.stream:
        body["stream"] = True
    if request.metadata is not None and request.metadata.user_id:
        body["user"] = request.metadata.user_id
    if request.tools:
        body["tools"] = _tools(request.tools)
        # OpenAI refuses a tool_choice without tools, so one without tools is dropped rather than forwarded.
        if request.tool_choice is not None:
            body.update(_tool_choice(request.tool_choice, request.tools))
    return body


def _system_text(system: str | list[TextBlock] | None) -> str | None:
    if isinstance(system, list):
        # Plain text rather than parts: some OpenAI-compatible servers take only a string as system content.
        return "\n\n".join(block.text for block in system)
    return system


def _system_turn(content: str | list[Any], index: int) -> str:
    if isinstance(content, str):
        return content
    for j, block in enumerate(content):
        if not isinstance(block, TextBlock):
            raise _misplaced(index, j, block.type, "user or assistant")
    return "\n\n".join(block.text for block in content)


def _user_messages(content: str | list[Any], index: int) -> list[dict[str, Any]]:
    """One Anthropic user turn as OpenAI messages: a `tool` message per tool result, in order, then the
    user's own text and images (OpenAI wants the tool answers right after the assistant's calls)."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        if isinstance(block, ToolResultBlock):
            text, images = _tool_result(block)
            out.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": text})
            parts.extend(images)  # a tool message carries text only
        elif isinstance(block, TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ImageBlock):
            parts.append(_image_part(block))
        elif isinstance(block, ToolUseBlock):
            raise _misplaced(index, j, "tool_use", "assistant")
    if parts:
        only_text = len(parts) == 1 and parts[0]["type"] == "text"
        out.append({"role": "user", "content": parts[0]["text"] if only_text else parts})
    return out or [{"role": "user", "content": ""}]


def _tool_result(block: ToolResultBlock) -> tuple[str, list[dict[str, Any]]]:
    images: list[dict[str, Any]] = []
    if block.content is None:
        text = ""
    elif isinstance(block.content, str):
        text = block.content
    else:
        text = "\n".join(b.text for b in block.content if isinstance(b, TextBlock))
        images = [_image_part(b) for b in block.content if isinstance(b, ImageBlock)]
    if block.is_error:
        # OpenAI has no error flag on a tool message; the model still needs to know the call failed.
        text = f"Error: {text}" if text else "Error"
    return text, images


def _assistant_message(content: str | list[Any], index: int) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ToolUseBlock):
            arguments = orjson.dumps(block.input).decode()
            calls.append({"id": block.id, "type": "function", "function": {"name": block.name, "arguments": arguments}})
        elif isinstance(block, ImageBlock):
            raise _misplaced(index, j, "image", "user")
        elif isinstance(block, ToolResultBlock):
            raise _misplaced(index, j, "tool_result", "user")
    message: dict[str, Any] = {"role": "assistant", "content": "\n".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _misplaced(index: int, block: int, kind: str, role: str) -> InvalidRequest:
    param = f"messages[{index}].content[{block}].type"
    return InvalidRequest(f"Invalid value for '{param}': {kind} blocks belong in {role} messages.", param=param)


def _image_part(block: ImageBlock) -> dict[str, Any]:
    source = block.source
    url = f"data:{source.media_type};base64,{source.data}" if isinstance(source, Base64Source) else source.url
    return {"type": "image_url", "image_url": {"url": url}}


def _tools(tools: list[Tool]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        if tool.type not in (None, "custom"):
            param = f"tools[{i}].type"
            raise InvalidRequest(
                f"Invalid value for '{param}': the server tool '{tool.type}' is not supported here; "
                "only client tools (with an input_schema) are.",
                param=param,
                code="unsupported_parameter",
            )
        if tool.input_schema is None:
            param = f"tools[{i}].input_schema"
            raise InvalidRequest(
                f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
            )
        function: dict[str, Any] = {"name": tool.name}
        if tool.description is not None:
            function["description"] = tool.description
        function["parameters"] = tool.input_schema
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any, tools: list[Tool]) -> dict[str, Any]:
    out: dict[str, Any]
    if isinstance(choice, ToolChoiceAuto):
        out = {"tool_choice": "auto"}
    elif isinstance(choice, ToolChoiceAny):
        out = {"tool_choice": "required"}
    elif isinstance(choice, ToolChoiceTool):
        if not any(tool.name == choice.name for tool in tools):
            raise InvalidRequest(
                f"Invalid value for 'tool_choice.name': no tool is named '{choice.name}'.", param="tool_choice.name"
            )
        out = {"tool_choice": {"type": "function", "function": {"name": choice.name}}}
    else:
        return {"tool_choice": "none"}
    if choice.disable_parallel_tool_use:
        out["parallel_tool_calls"] = False
    return out


# --- OpenAI answer → Anthropic message --------------------------------------------------------------


def to_message(
    completion: dict[str, Any],
    *,
    message_id: str,
    model: str,
    usage: dict[str, Any],
    stop_sequences: list[str] | None,
) -> dict[str, Any]:
    """An Anthropic `message` from an OpenAI `chat.completion` (its first choice; Anthropic has no `n`)."""
    choices = completion.get("choices")
    choice = _object(choices[0]) if isinstance(choices, list) and choices else {}
    message = _object(choice.get("message"))
    content: list[dict[str, Any]] = []
    text = _text_of(message.get("content")) or _text_of(message.get("refusal"))
    if text:
        content.append({"type": "text", "text": text})
    for position, call in enumerate(message.get("tool_calls") or ()):
        if isinstance(call, dict):
            content.append(_tool_use_block(call, f"{message_id}_{position}"))
    stop_reason, stop_sequence = stop_reason_for(
        choice.get("finish_reason"),
        choice.get("stop_reason"),
        stop_sequences,
        tool_use=any(block["type"] == "tool_use" for block in content),
    )
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": to_usage(usage),
    }


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _tool_use_block(call: dict[str, Any], fallback_id: str) -> dict[str, Any]:
    function = _object(call.get("function"))
    return {
        "type": "tool_use",
        "id": call.get("id") or f"toolu_{fallback_id}",
        "name": function.get("name") or "",
        "input": tool_input(function.get("arguments")),
    }


def tool_input(arguments: Any) -> dict[str, Any]:
    """A tool call's arguments as Anthropic's `input` object. Arguments that are not a JSON object (a model
    that wrote broken JSON) are kept whole under `_raw_arguments` rather than silently lost."""
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"_raw_arguments": arguments}


def stop_reason_for(
    finish_reason: Any, matched: Any, stop_sequences: list[str] | None, *, tool_use: bool
) -> tuple[str, str | None]:
    """Anthropic's (stop_reason, stop_sequence) for an OpenAI finish_reason.

    OpenAI does not say which stop string ended an answer; vLLM-style servers do, in the choice's
    `stop_reason`. Without it a stop is reported as `end_turn`. `content_filter` becomes `refusal`, the
    reason Anthropic gives when its own safety filters end an answer. Some servers finish a tool call with
    "stop": tool_use blocks decide, since agent loops look for `tool_use` to run the tools.
    """
    if finish_reason in ("tool_calls", "function_call") or (tool_use and finish_reason in (None, "stop")):
        return "tool_use", None
    if finish_reason == "length":
        return "max_tokens", None
    if finish_reason == "content_filter":
        return "refusal", None
    if finish_reason == "stop" and isinstance(matched, str) and stop_sequences and matched in stop_sequences:
        return "stop_sequence", matched
    return "end_turn", None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def to_usage(usage: dict[str, Any]) -> dict[str, int]:
    """Anthropic usage from OpenAI usage. Anthropic counts cache reads apart from `input_tokens`."""
    prompt = _count(usage.get("prompt_tokens"))
    details = usage.get("prompt_tokens_details")
    cached = min(_count(details.get("cached_tokens")), prompt) if isinstance(details, dict) else 0
    out = {"input_tokens": prompt - cached, "output_tokens": _count(usage.get("completion_tokens"))}
    if cached:
        out["cache_read_input_tokens"] = cached
    return out


# --- OpenAI stream chunks → Anthropic stream events -------------------------------------------------


class StreamTranslator:
    """Translates one streamed answer (the first choice): OpenAI chunks in, Anthropic events out.

    Content blocks open as content of their kind arrives and close when another kind starts, so text and
    each tool call get their own block; tool-call argument pieces become `input_json_delta`s. The stop
    reason is held until `finish`, because OpenAI sends usage after the finishing chunk.
    """

    def __init__(self, message_id: str, model: str, stop_sequences: list[str] | None) -> None:
        self.message_id = message_id
        self.model = model
        self.stop_sequences = stop_sequences
        self._blocks = 0  # blocks opened so far; the next one's index
        self._open: int | None = None  # index of the open block
        self._open_text = False  # whether the open block is text
        self._tools: dict[int, int] = {}  # OpenAI tool-call index → block index
        self._finish_reason: Any = None
        self._matched: Any = None

    def start(self, input_tokens: int) -> list[dict[str, Any]]:
        # The prompt's size is only estimated here: OpenAI reports usage at the end, and message_delta
        # then carries the real count (clients take a message_delta's usage as the final total).
        message: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 0},
        }
        return [{"type": "message_start", "message": message}]

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                for key in ("content", "refusal"):
                    text = delta.get(key)
                    if isinstance(text, str) and text:
                        events += self._text(text)
                for call in delta.get("tool_calls") or ():
                    if isinstance(call, dict):
                        events += self._tool_call(call)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
            if isinstance(choice.get("stop_reason"), str):
                self._matched = choice["stop_reason"]
        return events

    def finish(self, usage: dict[str, Any]) -> list[dict[str, Any]]:
        stop_reason, stop_sequence = stop_reason_for(
            self._finish_reason, self._matched, self.stop_sequences, tool_use=bool(self._tools)
        )
        return [
            *self._close(),
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                "usage": to_usage(usage),
            },
            {"type": "message_stop"},
        ]

    def _text(self, text: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if self._open is None or not self._open_text:
            events += self._open_block({"type": "text", "text": ""}, text=True)
        events.append(
            {"type": "content_block_delta", "index": self._open, "delta": {"type": "text_delta", "text": text}}
        )
        return events

    def _tool_call(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        position = call["index"] if isinstance(call.get("index"), int) else 0
        function = _object(call.get("function"))
        index = self._tools.get(position)
        if index is None:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": call.get("id") or f"toolu_{self.message_id}_{position}",
                "name": function.get("name") or "",
                "input": {},
            }
            events += self._open_block(block, text=False)
            index = self._tools[position] = self._blocks - 1
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            # A piece for a call whose block was closed (calls interleaved) still names its own block.
            events.append(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": arguments},
                }
            )
        return events

    def _open_block(self, block: dict[str, Any], *, text: bool) -> list[dict[str, Any]]:
        events = self._close()
        self._open, self._open_text = self._blocks, text
        self._blocks += 1
        events.append({"type": "content_block_start", "index": self._open, "content_block": block})
        return events

    def _close(self) -> list[dict[str, Any]]:
        if self._open is None:
            return []
        index, self._open = self._open, None
        return [{"type": "content_block_stop", "index": index}]


# --- errors ------------------------------------------------------------------------------------------

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type(status: int, code: str | None = None) -> str:
    """Anthropic's error type for a Lifeline error, by its status (and the code that marks an overload)."""
    if code == "overloaded":
        return "overloaded_error"
    return _ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def error_event(error_kind: str, message: str, request_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "error", "error": {"type": error_kind, "message": message}}
    if request_id is not None:
        body["request_id"] = request_id
    return body


def error_body(error: LifelineError, request_id: str | None = None) -> dict[str, Any]:
    """The Anthropic error envelope; the parameter is named in the message, since the shape has no field for it."""
    return error_event(error_type(error.status, error.code), error.message, request_id)
