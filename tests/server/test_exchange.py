"""The exchange in process: chat completions (whole and streamed), messages and embeddings through the real app
over fake targets (tests/server/fakes.py), each admitted request accounted by exactly one call of
`Accounting.finish` and one ledger record — answered, failed upstream, left by its client, or broken after
content. The same rules on real sockets, with real clients, are in tests/integration/."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import orjson

from lifeline.config import Config
from tests.server.fakes import PROMPT, USAGE, InProcess, in_process, leave_early, make_config

CHAT = {"model": "chat", "messages": PROMPT}
MESSAGE = {"model": "chat", "max_tokens": 64, "messages": PROMPT}


def serve(config: Config, scenario: Callable[[InProcess, httpx.AsyncClient], Awaitable[None]]) -> InProcess:
    """Run `scenario` against an in-process gateway for `config`; what it accounted, for the test to read."""

    async def main() -> InProcess:
        async with in_process(config) as served, served.client() as client:
            await scenario(served, client)
        return served

    return asyncio.run(main())


def post(path: str, body: dict[str, Any], out: list[httpx.Response]) -> Callable[..., Awaitable[None]]:
    async def scenario(served: InProcess, client: httpx.AsyncClient) -> None:
        out.append(await client.post(path, json=body))

    return scenario


def exchange(config: Config, path: str, body: dict[str, Any]) -> tuple[httpx.Response, InProcess]:
    responses: list[httpx.Response] = []
    served = serve(config, post(path, body, responses))
    return responses[0], served


def data_events(response: httpx.Response) -> list[Any]:
    """OpenAI's server-sent events: each `data:` payload, parsed (`[DONE]` as the string)."""
    payloads = [line[len("data: ") :] for line in response.text.split("\n") if line.startswith("data: ")]
    return [p if p == "[DONE]" else orjson.loads(p) for p in payloads]


def text_of(events: list[Any]) -> str:
    return "".join(
        c["delta"].get("content") or "" for e in events if isinstance(e, dict) for c in e.get("choices") or ()
    )


def outcomes(served: InProcess) -> list[str]:
    return [a["outcome"] for a in served.record.attempts]


# --- chat completions, whole ----------------------------------------------------------------------------


def test_a_whole_answer_is_accounted_once_with_the_upstreams_usage() -> None:
    response, served = exchange(make_config("ok"), "/v1/chat/completions", CHAT)
    assert response.status_code == 200
    assert response.json()["usage"] == USAGE
    assert (response.headers["x-lifeline-target"], response.headers["x-lifeline-attempts"]) == ("t1", "1")
    record = served.record
    assert (record.outcome, record.status, record.target, record.streamed) == ("ok", 200, "t1", False)
    assert (record.prompt_tokens, record.completion_tokens, record.usage_estimated) == (7, 2, False)


def test_an_answer_without_usage_is_estimated_marked_and_accounted_as_sent() -> None:
    response, served = exchange(make_config("quiet"), "/v1/chat/completions", CHAT)
    body = response.json()
    assert body["x_lifeline"] == {"usage_estimated": True}
    record = served.record
    assert record.usage_estimated
    assert (record.prompt_tokens, record.completion_tokens) == (
        body["usage"]["prompt_tokens"],
        body["usage"]["completion_tokens"],
    )
    assert body["usage"]["completion_tokens"] == 3  # "Hello there": 11 characters at about four a token


def test_a_failover_is_one_request_with_two_attempts() -> None:
    response, served = exchange(make_config("down", "ok"), "/v1/chat/completions", CHAT)
    assert (response.status_code, response.headers["x-lifeline-attempts"]) == (200, "2")
    assert (served.record.outcome, served.record.target) == ("ok", "t2")
    assert outcomes(served) == ["model_not_found", "ok"]


def test_an_upstream_failure_is_accounted_once_as_an_error() -> None:
    response, served = exchange(make_config("down"), "/v1/chat/completions", CHAT)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "all_targets_failed"
    record = served.record
    assert (record.outcome, record.status, record.target, record.cost_nusd) == ("error", 502, None, 0)
    assert outcomes(served) == ["model_not_found"]


def test_a_request_refused_before_admission_is_not_accounted() -> None:
    response, served = exchange(make_config("ok"), "/v1/chat/completions", {**CHAT, "model": "nope"})
    assert response.status_code == 404
    assert served.finishes == [] and served.records == []


def test_a_client_that_leaves_a_whole_answer_is_accounted_once_as_client_closed() -> None:
    async def scenario(served: InProcess, client: httpx.AsyncClient) -> None:
        status, _ = await leave_early(served.app, "/v1/chat/completions", CHAT, gone=served.providers["t1"].called)
        assert status == 499

    served = serve(make_config("hang"), scenario)
    assert (served.record.outcome, served.record.status, served.record.streamed) == ("client_closed", 499, False)


# --- chat completions, streamed -------------------------------------------------------------------------


def test_a_stream_is_relayed_and_accounted_once_when_it_ends() -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    response, served = exchange(make_config("ok"), "/v1/chat/completions", body)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = data_events(response)
    assert text_of(events) == "Hello there"
    assert events[-2]["usage"] == USAGE and events[-1] == "[DONE]"
    record = served.record
    assert (record.outcome, record.status, record.streamed, record.target) == ("ok", 200, True, "t1")
    assert (record.prompt_tokens, record.completion_tokens, record.usage_estimated) == (7, 2, False)
    assert record.ttft_ms is not None


def test_a_stream_without_upstream_usage_ends_with_an_estimate_when_asked() -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    response, served = exchange(make_config("quiet"), "/v1/chat/completions", body)
    events = data_events(response)
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == [] and usage_chunk["x_lifeline"] == {"usage_estimated": True}
    assert usage_chunk["id"] == "chatcmpl-1"  # like the chunks before it
    assert served.record.usage_estimated
    assert served.record.completion_tokens == usage_chunk["usage"]["completion_tokens"]


def test_a_stream_that_breaks_after_content_ends_with_an_error_and_is_accounted_once_as_broken() -> None:
    response, served = exchange(make_config("cut"), "/v1/chat/completions", {**CHAT, "stream": True})
    events = data_events(response)
    assert text_of(events) == "Hello"
    assert events[-1]["error"]["code"] == "upstream_stream_broken"
    assert "[DONE]" not in events
    record = served.record
    assert (record.outcome, record.status, record.streamed) == ("broken", 200, True)
    assert outcomes(served) == ["broken"]
    assert record.completion_tokens == 2  # what it produced: "Hello", estimated


def test_a_continued_stream_is_one_answer_and_one_record() -> None:
    body = {**CHAT, "stream": True}
    response, served = exchange(make_config("cut", "ok", prefill=True), "/v1/chat/completions", body)
    events = data_events(response)
    assert text_of(events) == "Hello there" and events[-1] == "[DONE]"
    roles = [c["delta"]["role"] for e in events[:-1] for c in e["choices"] if "role" in c["delta"]]
    assert roles == ["assistant"]  # the continuation's own opening is not repeated
    finish = events[-2]
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert finish["x_lifeline"]["continued"] == [
        {"from": "t1", "to": "t2", "after_chars": 5, "reason": "cut_off", "mode": "prefill"}
    ]
    record = served.record
    assert (record.outcome, record.target) == ("ok", "t2")
    assert outcomes(served) == ["ok", "continued"]
    assert response.headers["x-lifeline-attempts"] == "1"  # sent before the continuation


def test_a_stream_that_fails_before_content_is_an_error_response_accounted_once() -> None:
    response, served = exchange(make_config("down"), "/v1/chat/completions", {**CHAT, "stream": True})
    assert response.status_code == 502
    assert (served.record.outcome, served.record.status, served.record.streamed) == ("error", 502, True)


def test_a_client_that_leaves_a_stream_is_accounted_once_as_client_closed() -> None:
    async def scenario(served: InProcess, client: httpx.AsyncClient) -> None:
        body = {**CHAT, "stream": True}
        status, pieces = await leave_early(served.app, "/v1/chat/completions", body, after_pieces=1)
        assert status == 200
        assert not any(b"[DONE]" in p for p in pieces)

    served = serve(make_config("hang"), scenario)
    record = served.record
    assert (record.outcome, record.status, record.streamed, record.target) == ("client_closed", 200, True, "t1")
    assert outcomes(served) == ["client_closed"]


# --- messages ---------------------------------------------------------------------------------------------


def test_a_message_is_translated_and_accounted_once() -> None:
    response, served = exchange(make_config("ok"), "/v1/messages", MESSAGE)
    message = response.json()
    assert message["type"] == "message" and message["content"] == [{"type": "text", "text": "Hello there"}]
    assert message["usage"]["input_tokens"] == 7 and message["usage"]["output_tokens"] == 2
    assert response.headers["request-id"] == response.headers["x-request-id"]
    assert (served.record.outcome, served.record.streamed, served.record.prompt_tokens) == ("ok", False, 7)


def test_a_message_stream_is_anthropics_events_accounted_once() -> None:
    response, served = exchange(make_config("ok"), "/v1/messages", {**MESSAGE, "stream": True})
    names = [line[len("event: ") :] for line in response.text.split("\n") if line.startswith("event: ")]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert (served.record.outcome, served.record.streamed) == ("ok", True)


def test_a_broken_message_stream_ends_with_an_error_event_accounted_once_as_broken() -> None:
    response, served = exchange(make_config("cut"), "/v1/messages", {**MESSAGE, "stream": True})
    assert "event: error" in response.text and "message_stop" not in response.text
    assert (served.record.outcome, served.record.status) == ("broken", 200)


def test_a_failed_message_is_anthropics_error_accounted_once() -> None:
    response, served = exchange(make_config("down"), "/v1/messages", MESSAGE)
    assert response.status_code == 502
    assert response.json()["type"] == "error" and response.json()["error"]["type"] == "api_error"
    assert (served.record.outcome, served.record.status) == ("error", 502)


# --- embeddings -------------------------------------------------------------------------------------------


def test_an_embedding_is_accounted_once_as_all_prompt() -> None:
    response, served = exchange(make_config("ok"), "/v1/embeddings", {"model": "embed", "input": "hello"})
    assert response.json()["data"][0]["embedding"] == [0.25, -0.5]
    assert response.headers["x-lifeline-target"] == "t1"
    record = served.record
    assert (record.outcome, record.prompt_tokens, record.completion_tokens, record.usage_estimated) == (
        "ok",
        3,
        0,
        False,
    )


def test_an_embedding_without_usage_is_estimated() -> None:
    response, served = exchange(make_config("quiet"), "/v1/embeddings", {"model": "embed", "input": "hello there"})
    assert response.status_code == 200
    assert (served.record.prompt_tokens, served.record.completion_tokens) == (3, 0)
    assert served.record.usage_estimated


def test_a_failed_embedding_is_accounted_once_as_an_error() -> None:
    response, served = exchange(make_config("down"), "/v1/embeddings", {"model": "embed", "input": "hello"})
    assert response.status_code == 502
    assert (served.record.outcome, served.record.status) == ("error", 502)
