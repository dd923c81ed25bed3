"""The fault wall's /v1/responses, with the official openai SDK on a real socket: the response object and the
stream as the SDK's own types read them, in OpenAI's order, and the faults a native Responses target can meet."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from lifeline.testing import FaultWall, wall_text
from tests.integration.test_responses_api import STREAM_ORDER

EVENTS: TypeAdapter[ResponseStreamEvent] = TypeAdapter(ResponseStreamEvent)
FUNCTION = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}


@pytest.fixture(scope="module")
def wall() -> Iterator[FaultWall]:
    with FaultWall().running() as running:
        yield running


def client(wall: FaultWall) -> OpenAI:
    return OpenAI(base_url=wall.base_url, api_key="x", max_retries=0, timeout=10)


def test_a_whole_response_with_usage_and_a_built_in_search_item(wall: FaultWall) -> None:
    answer = client(wall).responses.create(model="ok", input="Two words here", tools=[{"type": "web_search"}])
    Response.model_validate(answer.model_dump())
    assert [o.type for o in answer.output] == ["web_search_call", "message"]
    assert answer.output_text == wall_text(12) and answer.status == "completed"
    assert answer.usage is not None and (answer.usage.input_tokens, answer.usage.output_tokens) == (3, 12)
    cut = client(wall).responses.create(model="ok", input="Hi", max_output_tokens=4)
    assert cut.status == "incomplete" and cut.output_text == wall_text(4)
    assert cut.incomplete_details is not None and cut.incomplete_details.reason == "max_output_tokens"
    called = client(wall).responses.create(model="tool_call", input="Weather?", tools=[FUNCTION])  # type: ignore[list-item]
    assert [(o.type, o.name) for o in called.output] == [("function_call", "get_weather")]  # type: ignore[union-attr]


def test_a_stream_has_the_events_in_order_each_a_valid_event(wall: FaultWall) -> None:
    events = list(client(wall).responses.create(model="ok", input="Hi", stream=True))
    for event in events:
        EVENTS.validate_python(event.model_dump())
    assert [e.type for e in events] == STREAM_ORDER
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].response.output_text == wall_text(12)  # type: ignore[union-attr]


def test_faults_apply_to_the_responses_endpoint(wall: FaultWall) -> None:
    with pytest.raises(openai.RateLimitError):
        client(wall).responses.create(model="rate_limit", input="Hi")
    with pytest.raises(openai.InternalServerError):
        client(wall).responses.create(model="status?code=503", input="Hi")
    with pytest.raises(openai.APIConnectionError):
        client(wall).responses.create(model="cut", input="Hi")
    errored = list(client(wall).responses.create(model="error_event?after=2", input="Hi", stream=True))
    assert [e.type for e in errored][-3:] == ["response.output_text.delta"] * 2 + ["error"]
    received = b""
    request = {"model": "cut?after=2", "input": "Hi", "stream": True}
    with (
        httpx.stream("POST", f"{wall.base_url}/responses", json=request) as cut,
        pytest.raises(httpx.RemoteProtocolError),
    ):
        for piece in cut.iter_raw():
            received += piece
    assert received.count(b"event: response.output_text.delta") == 2 and b"response.completed" not in received
    assert [a.path for a in wall.attempts_for("cut?after=2")] == ["/v1/responses"]
