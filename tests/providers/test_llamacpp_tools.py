"""Tool calls and JSON answers on the embedded engine: the plan (prompt and grammar) in-process, then the
shipped SmolLM2-135M for real — every call it emits, on many schemas, parses and validates against the
tool's schema, and every JSON answer against the response schema. Outputs are kept short."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import jsonschema
import orjson
import pytest

from lifeline.config.schema import LlamaCppTarget
from lifeline.errors import Untranslatable, UpstreamRejected
from lifeline.protocol.parse import validate_chat_request
from lifeline.providers.base import ChatCall, Chunk, Completion, Deadline
from lifeline.providers.llamacpp import LlamaCppProvider
from lifeline.providers.llamatools import CallReader, _numeric_rule, call_key, plan, render_history
from tests.providers.support import make_call


def tool(name: str, parameters: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": parameters}}


WEATHER = tool(
    "get_weather",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"],
    },
    "The current weather in a city",
)

#: (what to ask, the parameters schema): flat, nested, enums, arrays, optional and required, numbers,
#: integers, booleans, nullable, $ref, const, no arguments
SCHEMAS: list[tuple[str, dict[str, Any]]] = [
    ("Weather in Paris?", WEATHER["function"]["parameters"]),
    (
        "Book a table for 4 people at 19:30.",
        {
            "type": "object",
            "properties": {
                "people": {"type": "integer", "minimum": 1, "maximum": 12},
                "time": {"type": "string", "maxLength": 8},
            },
            "required": ["people", "time"],
        },
    ),
    (
        "Ship the order to 5 Main St, Springfield.",
        {
            "type": "object",
            "properties": {
                "address": {
                    "type": "object",
                    "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
                    "required": ["street", "city"],
                },
                "express": {"type": "boolean"},
            },
            "required": ["address", "express"],
        },
    ),
    (
        "Add the numbers 3, 5 and 8.",
        {
            "type": "object",
            "properties": {"numbers": {"type": "array", "items": {"type": "number"}, "minItems": 1, "maxItems": 5}},
            "required": ["numbers"],
        },
    ),
    (
        "Set the thermostat to 21.5 degrees and turn the fan on.",
        {
            "type": "object",
            "properties": {"degrees": {"type": "number"}, "fan": {"type": "boolean"}},
            "required": ["degrees", "fan"],
        },
    ),
    (
        "Move the robot north by 3 steps.",
        {
            "type": "object",
            "properties": {
                "direction": {"enum": ["north", "south", "east", "west"]},
                "steps": {"type": "integer", "enum": [1, 2, 3, 4, 5]},
            },
            "required": ["direction", "steps"],
        },
    ),
    (
        "Search for red shoes.",
        {
            "type": "object",
            "properties": {
                "query": {"type": "string", "maxLength": 40},
                "limit": {"type": "integer"},
                "colour": {"type": ["string", "null"]},
            },
            "required": ["query"],
        },
    ),
    (
        "Invite Ann and Bob to the meeting.",
        {
            "type": "object",
            "properties": {
                "guests": {
                    "type": "array",
                    "maxItems": 3,
                    "items": {
                        "type": "object",
                        "properties": {"name": {"type": "string", "maxLength": 20}, "vip": {"type": "boolean"}},
                        "required": ["name"],
                    },
                }
            },
            "required": ["guests"],
        },
    ),
    (
        "Create a task called Shopping with high priority.",
        {
            "type": "object",
            "$defs": {"Priority": {"type": "string", "enum": ["low", "medium", "high"]}},
            "properties": {"title": {"type": "string", "maxLength": 30}, "priority": {"$ref": "#/$defs/Priority"}},
            "required": ["title", "priority"],
        },
    ),
    ("What time is it?", {"type": "object", "properties": {}}),
    (
        "Convert 10 dollars to euros.",
        {
            "type": "object",
            "properties": {
                "amount": {"type": "number", "minimum": 0},
                "from": {"const": "USD"},
                "to": {"type": "string", "enum": ["EUR", "GBP", "JPY"]},
            },
            "required": ["amount", "from", "to"],
        },
    ),
    (
        "Rate the film 4 stars and say it was fun.",
        {
            "type": "object",
            "properties": {
                "stars": {"type": "integer", "minimum": 1, "maximum": 5},
                "review": {"type": "string", "maxLength": 12},
                "tags": {"type": "array", "items": {"enum": ["fun", "sad", "long"]}, "maxItems": 2},
            },
            "required": ["stars"],
        },
    ),
]


OSLO, ROME = '{"city":"Oslo"}', '{"city":"Rome"}'


def request(**extra: Any) -> Any:
    return validate_chat_request({"model": "chat", "messages": [{"role": "user", "content": "hi"}], **extra})


# --- the plan, in-process ------------------------------------------------------------------------------


def test_no_tools_or_tool_choice_none_means_free_text() -> None:
    assert plan(request()) is None
    assert plan(request(tools=[WEATHER], tool_choice="none")) is None


def test_auto_offers_a_call_or_text_required_and_named_only_calls() -> None:
    auto, required = plan(request(tools=[WEATHER])), plan(request(tools=[WEATHER], tool_choice="required"))
    assert auto is not None and required is not None
    assert not auto.forced and required.forced
    assert "root ::= lifeline-calls | " in auto.grammar
    assert "root ::= lifeline-calls\n" in required.grammar
    assert "get_weather" in auto.instructions and "plain text" in auto.instructions
    other = tool("get_time", {"type": "object", "properties": {}})
    named = plan(request(tools=[WEATHER, other], tool_choice={"type": "function", "function": {"name": "get_time"}}))
    assert named is not None and named.forced
    assert '\\"get_time\\"' in named.grammar and "get_weather" not in named.grammar
    assert "get_weather" not in named.instructions


def test_one_call_per_answer_unless_parallel_calls_are_asked_for() -> None:
    single, parallel = plan(request(tools=[WEATHER])), plan(request(tools=[WEATHER], parallel_tool_calls=True))
    assert single is not None and parallel is not None
    assert ")*" not in single.grammar.split("lifeline-calls ::=")[1].split("\n")[0]
    assert ")*" in parallel.grammar.split("lifeline-calls ::=")[1].split("\n")[0]


def test_a_json_response_format_constrains_the_text_answer() -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    alone, with_tools = plan(request(response_format=fmt)), plan(request(response_format=fmt, tools=[WEATHER]))
    assert alone is not None and "root ::= answer" in alone.grammar and not alone.forced
    assert with_tools is not None and "root ::= lifeline-calls | answer" in with_tools.grammar
    assert plan(request(response_format={"type": "json_object"})) is not None
    assert plan(request(response_format={"type": "text"})) is None


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "'nope'"),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
        ({"functions": [WEATHER["function"]]}, "legacy `functions`"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0]"),
        ({"tools": [tool("f", {"type": "object", "properties": {"a": {"$ref": "other.json"}}})]}, "cannot be followed"),
    ],
)
def test_tools_the_engine_cannot_serve_are_a_clear_error(extra: dict[str, Any], says: str) -> None:
    with pytest.raises(Untranslatable, match=says.replace("[", r"\[").replace("]", r"\]")):
        plan(request(**extra))


def test_the_history_renders_calls_and_results_as_text_turns() -> None:
    history = render_history(
        [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                    },
                    {
                        "id": "c2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "snow"},
            {"role": "tool", "tool_call_id": "c2", "content": "sun"},
        ]
    )
    assert [m["role"] for m in history] == ["system", "user", "assistant", "user"]
    assert history[1]["content"] == "Weather?"
    assert history[2]["content"] == (
        '<tool_call>[{"name":"get_weather","arguments":{"city":"Oslo"}},'
        '{"name":"get_weather","arguments":{"city":"Rome"}}]</tool_call>'
    )
    assert history[3]["content"] == (
        "<tool_response>\nget_weather: snow\n</tool_response>\n<tool_response>\nget_weather: sun\n</tool_response>"
    )


@pytest.mark.parametrize(
    ("schema", "allowed", "refused"),
    [
        ({"type": "integer", "minimum": 1, "maximum": 5}, ["1", "5"], ["0", "6", "-1", "15"]),
        ({"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 3}, ["1", "2"], ["0", "3"]),
        ({"type": "integer", "minimum": 1}, ["1", "120"], ["0", "-4", "01"]),
        ({"type": "integer", "minimum": 0}, ["0", "7"], ["-1", "007"]),
        ({"type": "number", "minimum": 0}, ["0", "2.5", "10"], ["-0.5", "1e5"]),
    ],
)
def test_numeric_bounds_become_grammar_rules(schema: dict[str, Any], allowed: list[str], refused: list[str]) -> None:
    rule = _numeric_rule(schema)
    assert rule is not None
    pattern = gbnf_regex(rule)
    assert all(re.fullmatch(pattern, value) for value in allowed)
    assert not any(re.fullmatch(pattern, value) for value in refused)


def gbnf_regex(rule: str) -> str:
    """The tiny GBNF subset the numeric rules use, as a regular expression (literals, classes, groups)."""
    rule = rule.removesuffix(" space")
    out = re.sub(r'"([^"]*)"', lambda m: re.escape(m.group(1)), rule)
    return out.replace(" ", "")


def test_unbounded_numbers_are_left_to_the_converter() -> None:
    assert _numeric_rule({"type": "integer"}) is None
    assert _numeric_rule({"type": "number", "maximum": 3}) is None
    assert _numeric_rule({"type": "integer", "enum": [1, 2]}) is None
    assert _numeric_rule({"type": "string", "minimum": 1}) is None


def test_a_call_the_grammar_let_through_invalid_is_never_sent() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "number", "multipleOf": 2}}}
    reader = CallReader(forced=True, schemas={"f": schema})
    assert reader.feed('<tool_call>[{"name": "f", "arguments": {"n": 4}}]</tool_call>')
    with pytest.raises(jsonschema.ValidationError):
        reader.feed('<tool_call>[{"name": "f", "arguments": {"n": 3}}]</tool_call>')


def test_under_auto_a_call_the_conversation_already_answered_is_dropped() -> None:
    history = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": OSLO}},
                {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": ROME}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "snow"},
    ]
    auto = plan(validate_chat_request({"model": "chat", "messages": history, "tools": [WEATHER]}))
    assert auto is not None and auto.answer_grammar is not None
    assert auto.answered == {call_key("get_weather", {"city": "Oslo"})}  # c2 has no result yet
    reader = CallReader(forced=False, schemas={}, answered=auto.answered)
    assert reader.feed('<tool_call>[{"name": "get_weather", "arguments": {"city": "Oslo"}}]</tool_call>') == []
    assert reader.repeated and reader.calls == 0
    [again] = reader.feed('<tool_call>[{"name": "get_weather", "arguments": {"city": "Rome"}}]</tool_call>')
    assert again["tool_calls"][0]["function"]["arguments"] == '{"city":"Rome"}'
    required = plan(
        validate_chat_request({"model": "chat", "messages": history, "tools": [WEATHER], "tool_choice": "required"})
    )
    assert required is not None and not required.answered and required.answer_grammar is None


def test_the_reader_sends_text_through_and_each_call_whole() -> None:
    text = CallReader(forced=False, schemas={})
    assert text.feed("Hel") == [{"content": "Hel"}] and text.feed("lo <x>") == [{"content": "lo <x>"}]
    assert text.finish_reason("stop") == "stop"
    calls = CallReader(forced=False, schemas={})
    assert calls.feed('<tool_call>[\n{"name": "f", "argu') == []
    [delta] = calls.feed('ments": {"a": [1, 2]}}\n]</tool_call>')
    [call] = delta["tool_calls"]
    assert call["index"] == 0 and call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"] == {"name": "f", "arguments": '{"a":[1,2]}'}
    assert calls.finish_reason("stop") == "tool_calls"
    two = CallReader(forced=True, schemas={})
    deltas = two.feed('<tool_call>[{"name": "f", "arguments": {}}, {"name": "g", "arguments": {"b": 1}}]</tool_call>')
    assert [d["tool_calls"][0]["index"] for d in deltas] == [0, 1]
    assert [d["tool_calls"][0]["function"]["name"] for d in deltas] == ["f", "g"]
    assert deltas[0]["tool_calls"][0]["id"] != deltas[1]["tool_calls"][0]["id"]
    cut = CallReader(forced=True, schemas={})
    assert cut.feed('<tool_call>[{"name": "f", "arguments": {"a": ') == []
    assert cut.finish_reason("length") == "length" and cut.calls == 0


# --- the shipped model ---------------------------------------------------------------------------------


def patient_call(messages: list[dict[str, Any]], **extra: Any) -> ChatCall:
    """A greedy call whose deadline leaves a busy machine time (the short outputs are what keeps tests fast)."""
    call = make_call(messages, temperature=0, **extra)
    return replace(call, deadline=Deadline.after(90))


class Engine:
    """One loaded engine for the module, driven from a private event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.provider = LlamaCppProvider("local", LlamaCppTarget(kind="llamacpp", n_ctx=1024, n_threads=2))
        self.loop.run_until_complete(self.provider.start())

    def complete(self, messages: list[dict[str, Any]], **extra: Any) -> Completion:
        return self.loop.run_until_complete(self.provider.complete(patient_call(messages, **extra)))

    def stream(self, messages: list[dict[str, Any]], **extra: Any) -> list[Chunk]:
        async def collect() -> list[Chunk]:
            return [c async for c in self.provider.stream(patient_call(messages, **extra))]

        return self.loop.run_until_complete(collect())

    def close(self) -> None:
        self.loop.run_until_complete(self.provider.close())
        self.loop.close()


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    running = Engine()
    yield running
    running.close()


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


@pytest.mark.embedded
@pytest.mark.parametrize(("ask", "parameters"), SCHEMAS, ids=[f"schema{i}" for i in range(len(SCHEMAS))])
def test_every_call_parses_and_validates_against_the_tools_schema(
    engine: Engine, ask: str, parameters: dict[str, Any]
) -> None:
    offered = [tool("do_it", parameters, "Does what the user asks"), WEATHER]
    answer = engine.complete(user(ask), tools=offered, tool_choice="required", max_tokens=64)
    choice = answer.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls", choice
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in offered}
    assert call["type"] == "function" and call["id"].startswith("call_")
    jsonschema.validate(orjson.loads(call["function"]["arguments"]), schemas[call["function"]["name"]])


@pytest.mark.embedded
@pytest.mark.parametrize(("ask", "schema"), SCHEMAS, ids=[f"schema{i}" for i in range(len(SCHEMAS))])
def test_a_json_schema_answer_validates_against_the_schema(engine: Engine, ask: str, schema: dict[str, Any]) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
    answer = engine.complete(user(f"{ask} Answer in JSON."), response_format=fmt, max_tokens=80)
    choice = answer.body["choices"][0]
    assert choice["finish_reason"] == "stop", choice
    jsonschema.validate(orjson.loads(choice["message"]["content"]), schema)


@pytest.mark.embedded
def test_a_json_object_answer_is_a_json_object(engine: Engine) -> None:
    answer = engine.complete(user("List two colours."), response_format={"type": "json_object"}, max_tokens=48)
    choice = answer.body["choices"][0]
    assert choice["finish_reason"] == "stop", choice
    assert isinstance(orjson.loads(choice["message"]["content"]), dict)


@pytest.mark.embedded
def test_a_named_function_is_the_one_called(engine: Engine) -> None:
    clock = tool("get_time", {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"]})
    named = {"type": "function", "function": {"name": "get_time"}}
    answer = engine.complete(user("Weather in Paris?"), tools=[WEATHER, clock], tool_choice=named, max_tokens=32)
    [call] = answer.body["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "get_time"
    assert orjson.loads(call["function"]["arguments"])["zone"] in ("UTC", "CET")


@pytest.mark.embedded
def test_auto_lets_the_model_answer_in_text(engine: Engine) -> None:
    answer = engine.complete(user("Tell me a joke."), tools=[WEATHER], max_tokens=24)
    message = answer.body["choices"][0]["message"]
    assert "tool_calls" not in message and message["content"]


@pytest.mark.embedded
def test_tool_choice_none_answers_in_text(engine: Engine) -> None:
    answer = engine.complete(user("Weather in Paris?"), tools=[WEATHER], tool_choice="none", max_tokens=16)
    message = answer.body["choices"][0]["message"]
    assert "tool_calls" not in message and message["content"]


@pytest.mark.embedded
def test_a_streamed_call_arrives_as_tool_call_deltas_in_the_openai_shape(engine: Engine) -> None:
    chunks = engine.stream(user("Weather in Oslo?"), tools=[WEATHER], tool_choice="required", max_tokens=48)
    deltas = [c.data["choices"][0]["delta"] for c in chunks if c.data["choices"]]
    assert deltas[0] == {"role": "assistant"}
    calls = [d["tool_calls"] for d in deltas if "tool_calls" in d]
    assert len(calls) == 1 and not any(d.get("content") for d in deltas)
    [call] = calls[0]
    assert call["index"] == 0 and call["type"] == "function" and call["function"]["name"] == "get_weather"
    jsonschema.validate(orjson.loads(call["function"]["arguments"]), WEATHER["function"]["parameters"])
    finishes = [c.data["choices"][0]["finish_reason"] for c in chunks if c.data["choices"]]
    assert finishes[-1] == "tool_calls" and finishes.count("tool_calls") == 1
    usage = chunks[-1].usage
    assert usage is not None and usage["completion_tokens"] > 5
    assert all(c.content for c in chunks if c.data["choices"] and "tool_calls" in c.data["choices"][0]["delta"])


@pytest.mark.embedded
def test_a_conversation_with_calls_and_results_is_answered(engine: Engine) -> None:
    history = [
        *user("Weather in Oslo?"),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "Snow, -3 C"},
    ]
    answer = engine.complete(history, tools=[WEATHER], tool_choice="none", max_tokens=24)
    assert answer.body["choices"][0]["message"]["content"]
    assert answer.usage is not None and answer.usage["prompt_tokens"] > 20


@pytest.mark.embedded
def test_under_auto_a_repeated_call_gives_way_to_an_answer(engine: Engine) -> None:
    lisbon = '{"city": "Lisbon", "unit": "celsius"}'
    history = [
        *user("What is the weather in Lisbon?"),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": lisbon}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "Sunny, 24 degrees."},
    ]
    # SmolLM2 asks for the Lisbon weather again here; that call is dropped, and it answers in text
    chunks = engine.stream(history, tools=[WEATHER], max_tokens=64)
    text = "".join(c.data["choices"][0]["delta"].get("content") or "" for c in chunks if c.data["choices"])
    assert "24" in text
    assert not any("tool_calls" in c.data["choices"][0]["delta"] for c in chunks if c.data["choices"])
    assert [c.data["choices"][0]["finish_reason"] for c in chunks if c.data["choices"]][-1] == "stop"
    usage = chunks[-1].usage
    assert usage is not None and usage["completion_tokens"] > 30  # the dropped call's tokens, then the answer's


@pytest.mark.embedded
def test_a_tool_choice_naming_no_tool_is_rejected_before_the_engine(engine: Engine) -> None:
    bad = {"type": "function", "function": {"name": "nope"}}
    with pytest.raises(UpstreamRejected, match="'nope'"):
        engine.complete(user("hi"), tools=[WEATHER], tool_choice=bad)
