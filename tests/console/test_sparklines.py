"""The console's ledger queries, on SQLite and PostgreSQL: client requests and errors per minute (the
sparklines), and the streams another target took over (the Failovers page)."""

from __future__ import annotations

from pathlib import Path

from lifeline.accounting.db import Database
from lifeline.accounting.migrations import migrate
from lifeline.accounting.usage import per_minute, recent_takeovers

SINCE = 1_800_000_000.0  # a whole minute


def fill(db: Database) -> None:
    rows = [
        # (started_at, outcome, shadow)
        (SINCE - 1, "ok", False),  # the minute before: not counted
        (SINCE, "ok", False),
        (SINCE + 59.9, "error", False),
        (SINCE + 60, "broken", False),
        (SINCE + 61, "ok", True),  # a shadow call: not client traffic
        (SINCE + 3 * 60 + 5, "client_closed", False),
        (SINCE + 5 * 60, "ok", False),  # after the window
    ]
    for i, (started, outcome, shadow) in enumerate(rows):
        db.execute(
            "INSERT INTO ledger (id, request_id, alias, outcome, status, attempts, prompt_tokens, completion_tokens, "
            "usage_estimated, cost_nusd, latency_ms, streamed, started_at, finished_at, shadow) "
            "VALUES (?, ?, 'chat', ?, 200, '[]', 1, 1, ?, 0, 1.0, ?, ?, ?, ?)",
            (f"l{i}", f"r{i}", outcome, False, False, started, started + 1, shadow),
        )


def check(db: Database) -> None:
    migrate(db)
    fill(db)
    assert per_minute(db, SINCE, 5) == [(2, 1), (1, 1), (0, 0), (1, 0), (0, 0)]
    attempts = '[{"target":"a","outcome":"error","status":500},{"target":"b","outcome":"continued","status":200}]'
    db.execute(
        "INSERT INTO ledger (id, request_id, alias, target, outcome, status, attempts, prompt_tokens, "
        "completion_tokens, usage_estimated, cost_nusd, latency_ms, streamed, started_at, finished_at) "
        "VALUES ('c1', 'req-c', 'chat', 'b', 'ok', 200, ?, 1, 1, ?, 0, 1.0, ?, ?, ?)",
        (attempts, False, True, SINCE + 10, SINCE + 11),
    )
    found = recent_takeovers(db, SINCE)
    assert [(r["request_id"], [a["outcome"] for a in r["attempts"]]) for r in found] == [
        ("req-c", ["error", "continued"])
    ]
    assert recent_takeovers(db, SINCE + 11) == []


def test_per_minute_on_sqlite(tmp_path: Path) -> None:
    db = Database(data_dir=tmp_path)
    try:
        check(db)
    finally:
        db.close()


def test_per_minute_on_postgres(postgres_db_url: str) -> None:
    db = Database(postgres_db_url)
    try:
        check(db)
    finally:
        db.close()
