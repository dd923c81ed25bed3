"""The official Node SDK (`openai` from npm) against a real gateway on loopback, unchanged: a script written
by the test runs `client.responses.create` (string input, a function tool round trip with
previous_response_id, `stream: true`), the `responses.stream` helper, `retrieve` and `delete`, over the fault
wall's `scripted` model. Node and the package come from tests/fixtures/node.py."""

from __future__ import annotations

from typing import Any

from lifeline.testing import FaultWall
from lifeline.testing.payloads import TOOL_ARGUMENTS
from tests.conftest import GatewayFactory, make_config, wall_target
from tests.fixtures.node import NodeSdk

SCRIPT = """
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.env.LIFELINE_BASE_URL, apiKey: "x", maxRetries: 0 });
const tools = [{
  type: "function", name: "get_weather", description: "The weather in a city.", strict: true,
  parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"],
                additionalProperties: false },
}];
const out = {};

const hello = await client.responses.create({
  model: "agent", input: "SAY: Hello from Node.", instructions: "Be brief.",
});
out.hello = { id: hello.id, status: hello.status, text: hello.output_text, usage: hello.usage };

const asked = await client.responses.create({ model: "agent", input: "Weather in Paris? SAY: Sunny.", tools });
const call = asked.output[0];
const answered = await client.responses.create({
  model: "agent", previous_response_id: asked.id, tools,
  input: [{ type: "function_call_output", call_id: call.call_id, output: "sunny, 21 C" }],
});
out.call = { type: call.type, name: call.name, arguments: call.arguments, call_id: call.call_id };
out.answered = { text: answered.output_text, previous: answered.previous_response_id, asked: asked.id };

const events = await client.responses.create({ model: "agent", input: "SAY: Streamed from Node.", stream: true });
out.events = [];
out.sequence = [];
for await (const event of events) {
  out.events.push(event.type);
  out.sequence.push(event.sequence_number);
}

const helper = client.responses.stream({ model: "agent", input: "SAY: The helper streams." });
let deltas = "";
helper.on("response.output_text.delta", (event) => { deltas += event.delta; });
const final = await helper.finalResponse();
out.helper = { deltas, text: final.output_text };

out.retrieved = (await client.responses.retrieve(hello.id)).output_text;
out.deleted = await client.responses.delete(hello.id) ?? null;
try {
  await client.responses.retrieve(hello.id);
  out.after_delete = 200;
} catch (error) {
  out.after_delete = error.status;
}
console.log(JSON.stringify(out));
"""


def test_the_node_sdk_creates_streams_retrieves_and_deletes(
    wall: FaultWall, gateway: GatewayFactory, node_openai: NodeSdk
) -> None:
    config = make_config({"scripted": wall_target(wall, "scripted?tools=once")}, {"agent": ["scripted"]})
    with gateway(config) as gw:
        out: dict[str, Any] = node_openai.run("responses_node", SCRIPT, {"LIFELINE_BASE_URL": gw.base_url})
    hello = out["hello"]
    assert hello["id"].startswith("resp_") and hello["status"] == "completed"
    assert hello["text"] == "Hello from Node." and hello["usage"]["output_tokens"] == 3
    assert out["call"]["type"] == "function_call" and out["call"]["name"] == "get_weather"
    assert out["call"]["arguments"] == TOOL_ARGUMENTS
    assert out["answered"]["text"] == "Sunny." and out["answered"]["previous"] == out["answered"]["asked"]
    assert out["events"] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert out["sequence"] == list(range(len(out["events"])))
    assert out["helper"] == {"deltas": "The helper streams.", "text": "The helper streams."}
    assert out["retrieved"] == "Hello from Node." and out["after_delete"] == 404
    bodies = [a.body for a in wall.attempts if a.body is not None]
    assert bodies[0]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "SAY: Hello from Node."},
    ]
    round_trip = bodies[2]["messages"]
    assert [m["role"] for m in round_trip] == ["user", "assistant", "tool"]
    assert round_trip[2] == {"role": "tool", "tool_call_id": out["call"]["call_id"], "content": "sunny, 21 C"}
