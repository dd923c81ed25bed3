"""A stored response's input items as the Responses API lists them (GET /v1/responses/{id}/input_items); pure.

The stored input is the conversation the response answered — the earlier inputs and outputs a
`previous_response_id` brought in, then the request's own input — in the normal form of protocol/
responses.py. Each becomes the item the API returns: messages with their content as parts (a user's text as
`input_text`, an assistant's as `output_text`), function calls and their outputs, each with `status:
completed` and an id. Items the client sent without an id get one derived from the response's id and their
place, so that the ids stay the same from one listing to the next (the `after` cursor relies on it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from lifeline.errors import InvalidRequest

_PREFIXES = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}
#: what a function call and its output carry besides id, type and status
_FIELDS = {"function_call": ("call_id", "name", "arguments"), "function_call_output": ("call_id", "output")}
MAX_LIMIT = 100
DEFAULT_LIMIT = 20


@dataclass(frozen=True, slots=True)
class ListQuery:
    """A listing's parameters: how many, in which order, after which item."""

    limit: int = DEFAULT_LIMIT
    order: Literal["asc", "desc"] = "desc"
    after: str | None = None


def list_query(params: Mapping[str, str]) -> ListQuery:
    """The query string of a listing, checked: `limit` 1-100 (default 20), `order` asc or desc (default desc,
    as OpenAI's), `after` an item id; `include` is accepted and has nothing to add."""
    raw = params.get("limit")
    limit = DEFAULT_LIMIT
    if raw is not None:
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
            raise InvalidRequest(
                f"Invalid value for 'limit': expected an integer from 1 to {MAX_LIMIT}, got {raw[:40]!r}.",
                param="limit",
                code="invalid_value",
            )
        limit = int(raw)
    order = params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest(
            f"Invalid value for 'order': expected asc or desc, got {order[:40]!r}.", param="order", code="invalid_value"
        )
    return ListQuery(limit, "asc" if order == "asc" else "desc", params.get("after") or None)


def input_item_list(response_id: str, stored: list[dict[str, Any]], query: ListQuery) -> dict[str, Any]:
    """One page of a stored response's input items, as the API's `list` object."""
    items = [as_item(response_id, i, item) for i, item in enumerate(stored)]
    if query.order == "desc":
        items.reverse()
    if query.after is not None:
        position = next((i for i, item in enumerate(items) if item["id"] == query.after), None)
        if position is None:
            raise InvalidRequest(
                f"Invalid value for 'after': no input item of response '{response_id}' has the id "
                f"'{query.after[:80]}'.",
                param="after",
                code="invalid_value",
            )
        items = items[position + 1 :]
    page = items[: query.limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > len(page),
    }


def as_item(response_id: str, index: int, item: dict[str, Any]) -> dict[str, Any]:
    """One stored input item as the API lists it."""
    kind = str(item.get("type", "message"))
    item_id = item.get("id") if isinstance(item.get("id"), str) else _derived_id(response_id, index, kind)
    if kind == "message":
        role = item.get("role", "user")
        part = "output_text" if role == "assistant" else "input_text"
        content = item.get("content")
        if isinstance(content, str):
            content = [{"type": part, "text": content}]
        if role == "assistant":
            content = [{**p, "annotations": p.get("annotations", [])} for p in content or ()]
        return {"id": item_id, "type": "message", "role": role, "status": "completed", "content": content or []}
    if kind in _FIELDS:
        return {"id": item_id, "type": kind, "status": "completed", **{k: item.get(k) for k in _FIELDS[kind]}}
    return {"id": item_id, "type": kind, "summary": []}  # reasoning: its content is not kept


def _derived_id(response_id: str, index: int, kind: str) -> str:
    digest = hashlib.blake2b(f"{response_id}:{index}".encode(), digest_size=16).hexdigest()
    return f"{_PREFIXES.get(kind, 'item')}_{digest}"
