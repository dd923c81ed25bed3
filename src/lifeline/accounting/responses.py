"""Stored Responses-API responses, in the accounting database (table `responses`, migration 004).

Each stored response belongs to the virtual key that created it ('' when auth is off): another key reads it
as not found. A row holds the conversation's input items up to that response (what previous_response_id
rebuilds the conversation from) and the response object. Rows older than `responses.retention_days` are
unreadable at once and deleted in small batches by `prune`, which the accounting service runs hourly.

`ResponseStore` is the synchronous table (callers go through `asyncio.to_thread`). `StoredResponses` is what
the request path uses: with batched writes (`responses.writes.mode`, batched on SQLite by default) a response
is kept in memory and queued for a `Writer` thread (accounting/ledger.py) that writes them in group commits,
so storing costs no thread hand-off per request; until its row is committed, reads on this process find the
in-memory copy, so a stored response is readable as soon as its answer is returned. Immediate writes (the
default on PostgreSQL, shared by replicas) store each response through a thread before the answer goes out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from lifeline.accounting.db import Database
from lifeline.accounting.ledger import Table, Writer
from lifeline.config.schema import ResponseWritesSettings
from lifeline.errors import DatabaseUnavailable

_DAY = 86400.0
_COLUMNS = ("id", "key_id", "created_at", "input", "response")
_INSERT = f"INSERT INTO responses ({', '.join(_COLUMNS)}) VALUES (?, ?, ?, ?, ?)"
_PRUNE = "DELETE FROM responses WHERE id IN (SELECT id FROM responses WHERE created_at < ? LIMIT ?)"


@dataclass(frozen=True, slots=True)
class StoredResponse:
    input: list[dict[str, Any]]
    response: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Row:
    """A response as its row: the conversation and the response object already in JSON."""

    id: str
    key_id: str
    created_at: float
    input: str
    response: str

    @classmethod
    def of(cls, key_id: str, input_items: list[dict[str, Any]], response: dict[str, Any]) -> Row:
        return cls(
            response["id"],
            key_id,
            float(response["created_at"]),
            orjson.dumps(input_items).decode(),
            orjson.dumps(response).decode(),
        )

    def params(self) -> tuple[str, str, float, str, str]:
        return (self.id, self.key_id, self.created_at, self.input, self.response)

    def stored(self) -> StoredResponse:
        """Fresh objects, as a read from the database gives."""
        return StoredResponse(orjson.loads(self.input), orjson.loads(self.response))


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
        self.write(Row.of(key_id, input_items, response))

    def write(self, row: Row) -> None:
        with self.db.transaction():
            self.db.execute(_INSERT, row.params())

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


def responses_table(pending: dict[str, Row]) -> Table[Row]:
    """The responses table as a `Writer` writes it. A row leaves `pending` once committed (or refused: it is
    then lost, counted and logged as the writer does), so that a read that misses `pending` finds the row in
    the database. No dead-letter table; retention is pruned by `ResponseStore.prune`."""

    def write(db: Database, rows: Sequence[Sequence[Any]]) -> None:
        with db.transaction():
            db.insert_many("responses", _COLUMNS, rows, skip_existing="id")
        for row in rows:
            pending.pop(row[0], None)

    def forget(db: Database, items: list[tuple[Row, str]]) -> None:
        for row, _ in items:
            pending.pop(row.id, None)

    return Table("responses", Row.params, write, forget, lambda now: None, lambda db, before, limit: 0)


class StoredResponses:
    """Stored responses as the request path uses them (async): batched writes with an in-memory read-through
    of the responses not yet written, or immediate writes through a thread (see the module's docstring)."""

    def __init__(
        self, store: ResponseStore, settings: ResponseWritesSettings, open_db: Callable[[], Database], **writer: Any
    ) -> None:
        self.store = store
        self.settings = settings
        batched = settings.mode == "batched" or (settings.mode == "auto" and store.db.dialect == "sqlite")
        #: responses queued for the writer, by id, until their row is committed
        self.pending: dict[str, Row] = {}
        self.writer: Writer[Row] | None = (
            Writer(settings, open_db, responses_table(self.pending), **writer) if batched else None
        )
        #: the store of the gateway a reload replaced, whose queued responses are read through as well
        self.earlier: StoredResponses | None = None

    def carry_from(self, old: StoredResponses) -> None:
        """After a reload: responses the replaced gateway still has queued (or queues while its requests
        finish) are found through this one until they are written."""
        self.earlier = old
        if old.earlier is not None and not old.earlier.pending:
            old.earlier = None  # written already: the chain stays short

    def start(self) -> None:
        if self.writer is not None:
            self.writer.start()

    def close(self, timeout: float = 10.0) -> bool:
        """Write every queued response and stop the writer (False: some were lost, logged by the writer)."""
        return self.writer.close(timeout) if self.writer is not None else True

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every response queued so far is written; False on timeout."""
        return self.writer.flush(timeout) if self.writer is not None else True

    def prune(self, now: float | None = None) -> int:
        return self.store.prune(now)

    async def save(self, key_id: str, input_items: list[dict[str, Any]], response: dict[str, Any]) -> None:
        row = Row.of(key_id, input_items, response)
        writer = self.writer
        # A full buffer (the database slow or down) writes through a thread rather than drop the response.
        if writer is not None and writer.queue_depth < self.settings.buffer_size:
            self.pending[row.id] = row  # before it is queued: the writer removes it once written
            if writer.record(row):
                return
            self.pending.pop(row.id, None)
        await asyncio.to_thread(self.store.write, row)

    def _queued(self, response_id: str) -> tuple[Writer[Row] | None, Row] | None:
        """A response not yet written (here, or on a gateway a reload replaced), with its writer."""
        stored: StoredResponses | None = self
        while stored is not None:
            row = stored.pending.get(response_id)
            if row is not None:
                return stored.writer, row
            stored = stored.earlier
        return None

    def _mine(self, row: Row, key_id: str) -> bool:
        return row.key_id == key_id and row.created_at >= self.store.cutoff()

    async def load(self, response_id: str, key_id: str) -> StoredResponse | None:
        queued = self._queued(response_id)
        if queued is not None:  # another key's or past retention: none of this key's is in the table either
            return queued[1].stored() if self._mine(queued[1], key_id) else None
        return await asyncio.to_thread(self.store.load, response_id, key_id)

    async def delete(self, response_id: str, key_id: str) -> bool:
        queued = self._queued(response_id)
        if queued is None or not self._mine(queued[1], key_id):
            return await asyncio.to_thread(self.store.delete, response_id, key_id)
        writer = queued[0]
        assert writer is not None

        def written_then_deleted() -> bool:
            # Deleted only once written, so that the writer cannot bring it back afterwards.
            if not writer.flush():
                raise DatabaseUnavailable("the response could not be written before it is deleted")
            return self.store.delete(response_id, key_id)

        return await asyncio.to_thread(written_then_deleted)
