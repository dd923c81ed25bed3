"""Clients of the Responses API, unchanged, against a real gateway on loopback over fault-wall chat targets
(the wall's `scripted` model says what the prompt tells it after `SAY:`, and with `tools=once` calls the
offered tool, then answers once its result is in): openai-python's structured outputs, a streamed async tool
round trip and output items sent back as input; the OpenAI Agents SDK running a one-tool agent; LangChain's
ChatOpenAI with `use_responses_api=True`. The basics with openai-python (create, streams in order, retrieve,
delete, failover, continuation, scoping) are in test_responses_api.py; the Node SDK in
test_responses_node.py."""

from __future__ import annotations

import asyncio
import functools
import json
import operator
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from pydantic import BaseModel

from lifeline.testing import FaultWall
from lifeline.testing.gateway import RunningGateway
from lifeline.testing.payloads import TOOL_ARGUMENTS
from tests.conftest import GatewayFactory, make_config, wall_target

AGENT_MODEL = "scripted?tools=once"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


class City(BaseModel):
    name: str
    people: int


def scripted_config(wall: FaultWall) -> Any:
    return make_config({"scripted": wall_target(wall, AGENT_MODEL)}, {"agent": ["scripted"]})


def sdk(gw: RunningGateway) -> OpenAI:
    return OpenAI(base_url=gw.base_url, api_key="x", max_retries=0, timeout=30)


def async_sdk(gw: RunningGateway) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=gw.base_url, api_key="x", max_retries=0, timeout=30)


def sent(wall: FaultWall) -> list[dict[str, Any]]:
    """The chat bodies the wall was sent, in order."""
    return [a.body for a in wall.attempts if a.body is not None]


def tool_message(body: dict[str, Any]) -> dict[str, Any]:
    return next(m for m in body["messages"] if m["role"] == "tool")


# --- openai-python -----------------------------------------------------------------------------------


def test_structured_outputs_parse_whole_and_streamed(wall: FaultWall, gateway: GatewayFactory) -> None:
    with gateway(scripted_config(wall)) as gw:
        client = sdk(gw)
        parsed = client.responses.parse(
            model="agent", input='A city. SAY: {"name": "Paris", "people": 2100000}', text_format=City
        )
        with client.responses.stream(
            model="agent", input='A city. SAY: {"name": "Oslo", "people": 700000}', text_format=City
        ) as stream:
            kinds = [event.type for event in stream]
            streamed = stream.get_final_response()
    assert parsed.output_parsed == City(name="Paris", people=2100000)
    assert streamed.output_parsed == City(name="Oslo", people=700000)
    assert "response.output_text.delta" in kinds and kinds[-1] == "response.completed"
    formats = [body["response_format"] for body in sent(wall)]
    assert [f["type"] for f in formats] == ["json_schema", "json_schema"]
    assert all(f["json_schema"]["name"] == "City" and f["json_schema"]["strict"] is True for f in formats)
    assert formats[0]["json_schema"]["schema"]["required"] == ["name", "people"]


def test_an_async_streamed_tool_round_trip_continues_from_the_stored_call(
    wall: FaultWall, gateway: GatewayFactory
) -> None:
    async def scenario(client: AsyncOpenAI) -> tuple[list[str], list[str], Any, Any, Any, Any]:
        async with client.responses.stream(model="agent", input="Weather in Paris? SAY: Sunny.", tools=[WEATHER]) as s:
            asked_kinds = [event.type async for event in s]
            asked = await s.get_final_response()
        call = asked.output[0]
        assert call.type == "function_call"
        output = {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"}
        async with client.responses.stream(
            model="agent", previous_response_id=asked.id, input=[output], tools=[WEATHER]
        ) as s:
            answer_kinds = [event.type async for event in s]
            answered = await s.get_final_response()
        stored = await client.responses.retrieve(answered.id)
        await client.responses.delete(answered.id)
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(answered.id)
        return asked_kinds, answer_kinds, asked, call, answered, stored

    with gateway(scripted_config(wall)) as gw:
        asked_kinds, answer_kinds, asked, call, answered, stored = asyncio.run(scenario(async_sdk(gw)))
    assert "response.function_call_arguments.delta" in asked_kinds and asked_kinds[-1] == "response.completed"
    assert (call.name, call.arguments) == ("get_weather", TOOL_ARGUMENTS)
    assert "response.output_text.delta" in answer_kinds and answer_kinds[-1] == "response.completed"
    assert answered.output_text == "Sunny." and answered.previous_response_id == asked.id
    assert stored.output_text == "Sunny." and stored.id == answered.id and stored.previous_response_id == asked.id
    first, second = sent(wall)
    assert first["tools"][0]["function"]["strict"] is True
    assert [m["role"] for m in second["messages"]] == ["user", "assistant", "tool"]
    assert second["messages"][1]["tool_calls"][0]["id"] == call.call_id
    assert tool_message(second) == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny, 21 C"}


def test_output_items_sent_back_as_input_carry_the_conversation_without_storage(
    wall: FaultWall, gateway: GatewayFactory
) -> None:
    """The stateless way (store=False, as the Agents SDK and LangChain do by default with their own history):
    the previous response's output objects go back in `input` as they came, ids and statuses included."""
    with gateway(scripted_config(wall)) as gw:
        client = sdk(gw)
        question: list[Any] = [{"role": "user", "content": "Weather? SAY: Sunny."}]
        asked = client.responses.create(model="agent", input=question, tools=[WEATHER], store=False)
        call = asked.output[0]
        assert call.type == "function_call"
        result = {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}
        answered = client.responses.create(
            model="agent", input=[*question, *asked.output, result], tools=[WEATHER], store=False
        )
        thanks = {"role": "user", "content": "Thanks. SAY: Welcome."}
        closing = client.responses.create(
            model="agent", input=[*question, *asked.output, result, *answered.output, thanks], store=False
        )
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(asked.id)
    assert answered.output_text == "Sunny." and closing.output_text == "Welcome."
    assert sent(wall)[-1]["messages"] == [
        {"role": "user", "content": "Weather? SAY: Sunny."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.call_id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": TOOL_ARGUMENTS},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.call_id, "content": "sunny"},
        {"role": "assistant", "content": "Sunny."},
        {"role": "user", "content": "Thanks. SAY: Welcome."},
    ]


# --- the OpenAI Agents SDK ---------------------------------------------------------------------------


@pytest.fixture
def agents_sdk(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The `agents` package with tracing off (nothing leaves the machine) and its default client put back
    after the test (set_default_openai_client is process-wide)."""
    agents = pytest.importorskip("agents")
    from agents.models import _openai_shared

    monkeypatch.setattr(_openai_shared, "_default_openai_client", None)
    monkeypatch.setattr(_openai_shared, "_use_responses_by_default", True)
    agents.set_tracing_disabled(True)
    yield agents


def test_the_agents_sdk_runs_a_one_tool_agent(wall: FaultWall, gateway: GatewayFactory, agents_sdk: Any) -> None:
    ran: list[str] = []

    @agents_sdk.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        ran.append(city)
        return f"sunny in {city}"

    async def scenario(gw: RunningGateway) -> tuple[Any, Any, list[str]]:
        agents_sdk.set_default_openai_client(async_sdk(gw), use_for_tracing=False)
        agents_sdk.set_default_openai_api("responses")
        agent = agents_sdk.Agent(name="forecaster", instructions="Use the tool.", model="agent", tools=[get_weather])
        config = agents_sdk.RunConfig(tracing_disabled=True)
        whole = await agents_sdk.Runner.run(agent, "Weather in Paris? SAY: It is sunny in Paris.", run_config=config)
        streamed = agents_sdk.Runner.run_streamed(agent, "And now? SAY: Still sunny.", run_config=config)
        items = [event.name async for event in streamed.stream_events() if event.type == "run_item_stream_event"]
        return whole, streamed, items

    with gateway(scripted_config(wall)) as gw:
        whole, streamed, items = asyncio.run(scenario(gw))
    assert ran == ["Paris", "Paris"]
    assert whole.final_output == "It is sunny in Paris." and streamed.final_output == "Still sunny."
    assert items == ["tool_called", "tool_output", "message_output_created"]
    bodies = sent(wall)
    assert len(bodies) == 4  # per run: the call, then the answer
    assert bodies[0]["messages"][0] == {"role": "system", "content": "Use the tool."}
    assert bodies[0]["tools"][0]["function"]["name"] == "get_weather"
    assert tool_message(bodies[1])["content"] == "sunny in Paris"
    assert tool_message(bodies[3])["content"] == "sunny in Paris"


def test_an_agent_with_an_output_type_gets_the_parsed_json_across_turns(
    wall: FaultWall, gateway: GatewayFactory, agents_sdk: Any
) -> None:
    async def scenario(gw: RunningGateway) -> tuple[Any, Any]:
        agents_sdk.set_default_openai_client(async_sdk(gw), use_for_tracing=False)
        agent = agents_sdk.Agent(name="geographer", model="agent", output_type=City)
        config = agents_sdk.RunConfig(tracing_disabled=True)
        first = await agents_sdk.Runner.run(agent, 'SAY: {"name": "Oslo", "people": 700000}', run_config=config)
        more = {"role": "user", "content": 'Another. SAY: {"name": "Rome", "people": 2800000}'}
        second = await agents_sdk.Runner.run(agent, [*first.to_input_list(), more], run_config=config)
        return first, second

    with gateway(scripted_config(wall)) as gw:
        first, second = asyncio.run(scenario(gw))
    assert first.final_output == City(name="Oslo", people=700000)
    assert second.final_output == City(name="Rome", people=2800000)
    last = sent(wall)[-1]
    assert last["response_format"]["type"] == "json_schema"
    assert [m["role"] for m in last["messages"]] == ["user", "assistant", "user"]
    assert json.loads(last["messages"][1]["content"]) == {"name": "Oslo", "people": 700000}


# --- LangChain ---------------------------------------------------------------------------------------


def test_langchain_with_the_responses_api_invokes_streams_and_calls_tools(
    wall: FaultWall, gateway: GatewayFactory
) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    from langchain_core.messages import HumanMessage
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    with gateway(scripted_config(wall)) as gw:
        llm = langchain_openai.ChatOpenAI(
            model="agent", base_url=gw.base_url, api_key="x", use_responses_api=True, max_retries=0, timeout=30
        )
        said = llm.invoke("SAY: Hello from LangChain.")
        chunks = list(llm.stream("SAY: Streamed words here."))
        bound = llm.bind_tools([get_weather])
        messages: list[Any] = [HumanMessage("Weather in Paris? SAY: Sunny in Paris.")]
        asked = bound.invoke(messages)
        messages += [asked, *(get_weather.invoke(call) for call in asked.tool_calls)]
        answered = bound.invoke(messages)
        streamed_call = functools.reduce(operator.add, bound.stream(messages[:1]))
        structured = llm.with_structured_output(City).invoke('A city. SAY: {"name": "Lima", "people": 10000000}')
    assert said.text == "Hello from LangChain." and said.response_metadata["id"].startswith("resp_")
    assert said.usage_metadata is not None and said.usage_metadata["output_tokens"] == 3
    assert "".join(chunk.text for chunk in chunks) == "Streamed words here."
    assert [(c["name"], c["args"]) for c in asked.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert answered.text == "Sunny in Paris."
    assert [(c["name"], c["args"]) for c in streamed_call.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert structured == City(name="Lima", people=10000000)
    round_trip = next(b for b in sent(wall) if any(m["role"] == "tool" for m in b["messages"]))
    assert tool_message(round_trip)["content"] == "sunny in Paris"
    assert round_trip["tools"][0]["function"]["name"] == "get_weather"
