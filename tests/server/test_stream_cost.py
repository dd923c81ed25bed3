"""The answer's cost inside a stream, in process: with `x-lifeline-include-cost: true`, the final usage of a
chat stream (its usage chunk), a Messages stream (message_delta) and a Responses stream (response.completed)
carries `cost` in USD — the very figure of the request's ledger record, a continued answer's shares included.
Whole answers on /v1/messages and /v1/responses carry it too. On real sockets: tests/integration/test_fallbacks.py."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson

from lifeline.config import Config, parse_config
from tests.server.fakes import PROMPT, USAGE, InProcess, in_process

ASK = {"x-lifeline-include-cost": "true"}
CHAT = {"model": "chat", "messages": PROMPT, "stream": True}
DOLLAR_A_TOKEN = {"input": 1_000_000, "output": 1_000_000}  # USD per 1M tokens
TWO_DOLLARS_A_TOKEN = {"input": 2_000_000, "output": 2_000_000}


def config(*models: str) -> Config:
    """Alias `chat` over t1, t2 … serving `models`: t1 at $1 a token, the others at $2, each able to continue."""
    targets = {
        f"t{i}": {
            "kind": "openai",
            "base_url": "http://127.0.0.1:9/v1",
            "model": model,
            "price": DOLLAR_A_TOKEN if i == 1 else TWO_DOLLARS_A_TOKEN,
            "capabilities": {"prefill": True},
        }
        for i, model in enumerate(models, 1)
    }
    return parse_config(
        {"targets": targets, "aliases": {"chat": {"targets": list(targets)}}, "retry": {"max_retries": 0}}, env={}
    )


def post(
    cfg: Config, path: str, body: dict[str, Any], headers: dict[str, str] | None = None, *, then_get: bool = False
) -> tuple[httpx.Response, InProcess, httpx.Response | None]:
    """POST `body`; with `then_get`, GET the stored response it made (Responses API) afterwards."""

    async def main() -> tuple[httpx.Response, InProcess, httpx.Response | None]:
        async with in_process(cfg) as served, served.client() as client:
            response = await client.post(path, json=body, headers=headers or {})
            stored = None
            if then_get:
                last = [e for e in named_events(response) if e["type"] == "response.completed"]
                stored = await client.get(f"/v1/responses/{last[0]['response']['id']}")
            return response, served, stored

    return asyncio.run(main())


def data_events(response: httpx.Response) -> list[Any]:
    payloads = [line[len("data: ") :] for line in response.text.split("\n") if line.startswith("data: ")]
    return [p if p == "[DONE]" else orjson.loads(p) for p in payloads]


def named_events(response: httpx.Response) -> list[dict[str, Any]]:
    return [e for e in data_events(response) if isinstance(e, dict)]


def usd(served: InProcess) -> float:
    """The ledger record's cost in USD."""
    return served.record.cost_nusd / 1e9


def usage_chunks(events: list[Any]) -> list[dict[str, Any]]:
    return [e for e in events if isinstance(e, dict) and e.get("usage") is not None]


def test_a_chat_streams_usage_chunk_carries_the_ledgers_cost_when_asked() -> None:
    body = {**CHAT, "stream_options": {"include_usage": True}}
    response, served, _ = post(config("ok"), "/v1/chat/completions", body, ASK)
    events = data_events(response)
    [chunk] = usage_chunks(events)
    assert events[-2] is chunk and events[-1] == "[DONE]"
    assert chunk["choices"] == [] and "x_lifeline" not in chunk  # the upstream's own usage, not an estimate
    assert {k: v for k, v in chunk["usage"].items() if k != "cost"} == USAGE
    assert chunk["usage"]["cost"] == usd(served) == 9.0  # 7 + 2 tokens at $1


def test_asking_for_the_cost_asks_for_the_usage_chunk_that_carries_it() -> None:
    response, served, _ = post(config("ok"), "/v1/chat/completions", CHAT, ASK)
    [chunk] = usage_chunks(data_events(response))
    assert chunk["usage"]["cost"] == usd(served)


def test_a_stream_not_asking_for_the_cost_gets_the_upstreams_usage_as_it_was() -> None:
    body = {**CHAT, "stream_options": {"include_usage": True}}
    response, _, _ = post(config("ok"), "/v1/chat/completions", body)
    [chunk] = usage_chunks(data_events(response))
    assert chunk["usage"] == USAGE


def test_a_continued_streams_cost_is_each_targets_share_as_the_ledger_sums_it() -> None:
    response, served, _ = post(config("cut", "ok"), "/v1/chat/completions", CHAT, ASK)
    events = data_events(response)
    [chunk] = usage_chunks(events)
    assert chunk["x_lifeline"] == {"usage_estimated": True} and served.record.target == "t2"
    assert chunk["usage"]["cost"] == usd(served) > 0
    # t2 at $2 a token read the prompt and the partial answer: dearer than the same tokens at t1's price
    tokens = chunk["usage"]["prompt_tokens"] + chunk["usage"]["completion_tokens"]
    assert chunk["usage"]["cost"] > tokens


def test_a_messages_stream_says_the_cost_in_message_delta() -> None:
    body = {"model": "chat", "max_tokens": 64, "messages": PROMPT, "stream": True}
    response, served, _ = post(config("ok"), "/v1/messages", body, ASK)
    [delta] = [e for e in named_events(response) if e["type"] == "message_delta"]
    assert delta["usage"]["cost"] == usd(served) > 0
    plain, _, _ = post(config("ok"), "/v1/messages", body)
    assert all("cost" not in e.get("usage", {}) for e in named_events(plain))


def test_a_whole_message_says_its_cost_when_asked() -> None:
    body = {"model": "chat", "max_tokens": 64, "messages": PROMPT}
    response, served, _ = post(config("ok"), "/v1/messages", body, ASK)
    assert response.json()["usage"]["cost"] == usd(served) == 9.0
    assert response.headers["x-lifeline-cost-usd"] == "9.0"


def test_a_responses_stream_says_the_cost_in_response_completed_but_does_not_store_it() -> None:
    body = {"model": "chat", "input": "Say hello.", "stream": True}
    response, served, stored = post(config("ok"), "/v1/responses", body, ASK, then_get=True)
    [completed] = [e for e in named_events(response) if e["type"] == "response.completed"]
    assert completed["response"]["usage"]["cost"] == usd(served) == 9.0
    assert stored is not None and stored.status_code == 200
    assert "cost" not in stored.json()["usage"]


def test_a_whole_response_says_its_cost_when_asked() -> None:
    body = {"model": "chat", "input": "Say hello.", "store": False}
    response, served, _ = post(config("ok"), "/v1/responses", body, ASK)
    assert response.json()["usage"]["cost"] == usd(served) == 9.0
    plain, _, _ = post(config("ok"), "/v1/responses", body)
    assert "cost" not in plain.json()["usage"]
