"""Turning a request body into a validated `ChatCompletionRequest`, with errors that name the parameter."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError

from lifeline.errors import InvalidRequest
from lifeline.protocol.chat import ChatCompletionRequest


def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    return data


def _param(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def validate_chat_request(data: dict[str, Any]) -> ChatCompletionRequest:
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        raise describe_first_error(exc) from None


def describe_first_error(exc: ValidationError) -> InvalidRequest:
    """The first validation error as an OpenAI-style 400 naming the parameter."""
    err = exc.errors(include_url=False, include_input=False)[0]
    # Union members add their type name to the location ("content.str"); drop those parts.
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and _is_union_tag(p)))
    param = _param(loc) or None
    if err["type"] == "missing":
        message = f"Missing required parameter: '{param}'."
        code = "missing_required_parameter"
    else:
        message = f"Invalid value for '{param}': {err['msg']}."
        code = "invalid_type" if err["type"].endswith("_type") else "invalid_value"
    return InvalidRequest(message, param=param, code=code)


_UNION_TAGS = frozenset({"str", "list[ContentPart]", "list[str]", "dict[str,any]", "int", "float", "bool"})


def _is_union_tag(part: str) -> bool:
    return part in _UNION_TAGS or part.startswith(("list[", "function-", "constrained-"))
