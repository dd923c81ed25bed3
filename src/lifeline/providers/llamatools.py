"""Tool calls and schema-bound answers on the embedded engine, by grammar-constrained decoding.

The engine is told about the tools in a system message and answers calls as
`<tool_call>[{"name": …, "arguments": {…}}]</tool_call>` (the form SmolLM2 was tuned on; tool results come
back as `<tool_response>` user turns). A GBNF grammar built from the tools' JSON schemas
(llama-cpp-python's JSON-schema converter) constrains the sampling, so every call that completes names an
offered tool and carries arguments valid for its schema: with `tool_choice` auto the grammar's root is a
call OR a text answer (text that does not start with `<`), `required` allows calls only, a named function
only that one. `CallReader` turns the generated text back into OpenAI deltas: text as content, each call —
once the closing tag is out and its arguments are checked against the schema, so that no half or invalid
call is ever sent — as one tool-call delta. One call per answer unless the client sets
`parallel_tool_calls: true` (a small model tends to repeat a call until it runs out of tokens). How well the model
chooses (whether to call, which tool, which values) is the model's own quality.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any, TypeGuard

import jsonschema
import orjson

from lifeline.errors import Untranslatable
from lifeline.protocol.chat import ChatCompletionRequest

OPEN, CLOSE = "<tool_call>", "</tool_call>"


@dataclass(frozen=True, slots=True)
class ToolPlan:
    """How one request with tools is generated: the instructions added to the prompt and the grammar."""

    instructions: str
    grammar: str
    #: the answer must be tool calls (tool_choice required or a named function)
    forced: bool
    #: each callable tool's parameters schema, by name, to check a call against before it is sent
    schemas: dict[str, dict[str, Any]]
    #: under `auto`: the calls the conversation already holds with their results (`call_key`), and the
    #: grammar of a text (or JSON) answer alone — a small model tends to repeat the call it has just seen
    #: answered; such a repeat is dropped and the engine answers instead
    answered: frozenset[str] = frozenset()
    answer_grammar: str | None = None


def call_key(name: str, arguments: Any) -> str:
    return name + "\n" + orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS).decode()


def _answered(request: ChatCompletionRequest) -> frozenset[str]:
    results = {m.tool_call_id for m in request.messages if m.role == "tool"}
    keys = set()
    for message in request.messages:
        for call in message.tool_calls or ():
            if call.id in results:
                try:
                    keys.add(call_key(call.function.name, orjson.loads(call.function.arguments or "{}")))
                except orjson.JSONDecodeError:
                    continue
    return frozenset(keys)


def _text(content: Any) -> str:
    """Content-part arrays become plain text: the embedded models read text only."""
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text")


def _calls_text(calls: list[Any]) -> str:
    written = []
    for call in calls:
        function = (call.get("function") if isinstance(call, dict) else None) or {}
        raw = function.get("arguments") or "{}"
        try:
            arguments = orjson.loads(raw)
        except orjson.JSONDecodeError:
            arguments = raw
        written.append({"name": function.get("name", ""), "arguments": arguments})
    return OPEN + orjson.dumps(written).decode() + CLOSE


def render_history(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation as role/text messages any chat template renders: an assistant's tool calls become
    the `<tool_call>` text the engine itself writes, and tool results a user turn of `<tool_response>`s
    (consecutive results in one turn, so that user and assistant turns still alternate)."""
    names = {
        call.get("id"): (call.get("function") or {}).get("name", "")
        for message in messages
        for call in message.get("tool_calls") or ()
        if isinstance(call, dict)
    }
    out: list[dict[str, Any]] = []
    for message in messages:
        role = message["role"]
        text = _text(message.get("content"))
        if role in ("tool", "function"):
            name = message.get("name") or names.get(message.get("tool_call_id"), "")
            response = (
                f"<tool_response>\n{name}: {text}\n</tool_response>"
                if name
                else f"<tool_response>\n{text}\n</tool_response>"
            )
            if out and out[-1].get("tool_results"):
                out[-1]["content"] += "\n" + response
            else:
                out.append({"role": "user", "content": response, "tool_results": True})
            continue
        if role == "assistant" and message.get("tool_calls"):
            calls = _calls_text(message["tool_calls"])
            text = f"{text}\n{calls}" if text else calls
        entry: dict[str, Any] = {"role": "system" if role == "developer" else role, "content": text}
        if message.get("name"):
            entry["name"] = message["name"]
        out.append(entry)
    for entry in out:
        entry.pop("tool_results", None)
    return out


def _functions(request: ChatCompletionRequest) -> list[dict[str, Any]]:
    functions = []
    for i, tool in enumerate(request.tools or ()):
        if tool.type != "function" or tool.function is None:
            raise Untranslatable(f"tools[{i}]: the embedded engine calls function tools only")
        functions.append(tool.function.model_dump(exclude_none=True))
    return functions


def _answer_schema(request: ChatCompletionRequest) -> dict[str, Any] | None:
    response_format = request.response_format
    if response_format is None or response_format.type == "text":
        return None
    schema = (response_format.json_schema or {}).get("schema") if response_format.type == "json_schema" else None
    return schema if isinstance(schema, dict) and schema else {"type": "object"}


def plan(request: ChatCompletionRequest) -> ToolPlan | None:
    """How to constrain the answer: None for free text. Tools are offered unless there are none or
    tool_choice is none; a JSON response format constrains the text answer (or, without tools, the whole
    answer)."""
    if (request.model_extra or {}).get("functions"):
        raise Untranslatable("the embedded engine calls `tools`; send the legacy `functions` as tools")
    answer = _answer_schema(request)
    choice = request.tool_choice if request.tool_choice is not None else "auto"
    functions = _functions(request) if choice != "none" else []
    if not functions:
        if answer is None:
            return None
        return ToolPlan(
            instructions="Answer with JSON that follows this schema: " + orjson.dumps(answer).decode(),
            grammar=_grammar([], forced=False, parallel=False, answer_schema=answer),
            forced=False,
            schemas={},
        )
    forced = choice != "auto"
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        functions = [f for f in functions if f["name"] == name]
        if not functions:
            raise Untranslatable(f"tool_choice names {name!r}, which is not among the tools")
    elif choice not in ("auto", "required"):
        raise Untranslatable("tool_choice must be 'auto', 'required', 'none' or a named function")
    return ToolPlan(
        instructions=_instructions(functions, forced, answer is not None),
        grammar=_grammar(functions, forced, request.parallel_tool_calls is True, answer),
        forced=forced,
        schemas={f["name"]: f.get("parameters") or {} for f in functions},
        answered=frozenset() if forced else _answered(request),
        answer_grammar=None if forced else _grammar([], forced=False, parallel=False, answer_schema=answer),
    )


def _instructions(functions: list[dict[str, Any]], forced: bool, json_answer: bool) -> str:
    listed = "\n".join(orjson.dumps(f).decode() for f in functions)
    how = f'{OPEN}[\n{{"name": "tool name", "arguments": {{"argument": "value"}}}}\n]{CLOSE}'
    if forced and len(functions) == 1:
        ask = f"Answer the question by calling the function {functions[0]['name']}."
    elif forced:
        ask = "Answer the question by calling one of these functions."
    else:
        alternative = "in JSON" if json_answer else "in plain text"
        ask = (
            "Decide whether one of these functions answers the question. If one does, call it; "
            f"if none does, answer {alternative}."
        )
    return (
        f"You are given a question and functions you can call.\n{ask}\n"
        f"You can call these functions:\n<tools>{listed}</tools>\n"
        f"A call is written exactly like this, with nothing else:\n{how}"
    )


def _grammar(
    functions: list[dict[str, Any]], forced: bool, parallel: bool, answer_schema: dict[str, Any] | None
) -> str:
    converter = _new_converter()

    def resolved(schema: dict[str, Any], where: str) -> Any:
        # each schema's own "#/..." references point into that schema (and the converter rewrites them in
        # place: work on a copy, never on the client's request)
        return converter.resolve_refs(orjson.loads(orjson.dumps(schema)), where)

    try:
        text = "[^<] [\\U00000000-\\U0010FFFF]*"
        if answer_schema is not None:
            text = converter.visit(resolved(answer_schema, "answer"), "answer")
        if not functions:
            return f"{converter.format_grammar()}\nroot ::= {text}\n"
        calls = {
            "anyOf": [
                {
                    "type": "object",
                    "properties": {
                        "name": {"const": f["name"]},
                        "arguments": resolved(_arguments_schema(f.get("parameters")), f"tool{i}"),
                    },
                    "required": ["name", "arguments"],
                }
                for i, f in enumerate(functions)
            ]
        }
        converter.visit(calls, "call")
    except Exception as exc:  # the converter asserts and raises on schemas it cannot express
        raise Untranslatable(f"a tool's parameters (or the response schema) cannot be followed: {exc}") from None
    more = ' ( "," "\\n"? call )*' if parallel else ""
    rules = [f'lifeline-calls ::= "{OPEN}[" "\\n"? call{more} "\\n"? "]{CLOSE}"']
    rules.append("root ::= lifeline-calls" if forced else f"root ::= lifeline-calls | {text}")
    return "\n".join([converter.format_grammar(), *rules, ""])


_OPEN_ENDED = ("properties", "additionalProperties", "patternProperties", "anyOf", "oneOf", "allOf", "$ref")


def _arguments_schema(parameters: dict[str, Any] | None) -> dict[str, Any]:
    """The schema the grammar follows for a call's arguments: a tool that declares no parameters (none, or
    a bare `{"type": "object"}`) is called with `{}` — the model has nothing to fill in, and a free-form
    object only lets a small model ramble until it runs out of tokens."""
    if not parameters or (
        parameters.get("type", "object") == "object" and not any(k in parameters for k in _OPEN_ENDED)
    ):
        return {"type": "object", "properties": {}}
    return parameters


#: an integer range up to this many values becomes a choice of literals in the grammar
_RANGE_LIMIT = 256
#: "0" or 1 to 12 digits without a leading zero
_ZERO = '"0" | '
_DIGITS = _ZERO + "[1-9] " + "".join("([0-9] " for _ in range(11)) + ")? " * 11


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _bounds(schema: dict[str, Any]) -> tuple[float | None, float | None]:
    low, high = schema.get("minimum"), schema.get("maximum")
    exclusive_low, exclusive_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    step = 1 if schema.get("type") == "integer" else 0
    if _number(exclusive_low):
        low = exclusive_low + step
    if _number(exclusive_high):
        high = exclusive_high - step
    return (low if _number(low) else None), (high if _number(high) else None)


def _numeric_rule(schema: dict[str, Any]) -> str | None:
    """A grammar rule for the numeric bounds the converter leaves out (it ignores minimum and maximum): a
    small integer range as a choice of its values, a non-negative number without a sign. Other bounds are
    not followed by the grammar (a tool call is still validated before it is sent)."""
    kind = schema.get("type")
    if kind not in ("integer", "number") or "enum" in schema or "const" in schema:
        return None
    low, high = _bounds(schema)
    if kind == "integer" and low is not None and high is not None:
        first, last = math.ceil(low), math.floor(high)
        if 0 <= last - first < _RANGE_LIMIT:
            return "(" + " | ".join(f'"{v}"' for v in range(first, last + 1)) + ") space"
    if low is None or low < 0:
        return None
    if kind == "integer":
        return f"({_DIGITS.removeprefix(_ZERO) if low >= 1 else _DIGITS}) space"
    return f'({_DIGITS}) ("." [0-9] ([0-9] ([0-9] ([0-9])?)?)?)? space'


def _new_converter() -> Any:
    """llama-cpp-python's JSON-schema converter, taught the numeric bounds (imported on first use, like the
    engine itself)."""
    from llama_cpp.llama_grammar import RESERVED_NAMES, SchemaConverter

    class Converter(SchemaConverter):
        def visit(self, schema: Any, name: str) -> Any:
            rule = _numeric_rule(schema) if isinstance(schema, dict) else None
            if rule is None:
                return super().visit(schema, name)  # type: ignore[no-untyped-call]
            return self._add_rule(name + "-" if name in RESERVED_NAMES else name or "root", rule)  # type: ignore[no-untyped-call]

    return Converter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)  # type: ignore[no-untyped-call]


class CallReader:
    """Generated text in, OpenAI deltas out: content passes straight through; a call is held back until its
    closing tag, then sent whole (its id, name and arguments) as one tool-call delta."""

    def __init__(
        self, forced: bool, schemas: dict[str, dict[str, Any]], answered: frozenset[str] = frozenset()
    ) -> None:
        self._mode: str | None = "calls" if forced else None
        self._schemas = schemas
        self._answered = answered
        #: a call already answered in the conversation was generated again (and dropped)
        self.repeated = False
        self._buffer = ""
        self.calls = 0

    def feed(self, text: str) -> list[dict[str, Any]]:
        if self._mode is None and text:
            self._mode = "calls" if text.startswith("<") else "text"
        if self._mode != "calls":
            return [{"content": text}] if text else []
        self._buffer += text
        deltas = []
        while CLOSE in self._buffer:
            raw, _, self._buffer = self._buffer.partition(CLOSE)
            for call in orjson.loads(raw[raw.index(OPEN) + len(OPEN) :]):
                if call_key(call["name"], call["arguments"]) in self._answered:
                    self.repeated = True
                    continue
                deltas.append(self._delta(call))
        return deltas

    def _delta(self, call: dict[str, Any]) -> dict[str, Any]:
        self._check(call["name"], call["arguments"])
        arguments = orjson.dumps(call["arguments"]).decode()
        at, self.calls = self.calls, self.calls + 1
        function = {"name": call["name"], "arguments": arguments}
        return {
            "tool_calls": [
                {"index": at, "id": f"call_{uuid.uuid4().hex[:24]}", "type": "function", "function": function}
            ]
        }

    def _check(self, name: str, arguments: Any) -> None:
        """The grammar follows most of a schema, not all of it (e.g. bounds on fractions, uniqueItems,
        multipleOf): a call that slipped through is an engine failure, never an invalid call sent."""
        schema = self._schemas.get(name, {})
        validator = jsonschema.validators.validator_for(schema)(schema)
        error = jsonschema.exceptions.best_match(validator.iter_errors(arguments))
        if error is not None:
            raise error

    def finish_reason(self, engine_reason: str | None) -> str:
        """`tool_calls` when calls were made and nothing was cut; the engine's reason otherwise."""
        if self.calls and engine_reason != "length":
            return "tool_calls"
        return engine_reason or "stop"
