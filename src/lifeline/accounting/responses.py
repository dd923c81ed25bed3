"""Stored Responses-API responses, in the accounting database (table `responses`, migration 004).

Each stored response belongs to the virtual key that created it ('' when auth is off): another key reads it
as not found. A row holds the conversation's input items up to that response (what previous_response_id
rebuilds the conversation from) and the response object. Rows older than `responses.retention_days` are
unreadable at once and deleted in small batches by `prune`, which the accounting service runs hourly.
Synchronous, like the rest of the database layer: callers go through `asyncio.to_thread`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from lifeline.accounting.db import Database

_DAY = 86400.0
_PRUNE = "DELETE FROM responses WHERE id IN (SELECT id FROM responses WHERE created_at < ? LIMIT ?)"


@dataclass(frozen=True, slots=True)
class StoredResponse:
    input: list[dict[str, Any]]
    response: dict[str, Any]


class ResponseStore:
    def __init__(self, db: Database, retention_days: float | None) -> None:
        self.db = db
        self.retention_days = retention_days

    def cutoff(self, now: float | None = None) -> float:
        """Responses created before this are gone (0: none is)."""
        if self.retention_days is None:
            return 0.0
        return (time.time() if now is None else now) - self.retention_days * _DAY

    def save(self, key_id: str, input_items: list[dict[str, Any]], response: dict[str, Any]) -> None:
        with self.db.transaction():
            self.db.execute(
                "INSERT INTO responses (id, key_id, created_at, input, response) VALUES (?, ?, ?, ?, ?)",
                (
                    response["id"],
                    key_id,
                    float(response["created_at"]),
                    orjson.dumps(input_items).decode(),
                    orjson.dumps(response).decode(),
                ),
            )

    def load(self, response_id: str, key_id: str) -> StoredResponse | None:
        rows = self.db.query(
            "SELECT input, response FROM responses WHERE id = ? AND key_id = ? AND created_at >= ?",
            (response_id, key_id, self.cutoff()),
        )
        if not rows:
            return None
        return StoredResponse(orjson.loads(rows[0][0]), orjson.loads(rows[0][1]))

    def delete(self, response_id: str, key_id: str) -> bool:
        with self.db.transaction():
            deleted = self.db.execute(
                "DELETE FROM responses WHERE id = ? AND key_id = ? AND created_at >= ?",
                (response_id, key_id, self.cutoff()),
            )
        return deleted > 0

    def prune(self, now: float | None = None, batch: int = 1000) -> int:
        """Delete responses past retention, in batches; return how many."""
        if self.retention_days is None:
            return 0
        cutoff, total = self.cutoff(now), 0
        while True:
            with self.db.transaction():
                deleted = self.db.execute(_PRUNE, (cutoff, batch))
            total += deleted
            if deleted < batch:
                return total
