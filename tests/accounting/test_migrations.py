"""Named migrations: applied once, in order, recorded, idempotent, atomic, and safe to race on PostgreSQL."""

from __future__ import annotations

import threading
import time

import pytest

from lifeline.accounting.db import Database
from lifeline.accounting.migrations import MIGRATIONS, Migration, migrate
from lifeline.errors import DatabaseError
from tests.accounting.conftest import OpenDb


def _tables(db: Database) -> set[str]:
    if db.dialect == "postgres":
        rows = db.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    else:
        rows = db.query("SELECT name FROM sqlite_master WHERE type = 'table'")
    return {r[0] for r in rows}


def test_applied_once_recorded_and_idempotent(open_db: OpenDb) -> None:
    db = open_db()
    try:
        assert migrate(db) == [m.name for m in MIGRATIONS]
        assert {"keys", "ledger", "responses", "lifeline_migrations"} <= _tables(db)
        recorded = db.query("SELECT name, applied_at FROM lifeline_migrations ORDER BY name")
        assert [r[0] for r in recorded] == [m.name for m in MIGRATIONS]
        assert all(r[1] > 0 for r in recorded)
        assert migrate(db) == []
        assert migrate(db) == []
        assert db.query("SELECT COUNT(*) FROM lifeline_migrations") == [(len(MIGRATIONS),)]
    finally:
        db.close()


def test_only_new_migrations_are_applied_later(open_db: OpenDb) -> None:
    db = open_db()
    try:
        migrate(db)

        def notes(d: Database) -> None:
            d.execute("CREATE TABLE notes (id TEXT PRIMARY KEY)")

        extra = Migration("999_notes", notes)
        assert migrate(db, (*MIGRATIONS, extra)) == ["999_notes"]
        assert "notes" in _tables(db)
        assert migrate(db, (*MIGRATIONS, extra)) == []
    finally:
        db.close()


def test_a_failing_migration_leaves_nothing_behind(open_db: OpenDb) -> None:
    db = open_db()
    try:

        def broken(d: Database) -> None:
            d.execute("CREATE TABLE half_done (id TEXT)")
            d.execute("THIS IS NOT SQL")

        with pytest.raises(DatabaseError):
            migrate(db, (*MIGRATIONS, Migration("003_broken", broken)))
        # one transaction: neither the earlier migrations nor the half-done one stayed
        assert "half_done" not in _tables(db)
        assert "ledger" not in _tables(db)
        assert migrate(db) == [m.name for m in MIGRATIONS]
    finally:
        db.close()


def test_concurrent_migrations_do_not_collide(open_db: OpenDb) -> None:
    """Two replicas starting together: one applies, the other waits and finds nothing to do."""
    calls: list[str] = []

    def slow(d: Database) -> None:
        calls.append("slow")
        time.sleep(0.3)  # widens the window in which the second migrate() could interfere
        d.execute("CREATE TABLE slow_one (id TEXT PRIMARY KEY)")

    migrations = (*MIGRATIONS, Migration("100_slow", slow))
    dbs = [open_db(), open_db()]
    barrier = threading.Barrier(2)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run(d: Database) -> None:
        barrier.wait()
        try:
            results.append(migrate(d, migrations))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(d,)) for d in dbs]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert not errors
        assert sorted(results, key=len) == [[], [m.name for m in migrations]]
        assert calls == ["slow"]
        assert dbs[0].query("SELECT COUNT(*) FROM lifeline_migrations") == [(len(migrations),)]
    finally:
        for d in dbs:
            d.close()


def test_a_database_a_development_build_migrated_under_other_numbers_still_starts(open_db: OpenDb) -> None:
    """Before they landed, the responses and audit tables were created as 004_responses and 004_audit_gaps;
    005 and 006 then find them there and create only what is missing."""
    db = open_db()
    try:
        early = tuple(m for m in MIGRATIONS if m.name < "004")
        renamed = {"005_responses": "004_responses", "006_audit_gaps": "004_audit_gaps"}
        dev = tuple(Migration(renamed[m.name], m.apply) for m in MIGRATIONS if m.name in renamed)
        assert migrate(db, early + dev) == [m.name for m in early + dev]
        assert migrate(db) == [m.name for m in MIGRATIONS if m.name >= "004"]
        assert {"responses", "audit_gaps", "captures"} <= _tables(db)
    finally:
        db.close()
