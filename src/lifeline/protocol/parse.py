"""Turning a request body into a validated `ChatCompletionRequest`, with errors that name the parameter."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError

from lifeline.errors import InvalidRequest
from lifeline.protocol.chat import ChatCompletionRequest

#: how deeply a request body's arrays and objects may nest. orjson reads up to 1,024 levels but writes only
#: 254, so a body between the two was read, then failed when forwarded (a 500); this leaves room for the
#: levels a translation to another provider's format adds, and is far beyond any real request.
MAX_JSON_DEPTH = 128


def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    # Every level of nesting opens with a bracket: a body with few of them needs no walk (the usual case).
    if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH:
        for name, value in data.items():
            if _deeper_than(value, MAX_JSON_DEPTH - 1):
                raise InvalidRequest(
                    f"'{name}' is nested more than {MAX_JSON_DEPTH} levels deep.", param=name, code="json_too_deep"
                )
    return data


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than `limit` levels deep in `value` (a level for `value` itself
    when it is one). Iterative, so no recursion limit is met on the way."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


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
    errors = exc.errors(include_url=False, include_input=False)
    # Union members add their type name to the location ("content.str"); drop those parts.
    locs = [tuple(p for p in e["loc"] if not (isinstance(p, str) and _is_union_tag(p))) for e in errors]
    # A union reports one error per member: of those at the first error's place, the deepest is where the
    # input went furthest ("content[1].text" is not a string, rather than "content" is not a string).
    err, loc = errors[0], locs[0]
    for other, other_loc in zip(errors, locs, strict=True):
        if other_loc[: len(locs[0])] == locs[0] and len(other_loc) > len(loc):
            err, loc = other, other_loc
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
