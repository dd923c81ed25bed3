"""Database URLs: which ones Lifeline recognises, and what each one means.

Only PostgreSQL and SQLite are served. Anything else is refused when the config is loaded — a URL that
silently fell back to SQLite would give two replicas two separate key stores. Schemes are read without
regard to case and with the driver suffixes other tools write (`postgresql+psycopg://`,
`sqlite+pysqlite:///`); surrounding whitespace is ignored. Error messages name the scheme at most, never
the rest of the URL: it may hold a password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from lifeline.errors import DatabaseUrlError

#: schemes read as PostgreSQL (psycopg 3 does the talking, whatever driver the suffix names)
POSTGRES_SCHEMES = frozenset(
    {
        "postgresql",
        "postgres",
        "postgresql+psycopg",
        "postgresql+psycopg2",
        "postgresql+psycopg3",
        "postgresql+asyncpg",
        "postgresql+pg8000",
    }
)
#: schemes read as SQLite
SQLITE_SCHEMES = frozenset({"sqlite", "sqlite+pysqlite", "sqlite+aiosqlite"})

_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]{0,30}$")
_FORMS = (
    "use postgresql://user:password@host:port/database, or sqlite:///relative/path.db or sqlite:////absolute/path.db"
)


@dataclass(frozen=True)
class DatabaseUrl:
    dialect: Literal["postgres", "sqlite"]
    #: the URL in its normal form: `postgresql://…` as libpq reads it, or `sqlite:///<path>`
    url: str
    #: SQLite: the database file (relative paths are relative to the working directory)
    path: Path | None = None

    def describe(self) -> str:
        """Where the database is, without credentials: for error messages and logs."""
        if self.path is not None:
            return f"SQLite at {self.path}"
        parts = urlsplit(self.url)
        try:
            host, port = parts.hostname, parts.port
        except ValueError:
            host, port = parts.hostname, None
        where = f"{host or 'localhost'}{f':{port}' if port else ''}{parts.path or ''}"
        return f"PostgreSQL at {where}"


def parse_database_url(text: str) -> DatabaseUrl:
    """Read a database URL; raise DatabaseUrlError for anything that is not PostgreSQL or SQLite."""
    url = text.strip()
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise DatabaseUrlError(f"not a database URL: {_FORMS}")
    scheme = scheme.lower()
    if scheme in POSTGRES_SCHEMES:
        return DatabaseUrl("postgres", f"postgresql://{rest}")
    if scheme in SQLITE_SCHEMES:
        return _sqlite(rest)
    named = f"'{scheme}'" if _SCHEME.match(scheme) else "in this URL"
    raise DatabaseUrlError(f"the scheme {named} is not supported (only PostgreSQL and SQLite are): {_FORMS}")


def _sqlite(rest: str) -> DatabaseUrl:
    # sqlite:///a.db → "/a.db" here → the relative path a.db; sqlite:////srv/a.db → the absolute /srv/a.db
    if not rest.startswith("/"):
        raise DatabaseUrlError(f"a SQLite URL names a file, not a host: {_FORMS}")
    raw = rest[1:]
    if not raw or raw == ":memory:":
        raise DatabaseUrlError(
            f"an in-memory SQLite database cannot hold keys and the ledger (every connection would see "
            f"its own): {_FORMS}"
        )
    if "?" in raw:
        raise DatabaseUrlError(f"a SQLite URL takes no query parameters: {_FORMS}")
    path = Path(raw).expanduser()
    return DatabaseUrl("sqlite", f"sqlite:///{path}", path)
