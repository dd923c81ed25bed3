"""Stored Responses-API responses on SQLite and PostgreSQL: kept per key, gone past retention, pruned in
batches, deleted once."""

from __future__ import annotations

import time
from typing import Any

from lifeline.accounting.db import Database
from lifeline.accounting.responses import ResponseStore

DAY = 86400.0


def response(rid: str, created_at: float) -> dict[str, Any]:
    return {"id": rid, "object": "response", "created_at": created_at, "output": [], "status": "completed"}


def test_a_response_is_its_keys_alone(db: Database) -> None:
    store = ResponseStore(db, 30)
    items = [{"type": "message", "role": "user", "content": "Hi — ünïcode"}]
    store.save("key-a", items, response("resp_1", time.time()))
    loaded = store.load("resp_1", "key-a")
    assert loaded is not None and loaded.input == items and loaded.response["id"] == "resp_1"
    assert store.load("resp_1", "key-b") is None and store.load("resp_1", "") is None
    assert not store.delete("resp_1", "key-b")
    assert store.delete("resp_1", "key-a")
    assert store.load("resp_1", "key-a") is None and not store.delete("resp_1", "key-a")


def test_past_retention_a_response_is_gone_at_once_and_pruned_in_batches(db: Database) -> None:
    now = time.time()
    store = ResponseStore(db, 2)
    for i in range(5):
        store.save("", [], response(f"resp_old{i}", now - 3 * DAY))
    store.save("", [], response("resp_new", now - DAY))
    assert store.load("resp_old0", "") is None and not store.delete("resp_old1", "")
    assert store.load("resp_new", "") is not None
    assert store.prune(batch=2) == 5
    assert db.query("SELECT id FROM responses") == [("resp_new",)]
    assert ResponseStore(db, None).prune() == 0
