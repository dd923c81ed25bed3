"""/v1/completions in process: legacy text completions over the real app and fake chat targets
(tests/server/fakes.py) — the prompt translated to one user message, answered as a `text_completion`,
accounted once like chat, streamed as text chunks ending in [DONE], failed over and continued like chat, and
each unsupported shape a 400 naming the parameter. Real clients on real sockets: tests/integration/
test_completions_api.py."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from lifeline.providers.base import ChatCall, Completion
from tests.server.fakes import USAGE, InProcess, Scenario, make_config, run


def post(body: dict[str, Any]) -> Scenario:
    async def scenario(served: InProcess, client: httpx.AsyncClient) -> httpx.Response:
        return await client.post("/v1/completions", json=body)

    return scenario


def chunks_of(response: httpx.Response) -> list[Any]:
    """The stream's data lines, parsed ([DONE] as the string)."""
    out: list[Any] = []
    for block in response.text.split("\n\n"):
        if block.strip():
            data = block.removeprefix("data: ")
            out.append(data if data == "[DONE]" else orjson.loads(data))
    return out


def test_a_prompt_is_answered_as_a_text_completion_through_chat_and_accounted_once() -> None:
    async def scenario(served: InProcess, client: httpx.AsyncClient) -> tuple[httpx.Response, list[Any]]:
        bodies: list[Any] = []
        complete = served.providers["t1"].complete

        async def recording(call: ChatCall) -> Completion:
            bodies.append(call.body)
            return await complete(call)

        served.providers["t1"].complete = recording  # type: ignore[method-assign]
        body = {"model": "chat", "prompt": ["Say hello."], "max_tokens": 5, "temperature": 0.2, "stop": ["\n"]}
        return await client.post("/v1/completions", json=body), bodies

    (response, bodies), served = run(make_config("ok"), scenario)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"].startswith("cmpl-") and body["object"] == "text_completion" and body["model"] == "ok"
    assert body["choices"] == [{"text": "Hello there", "index": 0, "logprobs": None, "finish_reason": "stop"}]
    assert body["usage"] == USAGE
    assert bodies == [
        {
            "model": "chat",
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 5,
            "temperature": 0.2,
            "stop": ["\n"],
        }
    ]
    assert (response.headers["x-lifeline-target"], response.headers["x-lifeline-attempts"]) == ("t1", "1")
    assert "x-lifeline-cost-usd" in response.headers
    record = served.record
    assert (record.outcome, record.status, record.target, record.streamed) == ("ok", 200, "t1", False)
    assert (record.prompt_tokens, record.completion_tokens) == (7, 2)


def test_an_answer_without_usage_is_estimated_and_marked() -> None:
    response, served = run(make_config("quiet"), post({"model": "chat", "prompt": "Say hello."}))
    body = response.json()
    assert body["x_lifeline"] == {"usage_estimated": True} and body["usage"]["completion_tokens"] == 3
    assert served.record.usage_estimated


def test_a_completions_request_fails_over_like_chat() -> None:
    response, served = run(make_config("down", "ok"), post({"model": "chat", "prompt": "Hi"}))
    assert response.status_code == 200 and response.json()["choices"][0]["text"] == "Hello there"
    assert (response.headers["x-lifeline-target"], response.headers["x-lifeline-attempts"]) == ("t2", "2")
    assert [a["outcome"] for a in served.record.attempts] == ["model_not_found", "ok"]


def test_a_stream_sends_text_chunks_then_usage_when_asked_then_done() -> None:
    body = {"model": "chat", "prompt": "Hi", "stream": True, "stream_options": {"include_usage": True}}
    response, served = run(make_config("ok"), post(body))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    chunks = chunks_of(response)
    assert chunks[-1] == "[DONE]"
    texts = [c["choices"][0]["text"] for c in chunks[:-2]]
    assert texts == ["Hello", " there", ""] and chunks[-3]["choices"][0]["finish_reason"] == "stop"
    assert {c["object"] for c in chunks[:-1]} == {"text_completion"} and len({c["id"] for c in chunks[:-1]}) == 1
    assert chunks[-2]["choices"] == [] and chunks[-2]["usage"] == USAGE
    assert served.record.streamed and served.record.outcome == "ok"


def test_a_stream_without_include_usage_sends_no_usage_chunk() -> None:
    response, served = run(make_config("ok"), post({"model": "chat", "prompt": "Hi", "stream": True}))
    chunks = chunks_of(response)
    assert chunks[-1] == "[DONE]" and all(c["choices"] for c in chunks[:-1])
    # the ledger still has the upstream's own usage: the gateway asked for it
    assert (served.record.prompt_tokens, served.record.completion_tokens) == (7, 2)


def test_a_stream_broken_after_content_is_continued_on_a_prefix_capable_target() -> None:
    response, served = run(
        make_config("cut", "ok", prefill=True), post({"model": "chat", "prompt": "Hi", "stream": True})
    )
    chunks = chunks_of(response)
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == "Hello there" and chunks[-1] == "[DONE]"
    assert served.record.outcome == "ok"


def test_a_stream_that_cannot_be_continued_ends_with_an_error_event_not_done() -> None:
    response, served = run(make_config("cut"), post({"model": "chat", "prompt": "Hi", "stream": True}))
    chunks = chunks_of(response)
    assert "[DONE]" not in chunks and "error" in chunks[-1]
    assert served.record.outcome == "broken"


BAD = [
    ({"prompt": "x"}, "model", "missing_required_parameter"),
    ({"model": "chat"}, "prompt", "missing_required_parameter"),
    ({"model": "chat", "prompt": 3}, "prompt", "invalid_type"),
    ({"model": "chat", "prompt": {"text": "x"}}, "prompt", "invalid_type"),
    ({"model": "chat", "prompt": []}, "prompt", "invalid_type"),
    ({"model": "chat", "prompt": ["a", "b"]}, "prompt", "unsupported_parameter"),
    ({"model": "chat", "prompt": [1, 2, 3]}, "prompt", "unsupported_parameter"),
    ({"model": "chat", "prompt": [[1, 2], [3]]}, "prompt", "unsupported_parameter"),
    ({"model": "chat", "prompt": ["a", 1]}, "prompt", "invalid_type"),
    ({"model": "chat", "prompt": "x", "n": 2}, "n", "unsupported_parameter"),
    ({"model": "chat", "prompt": "x", "best_of": 3}, "best_of", "unsupported_parameter"),
    ({"model": "chat", "prompt": "x", "n": True}, "n", "invalid_type"),
    ({"model": "chat", "prompt": "x", "best_of": "2"}, "best_of", "invalid_type"),
    ({"model": "chat", "prompt": "x", "echo": True}, "echo", "unsupported_parameter"),
    ({"model": "chat", "prompt": "x", "logprobs": 2}, "logprobs", "unsupported_parameter"),
    ({"model": "chat", "prompt": "x", "suffix": "end"}, "suffix", "unsupported_parameter"),
    ({"model": "chat", "prompt": "x", "logit_bias": {"50256": -100}}, "logit_bias", "unsupported_parameter"),
    ({"model": "chat", "prompt": "x", "max_tokens": 0}, "max_tokens", "invalid_value"),
    ({"model": "chat", "prompt": "x", "temperature": "hot"}, "temperature", "invalid_type"),
    ({"model": "chat", "prompt": "x", "stop": 5}, "stop", "invalid_type"),
    ({"model": "chat", "prompt": "x", "stream": "yes"}, "stream", "invalid_type"),
]


@pytest.mark.parametrize(("body", "param", "code"), BAD)
def test_each_unsupported_or_wrong_shape_is_a_400_naming_the_parameter(
    body: dict[str, Any], param: str, code: str
) -> None:
    response, served = run(make_config("ok"), post(body))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error")
    assert error["message"]
    assert not served.providers["t1"].called.is_set() and served.finishes == []


def test_an_unknown_model_is_a_404_and_an_embeddings_model_is_refused() -> None:
    unknown, _ = run(make_config("ok"), post({"model": "nope", "prompt": "x"}))
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    wrong, _ = run(make_config("ok"), post({"model": "embed", "prompt": "x"}))
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "wrong_model_kind"
