"""Stored responses written in batches (accounting/responses.py `StoredResponses`), on SQLite and PostgreSQL:
readable at once from memory until written, for their key only and within retention; written at close; a
database that is down keeps them queued (and readable) until it is back, as the ledger keeps its records,
and one it refuses is dropped and counted without holding up the rest;
deleted only once written, so the writer never brings a deleted one back; a full buffer writes through."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lifeline.accounting.db import Database
from lifeline.accounting.migrations import migrate
from lifeline.accounting.responses import ResponseStore, StoredResponses
from lifeline.config.schema import ResponseWritesSettings
from lifeline.errors import DatabaseUnavailable
from tests.accounting.conftest import DbLocation, OpenDb

DAY = 86400.0


def response(rid: str, created_at: float | None = None) -> dict[str, Any]:
    created = time.time() if created_at is None else created_at
    return {"id": rid, "object": "response", "created_at": created, "output": [], "status": "completed"}


ITEMS = [{"type": "message", "role": "user", "content": "Hi — ünïcode"}]


@pytest.fixture
def made() -> Iterator[list[StoredResponses]]:
    stores: list[StoredResponses] = []
    yield stores
    for stored in stores:
        stored.close(timeout=5)


def batched(
    db: Database, open_db: OpenDb, made: list[StoredResponses], retention: float | None = 30, **settings: Any
) -> StoredResponses:
    values: dict[str, Any] = {"mode": "batched", "commit_interval": 0.05} | settings
    stored = StoredResponses(ResponseStore(db, retention), ResponseWritesSettings(**values), open_db)
    made.append(stored)
    return stored


def rows(db: Database) -> list[tuple[Any, ...]]:
    return db.query("SELECT id, key_id FROM responses ORDER BY id")


def wait_until(condition: Callable[[], bool], polls: int = 6000) -> None:
    for _ in range(polls):
        if condition():
            return
        time.sleep(0.005)
    raise AssertionError("condition not reached")


def test_a_queued_response_is_read_from_memory_for_its_key_then_written_at_close(
    db: Database, open_db: OpenDb, made: list[StoredResponses]
) -> None:
    stored = batched(db, open_db, made)  # the writer not started: nothing can reach the table yet

    async def scenario() -> list[Any]:
        await stored.save("key-a", ITEMS, response("resp_1"))
        return [
            await stored.load("resp_1", "key-a"),
            await stored.load("resp_1", "key-b"),
            await stored.load("resp_1", ""),
            await stored.delete("resp_1", "key-b"),
        ]

    mine, other, keyless, deleted_by_other = asyncio.run(scenario())
    assert rows(db) == [] and list(stored.pending) == ["resp_1"]
    assert mine is not None and mine.input == ITEMS and mine.response["id"] == "resp_1"
    assert other is None and keyless is None and deleted_by_other is False
    assert stored.close()
    assert rows(db) == [("resp_1", "key-a")] and stored.pending == {}
    loaded = asyncio.run(stored.load("resp_1", "key-a"))
    assert loaded is not None and loaded == mine


def test_a_read_copy_is_fresh_each_time(db: Database, open_db: OpenDb, made: list[StoredResponses]) -> None:
    stored = batched(db, open_db, made)

    async def scenario() -> tuple[Any, Any]:
        await stored.save("", ITEMS, response("resp_1"))
        first = await stored.load("resp_1", "")
        assert first is not None
        first.input.append({"type": "message", "role": "user", "content": "changed"})
        first.response["status"] = "changed"
        return first, await stored.load("resp_1", "")

    _, second = asyncio.run(scenario())
    assert second.input == ITEMS and second.response["status"] == "completed"


def test_the_writer_writes_queued_responses_in_group_commits(
    db: Database, open_db: OpenDb, made: list[StoredResponses]
) -> None:
    stored = batched(db, open_db, made, batch_size=500)
    stored.start()

    async def scenario() -> None:
        for i in range(40):
            await stored.save("key-a", ITEMS, response(f"resp_{i:02}"))

    asyncio.run(scenario())
    assert stored.flush(10)
    assert len(rows(db)) == 40 and stored.pending == {}
    assert stored.writer is not None and stored.writer.written == 40 and stored.writer.commits < 40


def test_a_queued_response_past_retention_is_gone_at_once(
    db: Database, open_db: OpenDb, made: list[StoredResponses]
) -> None:
    stored = batched(db, open_db, made, retention=2)

    async def scenario() -> list[Any]:
        await stored.save("", [], response("resp_old", time.time() - 3 * DAY))
        await stored.save("", [], response("resp_new", time.time() - DAY))
        return [
            await stored.load("resp_old", ""),
            await stored.delete("resp_old", ""),
            await stored.load("resp_new", ""),
        ]

    old, deleted, new = asyncio.run(scenario())
    assert old is None and deleted is False and new is not None
    assert stored.close()
    assert stored.prune() == 1 and rows(db) == [("resp_new", "")]


def test_a_queued_response_is_written_before_it_is_deleted_and_never_comes_back(
    db: Database, open_db: OpenDb, made: list[StoredResponses]
) -> None:
    stored = batched(db, open_db, made, commit_interval=30)  # written only when asked to
    stored.start()

    async def scenario() -> list[Any]:
        await stored.save("key-a", ITEMS, response("resp_1"))
        return [await stored.delete("resp_1", "key-a"), await stored.load("resp_1", "key-a")]

    deleted, gone = asyncio.run(scenario())
    assert deleted is True and gone is None
    assert stored.close()
    assert rows(db) == [] and stored.pending == {}


def test_auto_batches_on_sqlite_and_writes_immediately_on_postgresql(
    db: Database, open_db: OpenDb, db_location: DbLocation
) -> None:
    auto = StoredResponses(ResponseStore(db, 30), ResponseWritesSettings(), open_db)
    immediate = StoredResponses(ResponseStore(db, 30), ResponseWritesSettings(mode="immediate"), open_db)
    assert (auto.writer is None) is (db_location.url is not None)
    assert immediate.writer is None
    asyncio.run(immediate.save("key-a", ITEMS, response("resp_1")))
    assert rows(db) == [("resp_1", "key-a")] and immediate.pending == {}
    assert immediate.flush() and immediate.close()


def test_a_full_buffer_writes_through_instead_of_dropping(
    db: Database, open_db: OpenDb, made: list[StoredResponses]
) -> None:
    stored = batched(db, open_db, made, buffer_size=1)  # not started: the first one waits in the buffer

    async def scenario() -> None:
        await stored.save("", [], response("resp_queued"))
        await stored.save("", [], response("resp_through"))

    asyncio.run(scenario())
    assert rows(db) == [("resp_through", "")] and list(stored.pending) == ["resp_queued"]
    assert stored.writer is not None and stored.writer.dropped == 0
    assert stored.close()
    assert rows(db) == [("resp_queued", ""), ("resp_through", "")]


def test_a_database_down_keeps_responses_queued_and_readable_until_it_is_back(
    db: Database, db_location: DbLocation, made: list[StoredResponses]
) -> None:
    down = threading.Event()
    down.set()

    def open_db() -> Database:
        if down.is_set():
            raise DatabaseUnavailable("sqlite: unable to open database file")
        return db_location.open()

    values = {"mode": "batched", "commit_interval": 0.01}
    stored = StoredResponses(ResponseStore(db, 30), ResponseWritesSettings(**values), open_db, retry_base=0.01)
    made.append(stored)
    stored.start()
    asyncio.run(stored.save("key-a", ITEMS, response("resp_1")))
    writer = stored.writer
    assert writer is not None
    wait_until(lambda: writer.write_errors >= 3)
    assert writer.queue_depth == 1 and writer.written == 0 and rows(db) == []
    assert asyncio.run(stored.load("resp_1", "key-a")) is not None  # still served from memory
    down.clear()
    assert stored.flush(10)
    assert rows(db) == [("resp_1", "key-a")] and stored.pending == {}


def test_a_response_the_database_refuses_is_dropped_counted_and_the_rest_written(
    tmp_path: Path, made: list[StoredResponses]
) -> None:
    location = DbLocation(url=None, data_dir=tmp_path)
    db = location.open()
    migrate(db)
    stored = batched(db, location.open, made)

    async def scenario() -> None:
        await stored.save("", [], response("resp_good"))
        await stored.save("", [], response("resp_bad", float("nan")))  # SQLite stores NaN as NULL: refused

    asyncio.run(scenario())
    stored.start()
    assert stored.flush(10)
    writer = stored.writer
    assert writer is not None and writer.rejected == 1 and writer.written == 1
    assert rows(db) == [("resp_good", "")] and stored.pending == {}  # nothing left behind in memory
    assert asyncio.run(stored.load("resp_bad", "")) is None
    db.close()


def test_after_a_reload_the_replaced_stores_queued_responses_are_found_until_written(
    db: Database, open_db: OpenDb, made: list[StoredResponses]
) -> None:
    old, new = batched(db, open_db, made), batched(db, open_db, made)  # old's writer not started yet
    asyncio.run(old.save("key-a", ITEMS, response("resp_old")))
    new.carry_from(old)

    async def reads() -> list[Any]:
        return [await new.load("resp_old", "key-a"), await new.load("resp_old", "key-b")]

    found, other = asyncio.run(reads())
    assert found is not None and found.response["id"] == "resp_old" and other is None
    assert rows(db) == []
    old.start()
    assert asyncio.run(new.delete("resp_old", "key-a")) is True  # written by the old writer, then deleted
    assert old.close() and rows(db) == [] and old.pending == {}
    newer = batched(db, open_db, made)
    newer.carry_from(new)
    assert newer.earlier is new and new.earlier is None  # the written-out link is dropped
