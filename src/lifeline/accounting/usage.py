"""Usage reports from the ledger: requests, errors, tokens and cost, grouped by key, alias, target, model
and/or day (UTC), filtered by time range, key, alias, target and model.

Grouping names are looked up in a fixed table of SQL expressions and filter values only ever travel as
bound parameters, so nothing a user types becomes SQL. The same queries run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from lifeline.accounting.db import Database, Dialect
from lifeline.accounting.records import usd
from lifeline.attempts import Outcome
from lifeline.errors import DatabaseError, UsageQueryError

#: what a report can be grouped by, and the SQL each name stands for
_GROUP_SQL: dict[str, dict[Dialect, str]] = {
    "key": {"sqlite": "key_id", "postgres": "key_id"},
    "alias": {"sqlite": "alias", "postgres": "alias"},
    "target": {"sqlite": "target", "postgres": "target"},
    "model": {"sqlite": "model", "postgres": "model"},
    "day": {
        "sqlite": "strftime('%Y-%m-%d', started_at, 'unixepoch')",
        "postgres": "to_char(to_timestamp(started_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    },
}
GROUPS: tuple[str, ...] = tuple(_GROUP_SQL)

#: the totals every report row carries, after its group columns
METRICS: tuple[str, ...] = ("requests", "errors", "prompt_tokens", "completion_tokens", "cost_usd", "estimated")

# "client_closed" is the client's choice, not a failure; "broken" is a stream that failed after content.
_TOTALS_SQL = (
    "COUNT(*), "
    "COALESCE(SUM(CASE WHEN outcome IN ('error', 'broken') THEN 1 ELSE 0 END), 0), "
    "COALESCE(SUM(prompt_tokens), 0), "
    "COALESCE(SUM(completion_tokens), 0), "
    "COALESCE(SUM(cost_nusd), 0), "
    "COALESCE(SUM(CASE WHEN usage_estimated THEN 1 ELSE 0 END), 0)"
)


@dataclass(frozen=True)
class UsageQuery:
    """What to report. `since` is inclusive and `until` exclusive, both epoch seconds (see `parse_time`)."""

    group_by: tuple[str, ...] = ()
    since: float | None = None
    until: float | None = None
    key_id: str | None = None
    alias: str | None = None
    target: str | None = None
    model: str | None = None
    #: False: client traffic only (the default); True: shadow calls only (docs/eval.md)
    shadow: bool = False

    def __post_init__(self) -> None:
        for name in self.group_by:
            if name not in _GROUP_SQL:
                raise UsageQueryError(f"cannot group by {name!r} (choose from {', '.join(GROUPS)})")
        if len(set(self.group_by)) != len(self.group_by):
            raise UsageQueryError(f"a grouping is named twice: {', '.join(self.group_by)}")


@dataclass(frozen=True)
class UsageReport:
    columns: tuple[str, ...]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        return orjson.dumps(self.rows, option=orjson.OPT_INDENT_2).decode()

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        return out.getvalue()

    def to_table(self) -> str:
        """Aligned text for a terminal; numbers right-aligned, cost to the micro-dollar."""
        cells = [[_cell(row[c]) for c in self.columns] for row in self.rows]
        widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(self.columns)]
        numeric = [c in METRICS for c in self.columns]

        def line(values: Sequence[str]) -> str:
            parts = (v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True))
            return "  ".join(parts).rstrip()

        return "\n".join([line(self.columns), *(line(r) for r in cells)]) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


def parse_group_by(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """`"key,day"` or `["key", "day"]` → ("key", "day"); validated when the query is built."""
    if spec is None:
        return ()
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    return tuple(p.strip().lower() for p in parts if p.strip())


def parse_time(value: str | float | None, *, end: bool = False) -> float | None:
    """Epoch seconds from an epoch number or an ISO 8601 date / date-time (UTC unless an offset is given).

    With `end=True` a bare date means the end of that day, so `--until 2024-05-31` includes May 31.
    """
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        if len(text) == 10:  # YYYY-MM-DD
            day = dt.date.fromisoformat(text)
            start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
            return (start + dt.timedelta(days=1) if end else start).timestamp()
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageQueryError(f"not a date, date-time or epoch: {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def make_query(
    by: str | Sequence[str] | None = None,
    since: str | float | None = None,
    until: str | float | None = None,
    key_id: str | None = None,
    alias: str | None = None,
    target: str | None = None,
    model: str | None = None,
    shadow: bool = False,
) -> UsageQuery:
    """A query from what a user typed (comma-separated groupings, ISO dates or epochs)."""
    return UsageQuery(
        group_by=parse_group_by(by),
        since=parse_time(since),
        until=parse_time(until, end=True),
        key_id=key_id or None,
        alias=alias or None,
        target=target or None,
        model=model or None,
        shadow=shadow,
    )


def _has_shadow_column(db: Database) -> bool:
    try:
        db.query("SELECT shadow FROM ledger WHERE 1 = 0")
    except DatabaseError:
        return False
    return True


def usage_report(db: Database, query: UsageQuery) -> UsageReport:
    """Totals per group, ordered by the group columns (empty groups last)."""
    exprs = [_GROUP_SQL[name][db.dialect] for name in query.group_by]
    where: list[str] = []
    params: list[Any] = []
    if _has_shadow_column(db):  # a ledger written before migration 004 holds client traffic only
        where.append("shadow = ?")
        params.append(query.shadow)
    elif query.shadow:
        return UsageReport(columns=(*query.group_by, *METRICS))
    if query.since is not None:
        where.append("started_at >= ?")
        params.append(query.since)
    if query.until is not None:
        where.append("started_at < ?")
        params.append(query.until)
    for column, value in (
        ("key_id", query.key_id),
        ("alias", query.alias),
        ("target", query.target),
        ("model", query.model),
    ):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)

    sql = f"SELECT {', '.join([*exprs, _TOTALS_SQL])} FROM ledger"
    if where:
        sql += " WHERE " + " AND ".join(where)
    if exprs:
        # NULLs sort last on both databases (SQLite would put them first, PostgreSQL last).
        sql += " GROUP BY " + ", ".join(exprs) + " ORDER BY " + ", ".join(f"({e}) IS NULL, {e}" for e in exprs)

    columns = (*query.group_by, *METRICS)
    rows: list[dict[str, Any]] = []
    for raw in db.query(sql, params):
        groups = dict(zip(query.group_by, raw[: len(exprs)], strict=True))
        requests, errors, prompt, completion, cost, estimated = (int(v) for v in raw[len(exprs) :])
        rows.append(
            {
                **groups,
                "requests": requests,
                "errors": errors,
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "cost_usd": usd(cost),
                "estimated": estimated,
            }
        )
    return UsageReport(columns=columns, rows=rows)


def ledger_exists(db: Database) -> bool:
    """Whether the ledger table is there (a fresh data directory has none until the gateway first runs)."""
    if db.dialect == "postgres":
        return db.query("SELECT to_regclass('ledger') IS NOT NULL")[0][0] is True
    return bool(db.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ledger'"))


def per_minute(db: Database, since: float, minutes: int = 60) -> list[tuple[int, int]]:
    """Client requests and errors in each minute from `since` (for the console's sparklines): `minutes`
    pairs (requests, errors), oldest first. Reads the ledger through its index on started_at."""
    bucket = {
        "sqlite": "CAST((started_at - ?) / 60 AS INTEGER)",
        "postgres": "CAST(FLOOR((started_at - ?) / 60) AS INTEGER)",
    }[db.dialect]
    sql = (
        f"SELECT {bucket}, COUNT(*), COALESCE(SUM(CASE WHEN outcome IN ('error', 'broken') THEN 1 ELSE 0 END), 0) "
        "FROM ledger WHERE started_at >= ? AND started_at < ?"
    )
    params: list[Any] = [since, since, since + minutes * 60]
    if _has_shadow_column(db):
        sql += " AND shadow = ?"
        params.append(False)
    sql += " GROUP BY 1"
    found = [(0, 0)] * minutes
    for index, requests, errors in db.query(sql, params):
        if 0 <= int(index) < minutes:
            found[int(index)] = (int(requests), int(errors))
    return found


def recent_takeovers(db: Database, since: float, limit: int = 100) -> list[dict[str, Any]]:
    """The latest client requests since `since` whose stream another target took over mid-answer (an attempt
    continued or replayed), newest first: request id, key, alias, the target that finished it, when, and the
    attempts in order (the ledger's form: target, outcome, status)."""
    marks = [f'%"outcome":"{outcome.value}"%' for outcome in (Outcome.CONTINUED, Outcome.REPLAYED)]
    sql = (
        "SELECT request_id, key_id, alias, target, outcome, started_at, attempts FROM ledger "
        "WHERE started_at >= ? AND (attempts LIKE ? OR attempts LIKE ?) ORDER BY started_at DESC LIMIT ?"
    )
    rows = []
    for request_id, key_id, alias, target, outcome, started_at, attempts in db.query(sql, [since, *marks, limit]):
        try:
            steps = orjson.loads(attempts)
        except orjson.JSONDecodeError:
            steps = []
        rows.append(
            {
                "request_id": request_id,
                "key_id": key_id,
                "alias": alias,
                "target": target,
                "outcome": outcome,
                "at": float(started_at),
                "attempts": [s for s in steps if isinstance(s, dict)],
            }
        )
    return rows
