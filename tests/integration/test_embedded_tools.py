"""The last resort serves agents: an alias whose hosted targets are all cut off (the fault wall answers 401
and 403), so the embedded SmolLM2 answers — through the official openai SDK, LangChain and the anthropic SDK — with tool
calls that validate against their tools' schemas and JSON that validates against the response schema."""

from __future__ import annotations

import json
from typing import Any, Literal

import anthropic
import jsonschema
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from openai import OpenAI
from pydantic import BaseModel, Field

from lifeline.config import Config
from lifeline.testing import FaultWall
from lifeline.testing.gateway import RunningGateway
from tests.conftest import GatewayFactory, make_config, wall_target

pytestmark = pytest.mark.embedded

WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 24}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
}
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "description": "The weather in a city", "parameters": WEATHER_PARAMETERS},
}


def agent_config(wall: FaultWall) -> Config:
    targets = {
        "hosted-a": wall_target(wall, "status?code=401"),
        "hosted-b": wall_target(wall, "status?code=403"),
        "embedded": {"kind": "llamacpp", "model": "builtin:smollm2", "n_ctx": 1024, "n_threads": 2},
    }
    return make_config(targets, {"agent": ["hosted-a", "hosted-b", "embedded"]})


def sdk(gw: RunningGateway) -> OpenAI:
    return OpenAI(base_url=gw.base_url, api_key="x", max_retries=0, timeout=90)


def chat_model(gw: RunningGateway) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=gw.base_url, api_key="x", model="agent", temperature=0, max_tokens=64, max_retries=0, timeout=90
    )


def assert_hosted_were_tried(wall: FaultWall) -> None:
    assert wall.attempts_for("status?code=401") and wall.attempts_for("status?code=403")


def test_the_openai_sdk_gets_valid_tool_calls_with_every_hosted_target_cut_off(
    wall: FaultWall, gateway: GatewayFactory
) -> None:
    messages: Any = [{"role": "user", "content": "What is the weather in Lisbon?"}]
    with gateway(agent_config(wall)) as gw:
        client = sdk(gw)
        raw = client.chat.completions.with_raw_response.create(
            model="agent", messages=messages, tools=[WEATHER], tool_choice="required", max_tokens=64, temperature=0
        )
        stream = client.chat.completions.create(
            model="agent",
            messages=messages,
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            max_tokens=64,
            temperature=0,
            stream=True,
        )
        chunks = list(stream)
    assert raw.headers["x-lifeline-target"] == "embedded"
    answer = raw.parse().choices[0]
    assert answer.finish_reason == "tool_calls" and answer.message.tool_calls
    [call] = answer.message.tool_calls
    assert call.id.startswith("call_") and call.function.name == "get_weather"  # type: ignore[union-attr]
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_PARAMETERS)  # type: ignore[union-attr]
    # streamed: tool-call deltas in the OpenAI shape, assembled as the SDK's users do
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or ()]
    assert deltas and {d.index for d in deltas} == {0} and deltas[0].id and deltas[0].type == "function"
    assert "".join(d.function.name or "" for d in deltas if d.function) == "get_weather"
    arguments = "".join(d.function.arguments or "" for d in deltas if d.function)
    jsonschema.validate(json.loads(arguments), WEATHER_PARAMETERS)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    assert_hosted_were_tried(wall)


def test_the_openai_sdk_gets_schema_valid_json(wall: FaultWall, gateway: GatewayFactory) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "pets": {"type": "array", "items": {"enum": ["cat", "dog", "fish"]}, "maxItems": 3},
        },
        "required": ["name", "age", "pets"],
        "additionalProperties": False,
    }
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}}
    with gateway(agent_config(wall)) as gw:
        answer = sdk(gw).chat.completions.create(
            model="agent",
            messages=[{"role": "user", "content": "Describe a person who owns a cat, as JSON."}],
            response_format=fmt,
            max_tokens=64,
            temperature=0,
        )
    jsonschema.validate(json.loads(answer.choices[0].message.content or ""), schema)


def test_a_tool_round_trip_through_the_sdk(wall: FaultWall, gateway: GatewayFactory) -> None:
    history: Any = [
        {"role": "user", "content": "What is the weather in Lisbon?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Lisbon", "unit": "celsius"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 24 degrees."},
    ]
    with gateway(agent_config(wall)) as gw:
        answer = sdk(gw).chat.completions.create(
            model="agent", messages=history, tools=[WEATHER], max_tokens=96, temperature=0
        )
    message = answer.choices[0].message
    # auto: the model answers in text or makes a new call (the same call again gives way to an answer)
    assert message.content or message.tool_calls
    for call in message.tool_calls or ():
        jsonschema.validate(json.loads(call.function.arguments), WEATHER_PARAMETERS)  # type: ignore[union-attr]


@tool
def get_weather(city: str, unit: Literal["celsius", "fahrenheit"]) -> str:
    """The weather in a city."""
    return f"Sunny in {city}"


class Person(BaseModel):
    """A person."""

    name: str = Field(max_length=20)
    age: int = Field(ge=0, le=120)
    likes_cats: bool


def test_langchain_bind_tools_gets_valid_tool_calls(wall: FaultWall, gateway: GatewayFactory) -> None:
    with gateway(agent_config(wall)) as gw:
        model = chat_model(gw).bind_tools([get_weather], tool_choice="get_weather")
        reply = model.invoke([HumanMessage("What is the weather in Rome?")])
        assert isinstance(reply, AIMessage)
        [call] = reply.tool_calls
        # the result goes back, and the loop goes on
        follow = (
            chat_model(gw)
            .bind_tools([get_weather])
            .invoke(
                [
                    HumanMessage("What is the weather in Rome?"),
                    reply,
                    ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"]),
                ]
            )
        )
    assert call["name"] == "get_weather" and call["id"]
    jsonschema.validate(call["args"], get_weather.tool_call_schema.model_json_schema())
    assert isinstance(follow, AIMessage) and (follow.content or follow.tool_calls)
    assert_hosted_were_tried(wall)


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_langchain_with_structured_output_gets_a_valid_object(
    wall: FaultWall, gateway: GatewayFactory, method: Literal["json_schema", "function_calling"]
) -> None:
    with gateway(agent_config(wall)) as gw:
        structured = chat_model(gw).with_structured_output(Person, method=method)
        person = structured.invoke("Invent a person who likes cats.")
    assert isinstance(person, Person)
    assert 0 <= person.age <= 120 and len(person.name) <= 20


def test_an_anthropic_style_client_gets_a_valid_tool_use(wall: FaultWall, gateway: GatewayFactory) -> None:
    weather: Any = {"name": "get_weather", "description": "The weather in a city", "input_schema": WEATHER_PARAMETERS}
    with gateway(agent_config(wall)) as gw:
        client = anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0, timeout=90)
        message = client.messages.create(
            model="agent",
            max_tokens=64,
            messages=[{"role": "user", "content": "What is the weather in Lisbon?"}],
            tools=[weather],
            tool_choice={"type": "tool", "name": "get_weather"},
        )
    [block] = [b for b in message.content if b.type == "tool_use"]
    assert message.stop_reason == "tool_use" and block.name == "get_weather"
    jsonschema.validate(block.input, WEATHER_PARAMETERS)
