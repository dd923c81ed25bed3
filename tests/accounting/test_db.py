"""The database layer on SQLite and a real PostgreSQL: statements, transactions, errors, reconnection."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from lifeline.accounting.db import Database
from lifeline.errors import DatabaseError, DatabaseUnavailable
from tests.accounting.conftest import OpenDb
from tests.fixtures.postgres import PostgresServer


def test_sqlite_location_from_data_dir_and_url(tmp_path: Path) -> None:
    in_dir = Database(data_dir=tmp_path / "data")
    by_url = Database(url=f"sqlite:///{tmp_path / 'other.db'}")
    try:
        assert in_dir.dialect == by_url.dialect == "sqlite"
        assert in_dir.path == tmp_path / "data" / "lifeline.db"
        assert by_url.path == tmp_path / "other.db"
        assert in_dir.query("PRAGMA journal_mode") == [("wal",)]
    finally:
        in_dir.close()
        by_url.close()


def test_default_data_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFELINE_DATA_DIR", str(tmp_path / "env"))
    db = Database()
    try:
        assert db.path == tmp_path / "env" / "lifeline.db"
    finally:
        db.close()


def test_statements_and_placeholders(open_db: OpenDb) -> None:
    db = open_db()
    try:
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
        db.executemany("INSERT INTO t (id, name) VALUES (?, ?)", [(1, "a"), (2, "b"), (3, "c")])
        assert db.execute("UPDATE t SET name = ? WHERE id >= ?", ("z", 2)) == 2
        assert db.query("SELECT id, name FROM t ORDER BY id") == [(1, "a"), (2, "z"), (3, "z")]
    finally:
        db.close()


def test_insert_many_keeps_every_value_and_skips_existing_ids(open_db: OpenDb) -> None:
    db = open_db()
    try:
        db.execute("CREATE TABLE t (id TEXT PRIMARY KEY, n BIGINT, x DOUBLE PRECISION, b BOOLEAN, s TEXT)")
        rows = [
            ("a", 2**63 - 1, 1 / 3, True, 'é "quoted" \n line\u2028'),
            ("b", -(2**63), 1_796_084_260.098037, False, None),
            ("c", None, None, None, '{"json": [1]}'),
        ]
        with db.transaction():
            db.insert_many("t", ("id", "n", "x", "b", "s"), rows, skip_existing="id")
        with db.transaction():  # a retry: ids already present are skipped, the new one written
            db.insert_many("t", ("id", "n", "x", "b", "s"), [("a", 0, 0.0, False, "again"), ("d", 1, 2.5, True, "")],
                           skip_existing="id")  # fmt: skip
        got = db.query("SELECT id, n, x, b, s FROM t ORDER BY id")
        assert got == [*rows, ("d", 1, 2.5, True, "")]
        with pytest.raises((TypeError, ValueError)), db.transaction():  # a value it cannot carry: the caller finds it
            db.insert_many("t", ("id", "s"), [("e", "ok"), ("f", "lone \ud800")], skip_existing="id")
        assert db.query("SELECT COUNT(*) FROM t") == [(4,)]
    finally:
        db.close()


def test_insert_many_is_one_statement_on_sqlite(tmp_path: Path) -> None:
    db = Database(data_dir=tmp_path)
    statements: list[str] = []
    try:
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
        db._conn.set_trace_callback(statements.append)
        with db.transaction():
            db.insert_many("t", ("id", "name"), [(i, f"n{i}") for i in range(500)])
        inserts = [sql for sql in statements if sql.startswith("INSERT")]
        assert len(inserts) == 1  # executemany would step it 500 times
        assert db.query("SELECT COUNT(*), SUM(id) FROM t") == [(500, sum(range(500)))]
    finally:
        db.close()


def test_transaction_commits_or_rolls_back_as_a_whole(open_db: OpenDb) -> None:
    db = open_db()
    try:
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        with db.transaction():
            db.execute("INSERT INTO t (id) VALUES (?)", (1,))
            db.execute("INSERT INTO t (id) VALUES (?)", (2,))
        with pytest.raises(DatabaseError), db.transaction():
            db.execute("INSERT INTO t (id) VALUES (?)", (3,))
            db.execute("INSERT INTO t (id) VALUES (?)", (1,))  # duplicate: the whole transaction goes
        assert db.query("SELECT id FROM t ORDER BY id") == [(1,), (2,)]
        # the connection is usable after the failed transaction
        db.execute("INSERT INTO t (id) VALUES (?)", (4,))
        assert db.query("SELECT COUNT(*) FROM t") == [(3,)]
    finally:
        db.close()


def test_errors_are_database_errors(open_db: OpenDb) -> None:
    db = open_db()
    try:
        with pytest.raises(DatabaseError):
            db.query("SELECT * FROM no_such_table")
    finally:
        db.close()


def test_postgres_reconnects_after_the_connection_dies(postgres_server: PostgresServer, postgres_db_url: str) -> None:
    import psycopg

    db = Database(url=postgres_db_url)
    try:
        pid = db.query("SELECT pg_backend_pid()")[0][0]
        with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        # a read is repeated once on a fresh connection, so the caller never sees the dead one
        assert db.query("SELECT 1") == [(1,)]
        assert db.query("SELECT pg_backend_pid()")[0][0] != pid
    finally:
        db.close()


def test_postgres_connection_errors_do_not_leak_the_url() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connection refused
        url = f"postgresql://admin:hunter2secret@127.0.0.1:{closed.getsockname()[1]}/db"
        with pytest.raises(DatabaseError) as info:
            Database(url=url)
    text = str(info.value)
    assert "hunter2secret" not in text and "://" not in text


def test_a_sqlite_file_that_cannot_be_opened_is_a_database_error(tmp_path: Path) -> None:
    (tmp_path / "lifeline.db").mkdir()  # a directory where the file should be: even root cannot open it
    with pytest.raises(DatabaseError, match="sqlite"):
        Database(data_dir=tmp_path)


@pytest.mark.parametrize("scheme", ["postgresql+psycopg", "POSTGRESQL", "Postgres", "postgresql+psycopg2"])
def test_driver_suffixed_and_uppercase_postgres_urls_reach_postgres(scheme: str, postgres_db_url: str) -> None:
    url = " " + postgres_db_url.replace("postgresql", scheme, 1) + "\n"
    db = Database(url=url)
    try:
        assert db.dialect == "postgres"
        assert db.query("SELECT current_database()") == [(postgres_db_url.rsplit("/", 1)[1],)]
    finally:
        db.close()


def test_an_unknown_url_is_an_error_not_sqlite(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match="'mysql' is not supported"):
        Database(url="mysql://root:pw@127.0.0.1/lifeline", data_dir=tmp_path)
    assert not (tmp_path / "lifeline.db").exists()


def test_sqlite_urls_relative_to_the_working_directory_and_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = Database(url="sqlite:///rel/ll.db")
    absolute = Database(url=f"SQLITE+pysqlite:///{tmp_path / 'abs.db'}")  # tmp_path is absolute: four slashes
    try:
        assert relative.path == Path("rel/ll.db")
        assert absolute.path == tmp_path / "abs.db"
    finally:
        relative.close()
        absolute.close()
    assert (tmp_path / "rel" / "ll.db").exists() and (tmp_path / "abs.db").exists()


def test_a_refused_statement_is_not_an_outage(open_db: OpenDb) -> None:
    """The ledger isolates a record the database refuses, and waits out an outage: the two must differ."""
    db = open_db()
    try:
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER CHECK (n > 0))")
        for statement in ("INSERT INTO t (id, n) VALUES (1, 0)", "SELECT * FROM no_such_table"):
            with pytest.raises(DatabaseError) as info:
                db.execute(statement)
            assert not isinstance(info.value, DatabaseUnavailable)
    finally:
        db.close()


def test_a_database_that_cannot_be_reached_is_an_outage(
    tmp_path: Path, postgres_server: PostgresServer, postgres_db_url: str
) -> None:
    (tmp_path / "lifeline.db").mkdir()
    with pytest.raises(DatabaseUnavailable):
        Database(data_dir=tmp_path)
    with pytest.raises(DatabaseUnavailable):
        Database(data_dir=Path("/proc/no-such-place"))
    db = Database(url=postgres_db_url)
    try:
        postgres_server.stop()
        try:
            with pytest.raises(DatabaseUnavailable):
                db.execute("SELECT 1")
            with pytest.raises(DatabaseUnavailable):  # and a new connection cannot be made
                db.execute("SELECT 1")
        finally:
            postgres_server.start()
        assert db.query("SELECT 1") == [(1,)]
    finally:
        db.close()
