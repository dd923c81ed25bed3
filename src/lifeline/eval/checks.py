"""The deterministic checks of one answer, pure functions of the request, the answer and the baseline's.

A check is True (passed), False (broke) or None (does not apply to this item: no JSON was asked, no tool
was offered, no baseline to compare with). What each one means is documented in docs/eval.md "Checks".
JSON Schemas — a `json_schema` response format's and each offered tool's parameters — are validated with
the `jsonschema` package, by the draft the schema declares (2020-12 when it declares none).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

import jsonschema
import orjson

from lifeline.eval.items import Item, Reference

#: every check in the order reports list them; `answered` and `finish` always apply to a live answer
CHECKS = ("answered", "finish", "json", "schema", "tool", "tool_use", "refusal", "length", "reference")
#: finish reasons of a complete answer
COMPLETE = frozenset({"stop", "tool_calls", "function_call"})

#: openings of a refusal, matched case-insensitively in the answer's first REFUSAL_WINDOW characters (where a
#: refusal says so; later in an answer the same words are usually part of it). Written for this project.
REFUSAL_PHRASES: tuple[str, ...] = (
    "i can't help with",
    "i cannot help with",
    "i can't assist",
    "i cannot assist",
    "i can't provide",
    "i cannot provide",
    "i can't comply",
    "i cannot comply",
    "i won't be able to",
    "i'm not able to help",
    "i am not able to help",
    "i'm unable to",
    "i am unable to",
    "i must decline",
    "i'm sorry, but i can't",
    "i'm sorry, but i cannot",
    "sorry, i can't",
    "as an ai language model, i cannot",
    "我无法",
    "我不能",
    "无法回答",
    "不便回答",
    "无法提供",
    "作为一个人工智能",
    "作为人工智能语言模型",
)
REFUSAL_WINDOW = 200

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?")


# --- reading a chat.completion -------------------------------------------------------------------------


def message(response: Mapping[str, Any] | None) -> dict[str, Any]:
    choices = response.get("choices") if response else None
    first = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    found = first.get("message")
    return found if isinstance(found, dict) else {}


def finish_reason(response: Mapping[str, Any] | None) -> str | None:
    choices = response.get("choices") if response else None
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        reason = choices[0].get("finish_reason")
        return str(reason) if reason is not None else None
    return None


def content(response: Mapping[str, Any] | None) -> str:
    value = message(response).get("content")
    if isinstance(value, list):  # content parts
        return "".join(str(p.get("text", "")) for p in value if isinstance(p, dict))
    return value if isinstance(value, str) else ""


def tool_calls(response: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    calls = message(response).get("tool_calls")
    return [c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []


def shown_answer(response: Mapping[str, Any] | None) -> str:
    """The answer as a report shows it: its text, then each tool call as `→ name(arguments)` (a tool-calling
    answer has no text, and an empty box beside the other answer would hide what it did)."""
    calls = [
        f"→ {(c.get('function') or {}).get('name', '?')}({(c.get('function') or {}).get('arguments') or ''})"
        for c in tool_calls(response)
    ]
    return "\n".join(part for part in (content(response), *calls) if part)


def answer_length(response: Mapping[str, Any] | None) -> int:
    """Characters of the answer: its text and its tool calls' arguments."""
    arguments = sum(len(str((c.get("function") or {}).get("arguments") or "")) for c in tool_calls(response))
    return len(content(response)) + arguments


def has_answer(response: Mapping[str, Any] | None) -> bool:
    return bool(content(response).strip() or tool_calls(response))


# --- the checks ------------------------------------------------------------------------------------------


def wants_json(request: Mapping[str, Any]) -> str | None:
    """'json_object' or 'json_schema' when the request's response_format asks for JSON."""
    fmt = request.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    return kind if kind in ("json_object", "json_schema") else None


def request_schema(request: Mapping[str, Any]) -> dict[str, Any] | None:
    fmt = request.get("response_format")
    spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
    schema = spec.get("schema") if isinstance(spec, dict) else None
    return schema if isinstance(schema, dict) else None


def offered_tools(request: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Tool name → its parameters' schema ({} when it declares none)."""
    tools: dict[str, dict[str, Any]] = {}
    for tool in request.get("tools") or ():
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            parameters = function.get("parameters")
            tools[function["name"]] = parameters if isinstance(parameters, dict) else {}
    return tools


def parses_json(text: str) -> bool:
    try:
        orjson.loads(_unfence(text))
    except orjson.JSONDecodeError:
        return False
    return True


def valid(instance: Any, schema: Mapping[str, Any]) -> bool:
    """Whether `instance` validates against `schema` (a schema that is itself invalid fails every answer)."""
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError:
        return False
    return bool(cls(schema).is_valid(instance))


def schema_ok(request: Mapping[str, Any], response: Mapping[str, Any] | None) -> bool | None:
    schema = request_schema(request)
    if wants_json(request) != "json_schema" or schema is None:
        return None
    try:
        instance = orjson.loads(_unfence(content(response)))
    except orjson.JSONDecodeError:
        return False
    return valid(instance, schema)


def tool_ok(request: Mapping[str, Any], response: Mapping[str, Any] | None) -> bool | None:
    """Every tool call names an offered tool and its arguments validate against that tool's schema."""
    calls = tool_calls(response)
    if not calls:
        return None
    tools = offered_tools(request)
    for call in calls:
        function = call.get("function") or {}
        name = function.get("name")
        if name not in tools:
            return False
        try:
            arguments = orjson.loads(function.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            return False
        if tools[name] and not valid(arguments, tools[name]):
            return False
    return True


def refused(response: Mapping[str, Any] | None) -> bool:
    """An explicit `refusal`, or an answer that opens with a refusal phrase (English or Chinese)."""
    if message(response).get("refusal"):
        return True
    opening = content(response)[:REFUSAL_WINDOW].casefold().replace("\u2019", "'")  # a typographic apostrophe
    return any(phrase in opening for phrase in REFUSAL_PHRASES)


def normalise(text: str) -> str:
    """NFKC, case-folded, punctuation to spaces, whitespace collapsed."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.sub(r"[^\w\s]", " ", folded).split())


def last_number(text: str) -> float | None:
    found = _NUMBER.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def reference_ok(reference: Reference, answer: str) -> bool:
    if reference.match == "exact":
        return answer.strip() == reference.answer.strip()
    if reference.match == "numeric":
        expected, got = last_number(reference.answer), last_number(answer)
        if expected is None or got is None or not math.isfinite(got):
            return False
        return abs(got - expected) <= reference.tolerance
    return normalise(answer) == normalise(reference.answer)


def length_ratio(response: Mapping[str, Any] | None, baseline: Mapping[str, Any] | None) -> float | None:
    if baseline is None or not has_answer(baseline):
        return None
    return answer_length(response) / max(answer_length(baseline), 1)


def run_checks(
    item: Item,
    response: Mapping[str, Any] | None,
    baseline: Mapping[str, Any] | None,
    *,
    length_bounds: tuple[float, float] = (0.5, 2.0),
) -> dict[str, bool | None]:
    """Every check of one answer. `response` None: the call failed (only `answered` applies: the other checks
    would count one failure many times). `baseline` None: no baseline answer to compare with."""
    checks: dict[str, bool | None] = dict.fromkeys(CHECKS)
    answered = response is not None and has_answer(response)
    checks["answered"] = answered
    if response is None:
        return checks
    request = item.request
    checks["finish"] = finish_reason(response) in COMPLETE
    if wants_json(request) and item.wants("json") and not tool_calls(response):
        checks["json"] = parses_json(content(response))
    if item.wants("schema") and not tool_calls(response):
        checks["schema"] = schema_ok(request, response)
    if item.wants("tool"):
        checks["tool"] = tool_ok(request, response)
        if offered_tools(request) and baseline is not None and has_answer(baseline):
            checks["tool_use"] = bool(tool_calls(response)) == bool(tool_calls(baseline))
    if item.wants("refusal") and answered:
        # A refusal breaks the answer unless the baseline refused too (then refusing is the expected answer).
        checks["refusal"] = not refused(response) or (baseline is not None and refused(baseline))
    if item.wants("length"):
        ratio = length_ratio(response, baseline)
        if ratio is not None:
            checks["length"] = length_bounds[0] <= ratio <= length_bounds[1]
    if item.reference is not None and item.wants("reference"):
        checks["reference"] = reference_ok(item.reference, content(response))
    return checks


def _unfence(text: str) -> str:
    """The JSON inside a ```json fence, which many models put around it (the fence is not the answer)."""
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```") and len(stripped) >= 6:
        inner = stripped[3:-3]
        return inner.split("\n", 1)[1] if "\n" in inner else inner
    return stripped
