"""One small database layer for SQLite (the default) and PostgreSQL (psycopg 3).

Synchronous by design: it is used from the ledger's writer thread and, for the rare reads (keys, usage
reports), through `asyncio.to_thread`, never on the event loop. SQL is written once with `?` placeholders
and translated for PostgreSQL. A `Database` holds one connection guarded by a lock; open one per thread
that writes.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import orjson

from lifeline.config.database_url import parse_database_url
from lifeline.errors import DatabaseError, DatabaseUnavailable, DatabaseUrlError

Dialect = Literal["sqlite", "postgres"]


# SQLite's primary result codes that say the database (its file, disk, lock) failed rather than the statement:
# BUSY, LOCKED, NOMEM, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, PROTOCOL, NOTADB.
_SQLITE_OUTAGE_CODES = frozenset({5, 6, 7, 8, 10, 11, 13, 14, 15, 26})


def _sqlite_outage(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in _SQLITE_OUTAGE_CODES


def _postgres_outage(exc: Exception) -> bool:
    import psycopg

    # OperationalError: the connection failed or was lost, the server shut down, the disk is full, a
    # serialization failure; InterfaceError: the connection was unusable. Never a verdict on the statement.
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


def default_data_dir() -> Path:
    env = os.environ.get("LIFELINE_DATA_DIR")
    return Path(env).expanduser() if env else Path("~/.local/share/lifeline").expanduser()


def describe_location(url: str | None, data_dir: str | Path | None = None) -> str:
    """Where `Database(url, data_dir)` is, without credentials ("PostgreSQL at host:5432/db"), for messages."""
    if url and url.strip():
        try:
            return parse_database_url(url).describe()
        except DatabaseUrlError:
            return "an unrecognised database URL"
    return f"SQLite at {(Path(data_dir).expanduser() if data_dir else default_data_dir()) / 'lifeline.db'}"


class Database:
    def __init__(self, url: str | None = None, data_dir: str | Path | None = None) -> None:
        """`url` postgresql://… selects PostgreSQL, sqlite:///path a SQLite file (config/database_url.py
        lists the spellings read); without a URL, SQLite at `data_dir`/lifeline.db. Any other URL is an
        error, never a quiet fall-back to SQLite."""
        self._lock = threading.RLock()
        self._json: bool | None = None  # SQLite: whether json_each is there (see insert_many)
        self.dialect: Dialect
        try:
            target = parse_database_url(url) if url and url.strip() else None
        except DatabaseUrlError as exc:
            raise DatabaseError(str(exc)) from None
        if target is not None and target.dialect == "postgres":
            self.dialect = "postgres"
            self._url = target.url
            self._conn: Any = self._connect_postgres()
        else:
            self.dialect = "sqlite"
            if target is not None and target.path is not None:
                path = target.path
            else:
                path = Path(data_dir).expanduser() if data_dir else default_data_dir()
                path = path / "lifeline.db"
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseUnavailable(
                    f"sqlite: cannot create the directory {path.parent}: {exc.strerror}"
                ) from None
            self.path = path
            # A file that cannot be opened is the SQLite form of "the database is down": same error class.
            with self._errors():
                self._conn = self._connect_sqlite(path)

    # --- connections -----------------------------------------------------------------------------

    @staticmethod
    def _connect_sqlite(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        # Switching to WAL takes a lock the busy timeout does not cover: a connection opened while another
        # sets WAL and starts migrating would fail with "database is locked". Once WAL, a file stays so.
        deadline = time.monotonic() + 30
        while str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
            try:
                conn.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _connect_postgres(self) -> Any:
        try:
            import psycopg
        except ImportError:
            raise DatabaseError("PostgreSQL needs psycopg: pip install 'psycopg[binary]'") from None
        try:
            return psycopg.connect(self._url, autocommit=True, connect_timeout=5)
        except psycopg.Error as exc:
            raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {type(exc).__name__}") from None

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgres" else sql

    def _reconnect_if_broken(self) -> None:
        if self.dialect == "postgres" and self._conn.closed:
            self._conn = self._connect_postgres()

    # --- statements ------------------------------------------------------------------------------

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; return the number of rows it changed."""
        with self._lock, self._errors():
            self._reconnect_if_broken()
            cur = self._conn.execute(self._sql(sql), tuple(params))
            return int(cur.rowcount or 0)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._lock, self._errors():
            self._reconnect_if_broken()
            if self.dialect == "postgres":
                with self._conn.cursor() as cur:
                    cur.executemany(self._sql(sql), [tuple(r) for r in rows])
            else:
                self._conn.executemany(sql, [tuple(r) for r in rows])

    def insert_many(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, skip_existing: str | None = None
    ) -> None:
        """Insert rows (values in `columns` order) with one statement, skipping rows whose `skip_existing`
        column (the primary key) is already present. Call it inside `transaction()`.

        On SQLite the rows travel as one JSON array bound to one parameter, `INSERT … SELECT … FROM
        json_each(?)`: one step of one statement, during which sqlite3 releases the GIL, where `executemany`
        binds and steps row by row, taking the GIL back after each (a writer thread stalling a busy event loop
        at high rates; bench/findings.md). JSON keeps the types the columns store: text, integers within 64
        bits, floats (written in shortest round-trip form), booleans as 1/0, NULL. On PostgreSQL psycopg's
        `executemany` sends the rows as one pipeline, one round trip. A value JSON cannot carry (bytes, an
        integer beyond 64 bits, text with a lone surrogate) raises TypeError or ValueError, as binding it
        would: callers fall back to writing row by row to find the row."""
        if not rows:
            return
        with self._lock:
            if self.dialect == "sqlite" and self._sqlite_json():
                self.execute(_json_insert(table, tuple(columns), skip_existing), (orjson.dumps(rows).decode(),))
                return
        self.executemany(_values_insert(table, tuple(columns), skip_existing), rows)

    def _sqlite_json(self) -> bool:
        """Whether this SQLite has the JSON functions (built in since 3.38, usually compiled in before)."""
        if self._json is None:
            try:
                self._conn.execute("SELECT json_extract('[1]', '$[0]') FROM json_each('[]')").fetchall()
                self._json = True
            except sqlite3.Error:
                self._json = False
        return self._json

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._query(sql, params)
        except DatabaseError:
            # A read is safe to repeat: after a server restart the old connection is dead, a new one works.
            if self.dialect != "postgres" or not self._conn.closed:
                raise
            return self._query(sql, params)

    def _query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._lock, self._errors():
            self._reconnect_if_broken()
            cur = self._conn.execute(self._sql(sql), tuple(params))
            return [tuple(row) for row in cur.fetchall()]

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """Statements inside run in one transaction (committed at the end, rolled back on error)."""
        with self._lock:
            self._reconnect_if_broken()
            if self.dialect == "postgres":
                with self._errors(), self._conn.transaction():
                    yield self
            else:
                with self._errors():
                    self._conn.execute("BEGIN IMMEDIATE")
                    try:
                        yield self
                    except BaseException:
                        self._conn.execute("ROLLBACK")
                        raise
                    self._conn.execute("COMMIT")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            cls = DatabaseUnavailable if _sqlite_outage(exc) else DatabaseError
            raise cls(f"sqlite: {exc}") from exc
        except Exception as exc:
            if type(exc).__module__.startswith("psycopg"):
                cls = DatabaseUnavailable if _postgres_outage(exc) else DatabaseError
                # psycopg messages can quote the connection string; keep only the class name
                raise cls(f"postgres: {type(exc).__name__}: {_first_line(exc)}") from None
            raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()


@functools.cache
def _json_insert(table: str, columns: tuple[str, ...], skip_existing: str | None) -> str:
    values = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(columns)))
    # "WHERE true": without it SQLite would read ON CONFLICT as the join's ON clause.
    sql = f"INSERT INTO {table} ({', '.join(columns)}) SELECT {values} FROM json_each(?) WHERE true"
    return f"{sql} ON CONFLICT ({skip_existing}) DO NOTHING" if skip_existing else sql


@functools.cache
def _values_insert(table: str, columns: tuple[str, ...], skip_existing: str | None) -> str:
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
    return f"{sql} ON CONFLICT ({skip_existing}) DO NOTHING" if skip_existing else sql


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else ""
    return "" if "password" in line.lower() or "://" in line else line
