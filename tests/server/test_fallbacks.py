"""Per-request fallbacks in process (OpenRouter's `models`, LiteLLM's `fallbacks`): further aliases tried in
order when the requested one cannot answer, on chat (whole and streamed), messages, responses and
embeddings; what the answer's headers and the ledger record say; and each wrong list refused before anything
is sent. With a real gateway, the fault wall and the openai SDK: tests/integration/test_fallbacks.py."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest

from lifeline.config import Config, parse_config
from lifeline.errors import InvalidRequest
from lifeline.protocol.fallbacks import MAX_FALLBACKS, Fallbacks, take_fallbacks
from lifeline.providers.base import ChatCall, Completion
from tests.server.fakes import PROMPT, InProcess, in_process

CHAT = {"model": "chat", "messages": PROMPT}


def config(chat: str, backup: str, spare: str = "ok", *, prefill: bool = False) -> Config:
    """Alias `chat` over t1 (serving `chat`), `backup` over t2, t3 (serving `backup`, `spare`), `spare` over
    t3, and the embeddings aliases `embed` (t1) and `embed2` (t2); t3 can continue a stream when `prefill`."""
    models = {"t1": chat, "t2": backup, "t3": spare}
    targets = {
        name: {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": model, "embedding_space": "fake"}
        for name, model in models.items()
    }
    if prefill:
        targets["t3"]["capabilities"] = {"prefill": True}
    aliases = {
        "chat": {"targets": ["t1"]},
        "backup": {"targets": ["t2", "t3"]},
        "spare": {"targets": ["t3"]},
        "embed": {"kind": "embeddings", "targets": ["t1"]},
        "embed2": {"kind": "embeddings", "targets": ["t2"]},
    }
    return parse_config({"targets": targets, "aliases": aliases, "retry": {"max_retries": 0}}, env={})


def post(cfg: Config, path: str, body: dict[str, Any]) -> tuple[httpx.Response, InProcess, list[dict[str, Any]]]:
    """POST `body` to an in-process gateway for `cfg`: the response, what was accounted, and the chat bodies
    the targets were sent for whole answers."""

    async def main() -> tuple[httpx.Response, InProcess, list[dict[str, Any]]]:
        async with in_process(cfg) as served, served.client() as client:
            sent = _record_bodies(served)
            return await client.post(path, json=body), served, sent

    return asyncio.run(main())


def _record_bodies(served: InProcess) -> list[dict[str, Any]]:
    bodies: list[dict[str, Any]] = []
    for provider in served.providers.values():
        complete = provider.complete

        async def recording(call: ChatCall, complete: Any = complete) -> Completion:
            bodies.append(call.body)
            result: Completion = await complete(call)
            return result

        provider.complete = recording  # type: ignore[method-assign]
    return bodies


def attempts(served: InProcess) -> list[tuple[str, str, str | None]]:
    """The ledger record's attempts as (target, outcome, alias)."""
    return [(a["target"], a["outcome"], a.get("alias")) for a in served.record.attempts]


def data_events(response: httpx.Response) -> list[Any]:
    payloads = [line[len("data: ") :] for line in response.text.split("\n") if line.startswith("data: ")]
    return [p if p == "[DONE]" else orjson.loads(p) for p in payloads]


# --- reading the field ------------------------------------------------------------------------------------


def test_the_field_is_taken_off_the_body_and_the_requested_alias_and_duplicates_are_dropped() -> None:
    body = {"model": "chat", "models": ["backup", "chat", "backup", {"model": "spare"}], "messages": PROMPT}
    assert take_fallbacks(body) == Fallbacks("models", ("backup", "spare"))
    assert body == {"model": "chat", "messages": PROMPT}
    litellm = {"model": "chat", "fallbacks": ["spare"]}
    assert take_fallbacks(litellm) == Fallbacks("fallbacks", ("spare",)) and "fallbacks" not in litellm


def test_without_a_model_the_first_name_is_the_requested_one_as_openrouter_allows() -> None:
    body: dict[str, Any] = {"models": ["chat", "backup"], "messages": PROMPT}
    assert take_fallbacks(body) == Fallbacks("models", ("backup",))
    assert body["model"] == "chat"
    assert take_fallbacks({"model": "chat"}) == Fallbacks()
    assert not take_fallbacks({"model": "chat", "models": None})


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"models": ["a"], "fallbacks": ["b"]}, "fallbacks"),
        ({"models": "backup"}, "models"),
        ({"fallbacks": ["a"] * (MAX_FALLBACKS + 1)}, "fallbacks"),
        ({"fallbacks": [{"model": "a", "messages": []}]}, "fallbacks"),
        ({"models": [""]}, "models"),
        ({"models": [3]}, "models"),
    ],
)
def test_a_list_of_the_wrong_shape_is_refused(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        take_fallbacks({"model": "chat", **body})
    assert refused.value.param == param and refused.value.status == 400


# --- chat completions -------------------------------------------------------------------------------------


def test_when_the_requested_alias_cannot_answer_the_next_one_named_does() -> None:
    response, served, sent = post(config("down", "ok"), "/v1/chat/completions", {**CHAT, "models": ["backup"]})
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "Hello there"
    headers = response.headers
    assert (headers["x-lifeline-alias"], headers["x-lifeline-target"], headers["x-lifeline-attempts"]) == (
        "backup",
        "t2",
        "2",
    )
    record = served.record
    assert (record.alias, record.target, record.outcome) == ("backup", "t2", "ok")
    assert attempts(served) == [("t1", "model_not_found", "chat"), ("t2", "ok", "backup")]
    assert len(sent) == 2 and all("models" not in b and "fallbacks" not in b for b in sent)


def test_an_alias_that_answers_leaves_its_fallbacks_untried() -> None:
    response, served, _ = post(config("ok", "ok"), "/v1/chat/completions", {**CHAT, "fallbacks": ["backup"]})
    assert (response.status_code, response.headers["x-lifeline-alias"]) == (200, "chat")
    assert served.record.alias == "chat"
    assert attempts(served) == [("t1", "ok", "chat")]
    assert not served.providers["t2"].called.is_set()


def test_a_request_without_fallbacks_keeps_its_attempt_log_as_before() -> None:
    response, served, _ = post(config("ok", "ok"), "/v1/chat/completions", CHAT)
    assert response.headers["x-lifeline-alias"] == "chat"
    assert [sorted(a) for a in served.record.attempts] == [["latency", "outcome", "status", "target"]]


def test_fallbacks_are_tried_in_order_and_a_target_tried_already_is_not_tried_again() -> None:
    # backup is t2 (down) and t3 (down); spare is t3 again: tried once, under backup.
    body = {**CHAT, "models": ["backup", "spare"]}
    response, served, _ = post(config("down", "down", "down"), "/v1/chat/completions", body)
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "all_targets_failed"
    assert "'chat', 'backup', 'spare'" in error["message"]
    assert attempts(served) == [
        ("t1", "model_not_found", "chat"),
        ("t2", "model_not_found", "backup"),
        ("t3", "model_not_found", "backup"),
    ]
    assert served.record.alias == "chat"  # nobody answered: the requested alias
    assert response.headers["x-lifeline-attempts"] == "3"


def test_the_model_may_be_omitted_when_models_names_it_first() -> None:
    body = {"models": ["chat", "backup"], "messages": PROMPT}
    response, served, _ = post(config("down", "ok"), "/v1/chat/completions", body)
    assert (response.status_code, response.headers["x-lifeline-alias"]) == (200, "backup")
    assert attempts(served) == [("t1", "model_not_found", "chat"), ("t2", "ok", "backup")]


@pytest.mark.parametrize(
    ("names", "status", "code"),
    [
        (["nope"], 400, "model_not_found"),
        (["embed"], 400, "wrong_model_kind"),
    ],
)
def test_a_fallback_that_is_no_chat_alias_is_refused_before_anything_is_sent(
    names: list[str], status: int, code: str
) -> None:
    response, served, _ = post(config("ok", "ok"), "/v1/chat/completions", {**CHAT, "models": names})
    assert response.status_code == status
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, "models")
    assert served.records == [] and not served.providers["t1"].called.is_set()


def test_a_stream_falls_back_before_its_first_content_invisibly() -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}, "fallbacks": ["backup"]}
    response, served, _ = post(config("down", "ok"), "/v1/chat/completions", body)
    events = data_events(response)
    text = "".join(c["delta"].get("content") or "" for e in events[:-1] for c in e["choices"])
    assert text == "Hello there" and events[-1] == "[DONE]"
    assert response.headers["x-lifeline-alias"] == "backup"
    assert (served.record.alias, served.record.streamed, served.record.target) == ("backup", True, "t2")
    assert attempts(served) == [("t1", "model_not_found", "chat"), ("t2", "ok", "backup")]


def test_a_fallback_streams_continuation_stays_within_the_alias_that_answered() -> None:
    # chat (t1) is down; backup's t2 breaks after "Hello" and its t3 continues the answer.
    body = {**CHAT, "stream": True, "models": ["backup"]}
    response, served, _ = post(config("down", "cut", prefill=True), "/v1/chat/completions", body)
    events = data_events(response)
    text = "".join(c["delta"].get("content") or "" for e in events[:-1] for c in e["choices"])
    assert text == "Hello there" and events[-1] == "[DONE]"
    assert (served.record.alias, served.record.target) == ("backup", "t3")
    assert attempts(served) == [
        ("t1", "model_not_found", "chat"),
        ("t2", "ok", "backup"),
        ("t3", "continued", "backup"),
    ]


# --- messages, responses, embeddings ----------------------------------------------------------------------


def test_messages_take_fallbacks_and_refuse_an_unknown_one_in_anthropics_format() -> None:
    message = {"model": "chat", "max_tokens": 64, "messages": PROMPT}
    answered, served, sent = post(config("down", "ok"), "/v1/messages", {**message, "fallbacks": [{"model": "backup"}]})
    assert answered.status_code == 200 and answered.json()["content"] == [{"type": "text", "text": "Hello there"}]
    assert answered.headers["x-lifeline-alias"] == "backup" and served.record.alias == "backup"
    assert "fallbacks" not in sent[0]
    refused, _, _ = post(config("down", "ok"), "/v1/messages", {**message, "fallbacks": ["nope"]})
    assert refused.status_code == 400
    assert refused.json()["type"] == "error" and refused.json()["error"]["type"] == "invalid_request_error"


def test_responses_take_fallbacks() -> None:
    body = {"model": "chat", "input": "Say hello.", "models": ["backup"], "store": False}
    response, served, sent = post(config("down", "ok"), "/v1/responses", body)
    assert response.status_code == 200, response.text
    assert response.json()["output"][0]["content"][0]["text"] == "Hello there"
    assert (response.headers["x-lifeline-alias"], served.record.alias) == ("backup", "backup")
    assert "models" not in sent[0]


def test_embeddings_take_fallbacks_of_their_own_kind_only() -> None:
    body = {"model": "embed", "input": "hello", "fallbacks": ["embed2"]}
    response, served, _ = post(config("down", "ok"), "/v1/embeddings", body)
    assert response.status_code == 200 and response.headers["x-lifeline-alias"] == "embed2"
    assert attempts(served) == [("t1", "model_not_found", "embed"), ("t2", "ok", "embed2")]
    wrong, _, _ = post(config("down", "ok"), "/v1/embeddings", {**body, "fallbacks": ["chat"]})
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "wrong_model_kind"
