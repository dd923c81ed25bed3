"""The gateway's one middleware: request ids, the edge guard and the gateway's request count in one hop, and
the hot route (POST /v1/chat/completions) served from it rather than through Starlette's router — with the
same answers and error envelopes as a routed endpoint."""

from __future__ import annotations

import multiprocessing
import re
from typing import Any

import httpx
import pytest
from starlette.routing import Route

import lifeline.server.routes.chat as chat_route
from lifeline.errors import DatabaseUnavailable, InvalidRequest
from lifeline.server.middleware import GatewayMiddleware, client_request_id
from tests.server.fakes import PROMPT, InProcess, make_config, run

CHAT = {"model": "chat", "messages": PROMPT}
INTERNAL = "The gateway hit an internal error; it has been logged."


def routed_chat(served: InProcess) -> Route:
    (route,) = [r for r in served.app.router.routes if isinstance(r, Route) and r.path == "/v1/chat/completions"]
    return route


def test_the_app_has_one_middleware_of_its_own() -> None:
    async def scenario(served: InProcess, client: httpx.AsyncClient) -> list[type]:
        return [m.cls for m in served.app.user_middleware]  # type: ignore[misc]

    classes, _ = run(make_config("ok"), scenario)
    assert classes == [GatewayMiddleware]


def test_chat_completions_is_answered_without_the_router() -> None:
    async def scenario(served: InProcess, client: httpx.AsyncClient) -> list[httpx.Response]:
        async def not_here(scope: Any, receive: Any, send: Any) -> None:
            raise AssertionError("the router served the hot route")

        routed_chat(served).app = not_here
        return [
            await client.post("/v1/chat/completions", json=CHAT),
            await client.get("/v1/chat/completions"),  # another method: the router's 405
            await client.post("/v1/chat/completions/", json=CHAT),  # another path: the router's 404
        ]

    (answer, wrong_method, slash), served = run(make_config("ok"), scenario)
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] == "Hello there"
    assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["x-request-id"])
    assert served.record.request_id == answer.headers["x-request-id"]
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == "method_not_allowed"
    assert wrong_method.headers["allow"] == "POST"
    assert slash.status_code == 404 and "Without the trailing slash" in slash.json()["error"]["message"]
    for response in (wrong_method, slash):
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


@pytest.mark.parametrize(
    ("raised", "status", "message"),
    [
        (InvalidRequest("messages: this is not right."), 400, "messages: this is not right."),
        (DatabaseUnavailable("sqlite: disk I/O error"), 503, None),
        (RuntimeError("a bug, with a secret sk-abcdefabcdefabcdef in it"), 500, INTERNAL),
    ],
)
def test_errors_on_the_hot_route_are_the_envelopes_of_every_other_route(
    raised: Exception, status: int, message: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same exception raised by the directly served chat route and by a routed endpoint (/v1/embeddings
    through Starlette's router and exception middleware) is answered alike."""
    import lifeline.server.routes.embeddings as embeddings_route

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise raised

    monkeypatch.setattr(chat_route, "validate_chat_request", fail)
    monkeypatch.setattr(embeddings_route, "validate_embedding_request", fail)

    async def scenario(served: InProcess, client: httpx.AsyncClient) -> list[httpx.Response]:
        return [
            await client.post("/v1/chat/completions", json=CHAT, headers={"x-request-id": "hot-1"}),
            await client.post("/v1/embeddings", json={"model": "embed", "input": "x"}, headers={"x-request-id": "r-1"}),
        ]

    (hot, routed), _ = run(make_config("ok"), scenario)
    assert hot.status_code == routed.status_code == status
    assert hot.json() == routed.json()
    error = hot.json()["error"]
    if message is not None:
        assert error["message"] == message
    assert "sk-abc" not in hot.text and "Traceback" not in hot.text
    assert (hot.headers["x-request-id"], routed.headers["x-request-id"]) == ("hot-1", "r-1")
    assert hot.headers["content-type"] == routed.headers["content-type"] == "application/json"


def _child_id(queue: Any) -> None:
    queue.put(client_request_id(()))


def test_new_request_ids_are_unique_within_and_across_processes() -> None:
    ids = [client_request_id(()) for _ in range(1000)]
    assert len(set(ids)) == 1000 and all(re.fullmatch(rb"[0-9a-f]{32}", i) for i in ids)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_id, args=(queue,))
    child.start()
    forked = queue.get(timeout=60)
    child.join(60)
    # a forked worker does not continue its parent's sequence: its ids have a prefix of their own
    assert forked not in ids and forked[:16] != ids[-1][:16]
    assert client_request_id([(b"x-request-id", b"mine-1")]) == b"mine-1"
