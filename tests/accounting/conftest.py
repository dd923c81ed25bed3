"""Fixtures for accounting tests: a database of either kind, fresh for each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lifeline.accounting.db import Database
from lifeline.accounting.migrations import migrate
from tests.fixtures.postgres import postgres_db_url, postgres_server, postgres_url  # noqa: F401

OpenDb = Callable[[], Database]


@dataclass(frozen=True)
class DbLocation:
    """Where this test's database is: a PostgreSQL URL, or a SQLite data directory."""

    url: str | None
    data_dir: Path | None

    @property
    def dialect(self) -> str:
        return "postgres" if self.url else "sqlite"

    def open(self, cls: type[Database] = Database) -> Database:
        return cls(url=self.url, data_dir=self.data_dir)


@pytest.fixture(params=["sqlite", "postgres"])
def db_location(request: pytest.FixtureRequest, tmp_path: Path) -> DbLocation:
    if request.param == "postgres":
        return DbLocation(url=request.getfixturevalue("postgres_db_url"), data_dir=None)
    return DbLocation(url=None, data_dir=tmp_path / "data")


@pytest.fixture
def open_db(db_location: DbLocation) -> OpenDb:
    """Opens a new connection to this test's own database (SQLite in tmp_path, or a fresh PostgreSQL one)."""
    return db_location.open


@pytest.fixture
def db(open_db: OpenDb) -> Iterator[Database]:
    """A connection to a migrated database of this test's own."""
    database = open_db()
    migrate(database)
    try:
        yield database
    finally:
        database.close()
