"""accounting.database_url: PostgreSQL and SQLite URLs in their common spellings are read; anything else
is refused at load, naming at most the scheme (the rest of a URL may hold a password)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lifeline.config import ConfigError, parse_config
from lifeline.config.database_url import parse_database_url
from lifeline.errors import DatabaseUrlError

PASSWORD = "pw-very-secret-42"


def config(url: Any) -> dict[str, Any]:
    return {
        "targets": {"main": {"kind": "openai", "base_url": "https://api.example.com/v1", "model": "m1"}},
        "aliases": {"chat": {"targets": ["main"]}},
        "accounting": {"database_url": url},
    }


def loaded_url(url: Any) -> str | None:
    value = parse_config(config(url), env={}).accounting.database_url
    return value.get_secret_value() if value is not None else None


@pytest.mark.parametrize(
    "url",
    [
        f"mysql://root:{PASSWORD}@db:3306/lifeline",
        f"mariadb+pymysql://root:{PASSWORD}@db/lifeline",
        "redis://localhost:6379/0",
        f"root:{PASSWORD}@db:5432/lifeline",  # no scheme at all
        f"host=db user=root password={PASSWORD}",  # a libpq key=value string is not a URL
        "sqlite://",  # in memory: every connection would have its own database
        "sqlite:///:memory:",
        "sqlite://somehost/lifeline.db",
        "sqlite:///lifeline.db?mode=ro",
        "file:///var/lib/lifeline.db",
    ],
)
def test_an_unrecognised_url_is_refused_at_load_without_quoting_it(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        loaded_url(url)
    message = str(caught.value)
    assert message.startswith("accounting.database_url")
    assert PASSWORD not in message and "@db" not in message
    assert "postgresql://" in message  # says what would work


@pytest.mark.parametrize(
    ("url", "normal"),
    [
        (f"postgresql://u:{PASSWORD}@db:5432/ll", f"postgresql://u:{PASSWORD}@db:5432/ll"),
        (f"postgres://u:{PASSWORD}@db/ll", f"postgresql://u:{PASSWORD}@db/ll"),
        (f"postgresql+psycopg://u:{PASSWORD}@db/ll", f"postgresql://u:{PASSWORD}@db/ll"),
        (f"postgresql+psycopg2://u:{PASSWORD}@db/ll", f"postgresql://u:{PASSWORD}@db/ll"),
        (f"POSTGRESQL://u:{PASSWORD}@db/ll", f"postgresql://u:{PASSWORD}@db/ll"),
        (f"  Postgres://u:{PASSWORD}@db/ll\n", f"postgresql://u:{PASSWORD}@db/ll"),
        ("sqlite:///relative/ll.db", "sqlite:///relative/ll.db"),
        ("sqlite:////srv/lifeline/ll.db", "sqlite:////srv/lifeline/ll.db"),
        (" SQLite+pysqlite:////srv/ll.db ", "sqlite:////srv/ll.db"),
    ],
)
def test_common_spellings_are_read_and_normalised(url: str, normal: str) -> None:
    assert loaded_url(url) == normal


def test_an_empty_url_means_none_is_set() -> None:
    assert loaded_url("") is None
    assert loaded_url("   ") is None
    assert loaded_url(None) is None


def test_sqlite_relative_and_absolute_paths() -> None:
    relative = parse_database_url("sqlite:///data/ll.db")
    absolute = parse_database_url("sqlite:////data/ll.db")
    home = parse_database_url("sqlite:///~/ll.db")
    assert relative.dialect == absolute.dialect == "sqlite"
    assert relative.path == Path("data/ll.db") and not relative.path.is_absolute()
    assert absolute.path == Path("/data/ll.db")
    assert home.path == Path.home() / "ll.db"


def test_describe_names_the_place_never_the_password() -> None:
    where = parse_database_url(f"postgresql+psycopg://u:{PASSWORD}@db.internal:6543/ledger").describe()
    assert where == "PostgreSQL at db.internal:6543/ledger"
    assert parse_database_url("sqlite:////srv/ll.db").describe() == "SQLite at /srv/ll.db"


def test_the_parser_refuses_what_the_config_refuses() -> None:
    with pytest.raises(DatabaseUrlError, match="'mysql' is not supported"):
        parse_database_url("mysql://x")
