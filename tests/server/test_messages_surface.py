"""The rest of Anthropic's surface in process: POST /v1/messages/count_tokens over fake chat targets (an
estimate, marked so), and unknown paths and wrong methods under /v1/messages answered in Anthropic's error
shape. Counts by an Anthropic target and by the embedded model, with the anthropic SDK on real sockets:
tests/integration/test_count_tokens.py."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from lifeline.protocol.usage import estimate_usage
from tests.server.fakes import in_process, make_config

HELLO = {"model": "chat", "messages": [{"role": "user", "content": "Say hello to the whole world."}]}


def send(method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    async def main() -> httpx.Response:
        async with in_process(make_config("ok")) as served, served.client() as client:
            response = await client.request(method, path, json=body)
            assert not served.providers["t1"].called.is_set() and served.finishes == []
            return response

    return asyncio.run(main())


def test_count_tokens_on_a_target_that_cannot_count_is_the_estimate_marked_so() -> None:
    body = {**HELLO, "system": "Be brief."}
    response = send("POST", "/v1/messages/count_tokens", body)
    assert response.status_code == 200, response.text
    chat = {"messages": [{"role": "system", "content": "Be brief."}, HELLO["messages"][0]]}
    assert response.json() == {"input_tokens": estimate_usage(chat, 0)["prompt_tokens"]}
    assert response.headers["x-lifeline-estimate"] == "true" and response.headers["request-id"]


@pytest.mark.parametrize(
    ("body", "status", "kind", "word"),
    [
        ({"messages": HELLO["messages"]}, 400, "invalid_request_error", "model"),
        ({"model": "chat"}, 400, "invalid_request_error", "messages"),
        ({"model": "chat", "messages": [{"role": "user", "content": 5}]}, 400, "invalid_request_error", "content"),
        ({**HELLO, "model": "nope"}, 404, "not_found_error", "nope"),
        ({**HELLO, "model": "embed"}, 400, "invalid_request_error", "embed"),
    ],
)
def test_count_tokens_mistakes_are_in_anthropics_error_shape(
    body: dict[str, Any], status: int, kind: str, word: str
) -> None:
    response = send("POST", "/v1/messages/count_tokens", body)
    assert response.status_code == status
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == kind and word in error["error"]["message"]


@pytest.mark.parametrize(
    ("method", "path", "status", "kind"),
    [
        ("POST", "/v1/messages/batches", 404, "not_found_error"),
        ("GET", "/v1/messages/msg_123", 404, "not_found_error"),
        ("POST", "/v1/messages/", 404, "not_found_error"),
        ("GET", "/v1/messages", 405, "invalid_request_error"),
        ("DELETE", "/v1/messages", 405, "invalid_request_error"),
        ("GET", "/v1/messages/count_tokens", 405, "invalid_request_error"),
    ],
)
def test_unknown_paths_and_wrong_methods_under_messages_answer_in_anthropics_shape(
    method: str, path: str, status: int, kind: str
) -> None:
    response = send(method, path, {})
    assert response.status_code == status
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == kind and path in body["error"]["message"]
    assert body["request_id"] == response.headers["request-id"]
    if status == 405:
        assert "POST" in response.headers["allow"]


def test_other_unknown_paths_keep_the_openai_envelope() -> None:
    for path in ("/v1/messagesx", "/v1/nothing"):
        response = send("GET", path)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
