"""Tests of accounting: the database layer, migrations, the ledger and usage reports (SQLite and PostgreSQL)."""

from __future__ import annotations

import time
from typing import Any

from lifeline.accounting.records import LedgerRecord


def make_record(**overrides: Any) -> LedgerRecord:
    """A plausible ledger record: a successful, non-streamed request on alias `chat`."""
    now = time.time()
    fields: dict[str, Any] = {
        "request_id": "req-1",
        "key_id": "key-a",
        "alias": "chat",
        "target": "openai",
        "model": "gpt-4o-mini",
        "outcome": "ok",
        "status": 200,
        "attempts": [{"target": "openai", "outcome": "ok", "status": 200, "latency": 0.12}],
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "usage_estimated": False,
        "cost_nusd": 1500,
        "ttft_ms": None,
        "latency_ms": 120.0,
        "streamed": False,
        "started_at": now,
        "finished_at": now + 0.12,
    }
    fields.update(overrides)
    return LedgerRecord(**fields)
