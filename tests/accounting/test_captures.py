"""The capture store on SQLite and PostgreSQL: redaction of each pattern, who is captured (sample, opt-out,
size), retention pruning, and reading captures back as eval items; the assembler of streamed answers; the
config's checks of `capture:` and `shadow:`."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from lifeline.accounting.captures import CaptureStore, Plan, Redactor, iter_items
from lifeline.accounting.db import Database
from lifeline.accounting.keys import VirtualKey
from lifeline.config import parse_config
from lifeline.config.schema import CaptureSettings, Config
from lifeline.errors import ConfigError
from lifeline.protocol.assemble import Assembler
from tests.accounting.conftest import OpenDb

DAY = 86_400.0


def make(capture: dict[str, Any] | None = None, shadow: dict[str, Any] | None = None, **aliases: Any) -> Config:
    alias: dict[str, Any] = {"targets": ["a"]}
    if capture is not None:
        alias["capture"] = capture
    if shadow is not None:
        alias["shadow"] = shadow
    return parse_config(
        {
            "targets": {
                "a": {"kind": "openai", "base_url": "http://127.0.0.1:9", "model": "m"},
                "b": {"kind": "openai", "base_url": "http://127.0.0.1:9", "model": "n"},
            },
            "aliases": {"chat": alias, "other": {"targets": ["b"]}, **aliases},
        },
        env={},
    )


# --- redaction -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("mail ann.lee+x@mail.example.co.uk now", "mail [email] now"),
        ("call +1 (555) 123-4567 today", "call [phone] today"),
        ("or 020 7946 0958.", "or [phone]."),
        ("card 4111111111111111 ok", "card [number] ok"),
        ("key sk-proj-AbC123dEf456GhI789 here", "key [key] here"),
        ("token ghp_16C7e42F292c6912E7710c838347Ae178B4a done", "token [key] done"),
        ("blob a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8 end", "blob [key] end"),
        # kept: dates, short numbers, plain words
        ("on 2026-11-30 at 12:30, 3 items cost 1 250", "on 2026-11-30 at 12:30, 3 items cost 1 250"),
        ("a longwordwithoutanydigitsatallinsideithere stays", "a longwordwithoutanydigitsatallinsideithere stays"),
    ],
)
def test_each_built_in_pattern_is_redacted_and_ordinary_text_is_kept(text: str, redacted: str) -> None:
    assert Redactor(CaptureSettings()).text(text) == redacted


def test_user_patterns_redact_too_and_redaction_reaches_every_string_of_a_body() -> None:
    redactor = Redactor(CaptureSettings(redact_patterns=[r"ACME-\d+"]))
    body = {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "order ACME-42 for bob@example.com"}]}],
        "tools": [{"function": {"name": "lookup", "arguments": '{"phone": "+44 20 7946 0958"}'}}],
        "max_tokens": 123456789012,
    }
    out = redactor.value(body)
    assert out["messages"][0]["content"][0]["text"] == "order [redacted] for [email]"
    assert out["tools"][0]["function"]["arguments"] == '{"phone": "[phone]"}'
    assert out["max_tokens"] == 123456789012, "numbers in the JSON are not text"
    assert body["messages"][0]["content"][0]["text"].startswith("order ACME-42"), "the input is not changed"


def test_the_apis_own_ids_are_kept_while_text_around_them_is_redacted() -> None:
    """A completion id of 32 hex digits looks like an API key to the key pattern; it is the API's own
    identifier, not a user's text, and an eval needs it intact (it was stored as "[key]")."""
    completion_id = "chatcmpl-7568d8ee284540cfad15f454404b9c7a"
    call_id = "call_0123456789abcdef0123456789abcdef"
    answer = {
        "id": completion_id,
        "object": "chat.completion",
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": "your key sk-abcdefghijklmnopqrstuvwxyz0123456789",
                    "tool_calls": [{"id": call_id, "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                },
                "finish_reason": "tool_calls",
            }
        ],
    }
    out = Redactor(CaptureSettings()).value(answer)
    assert out["id"] == completion_id and out["choices"][0]["message"]["tool_calls"][0]["id"] == call_id
    assert out["choices"][0]["message"]["content"] == "your key [key]"


def test_redaction_can_be_turned_off() -> None:
    assert Redactor(CaptureSettings(redact=False)).text("bob@example.com") == "bob@example.com"


@pytest.mark.parametrize(
    ("capture", "shadow", "message"),
    [
        ({"redact_patterns": ["(unclosed"]}, None, "redact_patterns"),
        ({"redact_patterns": ["x*"]}, None, "empty string"),
        ({"sample": 1.5}, None, "sample"),
        (None, {"candidates": ["nowhere"], "max_usd_per_day": 1}, "neither a target nor an alias"),
        (None, {"candidates": ["chat"], "max_usd_per_day": 1}, "shadows itself"),
        (None, {"candidates": ["b"]}, "max_usd_per_day"),
    ],
)
def test_bad_capture_and_shadow_settings_are_refused_at_load(
    capture: dict[str, Any] | None, shadow: dict[str, Any] | None, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        make(capture, shadow)
    assert message in str(caught.value)


def test_shadowing_alone_captures_with_the_defaults() -> None:
    config = make(None, {"candidates": ["b", "other"], "max_usd_per_day": 1})
    assert config.capture_of("chat") == CaptureSettings()
    assert config.capture_of("other") is None


# --- who is captured -------------------------------------------------------------------------------------


def key(**metadata: Any) -> VirtualKey:
    now = time.time()
    return VirtualKey(id="k1", name="k", secret_hash="x", created_at=now, updated_at=now, metadata=metadata)


BODY = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


def test_sampling_zero_never_captures_and_one_always_does(open_db: OpenDb) -> None:
    never = CaptureStore(make({"sample": 0}), open_db, random.Random(1))
    always = CaptureStore(make({"sample": 1}), open_db, random.Random(1))
    assert [never.plan("chat", None, BODY) for _ in range(200)] == [None] * 200
    assert all(always.plan("chat", None, BODY) is not None for _ in range(200))
    assert always.plan("other", None, BODY) is None, "an alias without capture: is never captured"


def test_a_sample_captures_about_its_share() -> None:
    store = CaptureStore(make({"sample": 0.25}), Database, random.Random(7))
    share = sum(store.plan("chat", None, BODY) is not None for _ in range(4000)) / 4000
    assert 0.22 < share < 0.28


def test_a_key_that_opts_out_is_never_captured() -> None:
    store = CaptureStore(make({}, {"candidates": ["b"], "max_usd_per_day": 1}), Database)
    assert store.plan("chat", key(capture=False), BODY) is None
    assert store.plan("chat", key(capture=True), BODY) is not None
    assert store.plan("chat", key(team="x"), BODY) is not None


def test_a_request_larger_than_max_bytes_is_not_captured_and_counted() -> None:
    store = CaptureStore(make({"max_bytes": 100}), Database)
    assert store.plan("chat", None, {**BODY, "messages": [{"role": "user", "content": "x" * 200}]}) is None
    assert store.too_large == {"chat": 1}


# --- stored and read back ----------------------------------------------------------------------------------


def capture(store: CaptureStore, plan: Plan, at: float, **extra: Any) -> None:
    fields: dict[str, Any] = {
        "request_id": f"r-{plan.id}",
        "key_id": None,
        "captured_at": at,
        "response": {"object": "chat.completion", "choices": [{"message": {"content": "mail me: a@b.io"}}]},
        "target": "a",
        "model": "m",
        "outcome": "ok",
        "streamed": False,
        "latency_ms": 12.5,
        "ttft_ms": None,
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "cost_nusd": 7_000,
        **extra,
    }
    assert store.capture(plan, **fields)


def shadow(store: CaptureStore, plan: Plan, at: float, **extra: Any) -> None:
    fields: dict[str, Any] = {
        "candidate": "b",
        "target": "b",
        "started_at": at,
        "response": {"object": "chat.completion", "choices": [{"message": {"content": "call 555-123-4567"}}]},
        "error": None,
        "latency_ms": 30.0,
        "prompt_tokens": 3,
        "completion_tokens": 5,
        "cost_nusd": 2_000_000_000,
        **extra,
    }
    assert store.shadow_answer(plan, **fields)


@pytest.fixture
def store(open_db: OpenDb) -> Any:
    config = make({"retention_days": 1}, {"candidates": ["b"], "max_usd_per_day": 5})
    captures = CaptureStore(config, open_db, random.Random(3), prune_every=3600.0)
    captures.writer.start()
    yield captures
    captures.writer.close()


def test_captures_and_shadow_answers_read_back_as_eval_items(store: CaptureStore, open_db: OpenDb) -> None:
    now = time.time()
    first = store.plan("chat", None, {**BODY, "messages": [{"role": "user", "content": "I am bob@example.com"}]})
    second = store.plan("chat", None, BODY)
    assert first is not None and second is not None
    capture(store, first, now - 10)
    shadow(store, first, now - 9)
    shadow(store, first, now - 8, target=None, response=None, error={"status": 503, "code": "x", "message": "down"})
    capture(store, second, now - 5)
    assert store.writer.flush(10)
    db = open_db()
    try:
        items = list(iter_items(db, alias="chat"))
        assert [i["id"] for i in iter_items(db, limit=1)] == [first.id]
        assert [i["id"] for i in iter_items(db, since=now - 7)] == [second.id]
        assert list(iter_items(db, alias="other")) == []
    finally:
        db.close()
    one, two = items
    assert one["request"]["messages"][0]["content"] == "I am [email]"
    assert one["baseline"] == {
        "target": "a",
        "response": {"object": "chat.completion", "choices": [{"message": {"content": "mail me: [email]"}}]},
        "latency_ms": 12.5,
        "ttft_ms": None,
        "cost_usd": 7e-06,
        "error": None,
    }
    answered, failed = one["shadows"]
    assert answered["target"] == "b" and answered["cost_usd"] == 2.0
    assert answered["response"]["choices"][0]["message"]["content"] == "call [phone]"
    assert failed["response"] is None and failed["error"] == {"status": 503, "code": "x", "message": "down"}
    assert "shadows" not in two and one["captured_at"].endswith("Z")


def test_an_answer_larger_than_max_bytes_is_stored_without_its_body(open_db: OpenDb) -> None:
    store = CaptureStore(make({"max_bytes": 300}), open_db)
    store.writer.start()
    try:
        plan = store.plan("chat", None, BODY)
        assert plan is not None
        capture(store, plan, time.time(), response={"choices": [{"message": {"content": "y" * 400}}]})
        assert store.writer.flush(10)
    finally:
        store.writer.close()
    db = open_db()
    try:
        (item,) = iter_items(db)
    finally:
        db.close()
    assert item["baseline"]["response"] is None and item["baseline"]["error"]["code"] == "capture_too_large"


def test_retention_prunes_old_captures_and_their_shadow_answers_per_alias(store: CaptureStore, open_db: OpenDb) -> None:
    now = time.time()
    old, recent = store.plan("chat", None, BODY), store.plan("chat", None, BODY)
    assert old is not None and recent is not None
    capture(store, old, now - 2 * DAY)
    shadow(store, old, now - 2 * DAY)
    capture(store, recent, now - 0.5 * DAY)
    shadow(store, recent, now - 0.5 * DAY)
    # a capture of an alias that captures no more is kept ORPHAN_RETENTION_DAYS (30)
    orphan = Plan("gone", False, BODY)
    store.settings["gone"], store.redactors["gone"] = CaptureSettings(), store.redactors["chat"]
    capture(store, orphan, now - 10 * DAY)
    ancient = Plan("gone", False, BODY)
    capture(store, ancient, now - 31 * DAY)
    assert store.writer.flush(10)
    # the old capture, its shadow answer, the ancient orphan go — by this pass, or the writer's own periodic
    # pass, which may run at the same moment (so the rows are counted below, not the passes' returns)
    store.writer.prune()
    db = open_db()
    try:
        assert {i["id"] for i in iter_items(db)} == {recent.id, orphan.id}
        assert db.query("SELECT COUNT(*) FROM capture_shadows")[0][0] == 1
    finally:
        db.close()


# --- streamed answers, assembled ----------------------------------------------------------------------------


def test_a_streamed_answer_assembles_into_the_whole_answer() -> None:
    assembler = Assembler()
    chunks: list[dict[str, Any]] = [
        {"id": "c1", "model": "m", "created": 5, "choices": [{"index": 0, "delta": {"role": "assistant"}}]},
        {"choices": [{"index": 0, "delta": {"content": "Let me "}}]},
        {"choices": [{"index": 0, "delta": {"content": "look."}}]},
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "get", "arguments": ""},
                            }
                        ]
                    },
                }
            ]
        },
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"q": '}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"x"}'}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12}},
    ]
    for chunk in chunks:
        assembler.add(chunk)
    assert assembler.completion() == {
        "id": "c1",
        "object": "chat.completion",
        "created": 5,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Let me look.",
                    "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "get", "arguments": '{"q": "x"}'}}
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12},
    }
