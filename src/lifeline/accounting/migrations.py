"""The schema, as ordered, named migrations recorded in a table — the same list for SQLite and PostgreSQL.

A migration is applied once, in order, inside a transaction. On PostgreSQL an advisory lock keeps two
replicas starting together from applying the same migration twice. Never edit a migration that has
shipped: add a new one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from lifeline.accounting.db import Database

_ADVISORY_LOCK = 0x11FE11E  # an arbitrary number of Lifeline's own


@dataclass(frozen=True)
class Migration:
    name: str
    apply: Callable[[Database], None]


def _types(db: Database) -> dict[str, str]:
    if db.dialect == "postgres":
        return {"float": "DOUBLE PRECISION", "bigint": "BIGINT", "bool": "BOOLEAN"}
    return {"float": "REAL", "bigint": "INTEGER", "bool": "INTEGER"}


def _m001_keys(db: Database) -> None:
    t = _types(db)
    db.execute(
        f"""CREATE TABLE keys (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            secret_hash TEXT NOT NULL,
            created_at {t["float"]} NOT NULL,
            updated_at {t["float"]} NOT NULL,
            expires_at {t["float"]},
            revoked_at {t["float"]},
            aliases TEXT,
            budget_usd {t["float"]},
            budget_period TEXT,
            rpm INTEGER,
            tpm INTEGER,
            metadata TEXT NOT NULL DEFAULT '{{}}'
        )"""
    )


def _m002_ledger(db: Database) -> None:
    t = _types(db)
    db.execute(
        f"""CREATE TABLE ledger (
            id TEXT PRIMARY KEY,
            request_id TEXT NOT NULL,
            key_id TEXT,
            alias TEXT NOT NULL,
            target TEXT,
            model TEXT,
            outcome TEXT NOT NULL,
            status INTEGER NOT NULL,
            attempts TEXT NOT NULL,
            prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            usage_estimated {t["bool"]} NOT NULL,
            cost_nusd {t["bigint"]} NOT NULL,
            ttft_ms {t["float"]},
            latency_ms {t["float"]} NOT NULL,
            streamed {t["bool"]} NOT NULL,
            started_at {t["float"]} NOT NULL,
            finished_at {t["float"]} NOT NULL
        )"""
    )
    db.execute("CREATE INDEX ledger_started_at ON ledger (started_at)")
    db.execute("CREATE INDEX ledger_key_started_at ON ledger (key_id, started_at)")


def _m003_ledger_rejected(db: Database) -> None:
    """The dead-letter table: ledger records the database refused, kept whole as JSON text (TEXT, not JSONB,
    which would refuse the very values that got them here) with the reason."""
    t = _types(db)
    db.execute(
        f"""CREATE TABLE ledger_rejected (
            id TEXT PRIMARY KEY,
            rejected_at {t["float"]} NOT NULL,
            error TEXT NOT NULL,
            record TEXT NOT NULL
        )"""
    )


def _m004_captures(db: Database) -> None:
    """Captured requests with the answer the client received (`captures`), the shadow candidates' answers
    beside them (`capture_shadows`), and the ledger's mark for shadow calls. JSON is kept as TEXT."""
    t = _types(db)
    false = "FALSE" if db.dialect == "postgres" else "0"
    db.execute(
        f"""CREATE TABLE captures (
            id TEXT PRIMARY KEY,
            request_id TEXT NOT NULL,
            alias TEXT NOT NULL,
            key_id TEXT,
            captured_at {t["float"]} NOT NULL,
            request TEXT NOT NULL,
            response TEXT,
            error TEXT,
            target TEXT,
            model TEXT,
            outcome TEXT NOT NULL,
            streamed {t["bool"]} NOT NULL,
            latency_ms {t["float"]},
            ttft_ms {t["float"]},
            prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            cost_nusd {t["bigint"]} NOT NULL,
            redacted {t["bool"]} NOT NULL,
            shadowed {t["bool"]} NOT NULL
        )"""
    )
    db.execute("CREATE INDEX captures_alias_captured_at ON captures (alias, captured_at)")
    db.execute("CREATE INDEX captures_captured_at ON captures (captured_at)")
    db.execute(
        f"""CREATE TABLE capture_shadows (
            id TEXT PRIMARY KEY,
            capture_id TEXT NOT NULL,
            alias TEXT NOT NULL,
            candidate TEXT NOT NULL,
            target TEXT,
            started_at {t["float"]} NOT NULL,
            response TEXT,
            error TEXT,
            latency_ms {t["float"]},
            prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            cost_nusd {t["bigint"]} NOT NULL
        )"""
    )
    db.execute("CREATE INDEX capture_shadows_capture_id ON capture_shadows (capture_id)")
    db.execute("CREATE INDEX capture_shadows_alias_started_at ON capture_shadows (alias, started_at)")
    db.execute(f"ALTER TABLE ledger ADD COLUMN shadow {t['bool']} NOT NULL DEFAULT {false}")


# 005 and 006 create only what is missing: development builds applied the same tables under other numbers
# (004_responses, 004_audit_gaps) before they landed, and such a database must still start.


def _m005_responses(db: Database) -> None:
    """Stored Responses-API responses (accounting/responses.py): the owner key ('' without auth), the
    conversation's input items up to this response, and the response object, both JSON text."""
    t = _types(db)
    db.execute(
        f"""CREATE TABLE IF NOT EXISTS responses (
            id TEXT PRIMARY KEY,
            key_id TEXT NOT NULL,
            created_at {t["float"]} NOT NULL,
            input TEXT NOT NULL,
            response TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX IF NOT EXISTS responses_created_at ON responses (created_at)")


def _m006_audit_gaps(db: Database) -> None:
    """Speech audits (lifeline audit --store): one row per audited target and language, with the suite and the
    date, so that `max_censorship_gap` reads each target's latest audit."""
    t = _types(db)
    db.execute(
        f"""CREATE TABLE IF NOT EXISTS audit_gaps (
            audit_id TEXT NOT NULL,
            audited_at {t["float"]} NOT NULL,
            suite TEXT NOT NULL,
            target TEXT NOT NULL,
            language TEXT NOT NULL,
            gap {t["float"]},
            low {t["float"]},
            high {t["float"]},
            sensitive_n INTEGER NOT NULL,
            control_n INTEGER NOT NULL,
            PRIMARY KEY (audit_id, target, language)
        )"""
    )
    db.execute("CREATE INDEX IF NOT EXISTS audit_gaps_target_at ON audit_gaps (target, audited_at)")


def _m007_ledger_cache(db: Database) -> None:
    """The ledger's mark for answers served from the response cache: NULL, 'hit' or 'stale' (a CacheUse)."""
    db.execute("ALTER TABLE ledger ADD COLUMN cache TEXT")


MIGRATIONS: tuple[Migration, ...] = (
    Migration("001_keys", _m001_keys),
    Migration("002_ledger", _m002_ledger),
    Migration("003_ledger_rejected", _m003_ledger_rejected),
    Migration("004_captures", _m004_captures),
    Migration("005_responses", _m005_responses),
    Migration("006_audit_gaps", _m006_audit_gaps),
    Migration("007_ledger_cache", _m007_ledger_cache),
)


def migrate(db: Database, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[str]:
    """Apply what is missing; return the names applied now."""
    t = _types(db)
    with db.transaction():
        if db.dialect == "postgres":
            db.execute("SELECT pg_advisory_xact_lock(?)", (_ADVISORY_LOCK,))
        db.execute(
            f"CREATE TABLE IF NOT EXISTS lifeline_migrations (name TEXT PRIMARY KEY, applied_at {t['float']} NOT NULL)"
        )
        done = {row[0] for row in db.query("SELECT name FROM lifeline_migrations")}
        applied = []
        for migration in migrations:
            if migration.name in done:
                continue
            migration.apply(db)
            db.execute(
                "INSERT INTO lifeline_migrations (name, applied_at) VALUES (?, ?)", (migration.name, time.time())
            )
            applied.append(migration.name)
    return applied
