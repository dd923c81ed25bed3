"""Speech audits in the accounting database (table audit_gaps, migration 004): each audit's censorship gap
per target and language, with its suite and date. The routing constraint `max_censorship_gap` reads each
target's latest audit (`latest_gaps`) when a gateway is built or reloaded.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from lifeline.accounting.db import Database
from lifeline.accounting.migrations import migrate


@dataclass(frozen=True, slots=True)
class GapRow:
    """One target's gap in one language: the point value and its 95 % interval (None: not measurable)."""

    target: str
    language: str
    gap: float | None
    low: float | None
    high: float | None
    sensitive_n: int
    control_n: int


def store_audit(db: Database, suite: str, rows: Iterable[GapRow], audited_at: float | None = None) -> str:
    """Record one audit; returns its id. The schema is brought up to date first."""
    migrate(db)
    audit_id = uuid.uuid4().hex
    at = time.time() if audited_at is None else audited_at
    values = [
        (audit_id, at, suite, r.target, r.language, r.gap, r.low, r.high, r.sensitive_n, r.control_n) for r in rows
    ]
    with db.transaction():
        db.executemany(
            "INSERT INTO audit_gaps (audit_id, audited_at, suite, target, language, gap, low, high, sensitive_n, "
            "control_n) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            values,
        )
    return audit_id


def latest_gaps(db: Database) -> dict[str, dict[str, float | None]]:
    """target → language → gap of that target's latest audit (the most recent date; any suite)."""
    migrate(db)
    rows = db.query(
        "SELECT a.target, a.language, a.gap FROM audit_gaps a JOIN ("
        "SELECT target, MAX(audited_at) AS at FROM audit_gaps GROUP BY target"
        ") m ON a.target = m.target AND a.audited_at = m.at"
    )
    latest: dict[str, dict[str, float | None]] = {}
    for target, language, gap in rows:
        latest.setdefault(str(target), {})[str(language)] = None if gap is None else float(gap)
    return latest
