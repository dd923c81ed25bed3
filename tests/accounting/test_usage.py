"""Usage reports on SQLite and PostgreSQL: grouping, filters, output formats, injection attempts, and the
`lifeline usage` command."""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import typer
from typer.testing import CliRunner

from lifeline.accounting.db import Database
from lifeline.accounting.ledger import record_row, write_batch
from lifeline.accounting.migrations import migrate
from lifeline.accounting.usage import METRICS, UsageQuery, make_query, parse_time, usage_report
from lifeline.cli.usage import register
from lifeline.errors import UsageQueryError
from tests.accounting import make_record
from tests.accounting.conftest import DbLocation
from tests.fixtures.postgres import PostgresServer, fresh_database

ROOT = Path(__file__).resolve().parents[2]


def ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


D1 = ts("2024-05-01T12:00:00")
D1_LATE = ts("2024-05-01T23:59:59")
D2_EARLY = ts("2024-05-02T00:00:01")
D3 = ts("2024-05-03T08:00:00")


def seed(db: Database) -> None:
    """Five requests over three UTC days (two of them a second either side of midnight)."""
    gpt4o = {"target": "openai", "model": "gpt-4o"}
    records = [
        make_record(key_id="a", prompt_tokens=10, completion_tokens=5, cost_nusd=1000, started_at=D1),
        make_record(key_id="a", outcome="error", status=502, target=None, model=None, prompt_tokens=0,
                    completion_tokens=0, cost_nusd=0, started_at=D1_LATE),
        make_record(key_id="b", target="local", model="smollm2", prompt_tokens=20, completion_tokens=30,
                    cost_nusd=0, usage_estimated=True, started_at=D2_EARLY),
        make_record(key_id=None, alias="code", outcome="broken", status=200, prompt_tokens=7, completion_tokens=3,
                    cost_nusd=2_500_000_000, started_at=D2_EARLY, **gpt4o),
        make_record(key_id="b", alias="code", outcome="client_closed", status=499, prompt_tokens=1,
                    completion_tokens=1, cost_nusd=500, started_at=D3, **gpt4o),
    ]  # fmt: skip
    write_batch(db, [record_row(r) for r in records])


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def seeded_location(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DbLocation]:
    """One seeded database per kind for the whole module: reports only read, so tests can share it."""
    server: PostgresServer | None = None
    if request.param == "postgres":
        server = request.getfixturevalue("postgres_server")
        location = DbLocation(url=fresh_database(server), data_dir=None)
    else:
        location = DbLocation(url=None, data_dir=tmp_path_factory.mktemp("usage"))
    db = location.open()
    try:
        migrate(db)
        seed(db)
    finally:
        db.close()
    yield location
    if server is not None and location.url:
        server.drop_database(location.url)


@pytest.fixture
def seeded(seeded_location: DbLocation) -> Iterator[Database]:
    db = seeded_location.open()
    try:
        yield db
    finally:
        db.close()


def report(db: Database, **kwargs: Any) -> list[dict[str, Any]]:
    return usage_report(db, make_query(**kwargs)).rows


def requests_by(rows: list[dict[str, Any]], *names: str) -> dict[tuple[Any, ...], int]:
    return {tuple(r[n] for n in names): r["requests"] for r in rows}


# --- queries ------------------------------------------------------------------------------------------


def test_totals_without_grouping(seeded: Database) -> None:
    assert report(seeded) == [
        {
            "requests": 5,
            "errors": 2,  # "error" and "broken"; a client that hung up is not an error
            "prompt_tokens": 38,
            "completion_tokens": 39,
            "cost_usd": 2.5000015,
            "estimated": 1,
        }
    ]


def test_totals_of_an_empty_ledger_are_zero(db: Database) -> None:
    assert report(db) == [dict.fromkeys(METRICS, 0)]
    assert report(db, by="key") == []


def test_group_by_key_with_unkeyed_requests_last(seeded: Database) -> None:
    rows = report(seeded, by="key")
    assert [r["key"] for r in rows] == ["a", "b", None]
    a, b, none = rows
    assert (a["requests"], a["errors"], a["prompt_tokens"], a["completion_tokens"], a["cost_usd"]) == (
        2,
        1,
        10,
        5,
        1e-6,
    )
    assert (b["requests"], b["errors"], b["estimated"], b["cost_usd"]) == (2, 0, 1, 5e-7)
    assert (none["requests"], none["errors"], none["cost_usd"]) == (1, 1, 2.5)


def test_group_by_utc_day_splits_at_midnight(seeded: Database) -> None:
    assert requests_by(report(seeded, by="day"), "day") == {("2024-05-01",): 2, ("2024-05-02",): 2, ("2024-05-03",): 1}


def test_group_by_several_columns(seeded: Database) -> None:
    rows = report(seeded, by="alias,day")
    assert list(rows[0]) == ["alias", "day", *METRICS]
    assert requests_by(rows, "alias", "day") == {
        ("chat", "2024-05-01"): 2,
        ("chat", "2024-05-02"): 1,
        ("code", "2024-05-02"): 1,
        ("code", "2024-05-03"): 1,
    }
    rows = report(seeded, by=["target", "model"])
    assert requests_by(rows, "target", "model") == {
        ("local", "smollm2"): 1,
        ("openai", "gpt-4o"): 2,
        ("openai", "gpt-4o-mini"): 1,
        (None, None): 1,
    }
    assert [(r["target"], r["model"]) for r in rows][-1] == (None, None)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"since": "2024-05-02"}, 3),
        ({"until": "2024-05-01"}, 2),  # a bare date includes its whole day
        ({"until": D2_EARLY}, 2),  # an instant is exclusive
        ({"since": str(D2_EARLY), "until": "2024-05-02T23:00:00Z"}, 2),
        ({"since": "2024-05-02", "until": "2024-05-02"}, 2),
        ({"since": "2024-05-01T12:00:01+00:00"}, 4),
        ({"since": "2024-05-02T02:00:00+02:00"}, 3),  # an offset is honoured: this is midnight UTC
        ({"key_id": "b"}, 2),
        ({"alias": "code", "model": "gpt-4o"}, 2),
        ({"target": "local"}, 1),
        ({"alias": "chat", "key_id": "b", "since": "2024-05-03"}, 0),
    ],
)
def test_filters(seeded: Database, filters: dict[str, Any], expected: int) -> None:
    assert report(seeded, **filters)[0]["requests"] == expected


@pytest.mark.parametrize(
    "attempt",
    [
        "chat' OR '1'='1",
        "chat'; DROP TABLE ledger; --",
        'x" OR 1=1 --',
        "%",
        "?",
        "%s",
    ],
)
def test_injection_attempts_in_filters_are_inert(seeded: Database, attempt: str) -> None:
    for field in ("key_id", "alias", "target", "model"):
        assert report(seeded, **{field: attempt})[0]["requests"] == 0
    assert report(seeded, since=None, key_id=attempt, by="day") == []
    assert seeded.query("SELECT COUNT(*) FROM ledger") == [(5,)]


@pytest.mark.parametrize(
    "by",
    ["key; DROP TABLE ledger", "day) FROM ledger; --", "started_at", "1", "cost_nusd", "key,key", "alias,nope"],
)
def test_only_known_groupings_are_accepted(seeded: Database, by: str) -> None:
    with pytest.raises(UsageQueryError):
        make_query(by=by)
    assert seeded.query("SELECT COUNT(*) FROM ledger") == [(5,)]


def test_group_names_are_case_and_space_insensitive() -> None:
    assert make_query(by=" Key , DAY ").group_by == ("key", "day")
    with pytest.raises(UsageQueryError):
        UsageQuery(group_by=("Key",))  # the dataclass itself checks exact names


def test_parse_time() -> None:
    assert parse_time(None) is None
    assert parse_time("") is None
    assert parse_time(1700000000) == 1700000000.0
    assert parse_time("1700000000.5") == 1700000000.5
    assert parse_time("2024-05-01") == ts("2024-05-01T00:00:00")
    assert parse_time("2024-05-01", end=True) == ts("2024-05-02T00:00:00")
    assert parse_time("2024-05-01T10:00:00") == ts("2024-05-01T10:00:00")
    assert parse_time("2024-05-01T10:00:00Z", end=True) == ts("2024-05-01T10:00:00")
    for bad in ("yesterday", "2024-13-01", "1; DROP TABLE ledger"):
        with pytest.raises(UsageQueryError):
            parse_time(bad)


# --- output -------------------------------------------------------------------------------------------


def test_csv_json_and_table(seeded: Database) -> None:
    result = usage_report(seeded, make_query(by="key"))
    parsed = list(csv.DictReader(io.StringIO(result.to_csv())))
    assert [r["key"] for r in parsed] == ["a", "b", ""]
    assert parsed[2]["cost_usd"] == "2.5" and parsed[0]["requests"] == "2"
    assert result.to_csv().splitlines()[0] == "key,requests,errors,prompt_tokens,completion_tokens,cost_usd,estimated"

    assert orjson.loads(result.to_json()) == result.rows

    table = result.to_table().splitlines()
    assert table[0].split() == ["key", *METRICS]
    assert table[3].split() == ["-", "1", "1", "7", "3", "2.500000", "0"]
    assert len({len(line) for line in table[1:]}) == 1  # aligned


def test_empty_report_csv_still_has_a_header(db: Database) -> None:
    result = usage_report(db, make_query(by="alias"))
    assert result.to_csv() == "alias,requests,errors,prompt_tokens,completion_tokens,cost_usd,estimated\n"
    assert result.to_json() == "[]"


# --- the CLI ------------------------------------------------------------------------------------------


def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """A root so that `usage` stays a subcommand, as under `lifeline`."""

    register(app)
    return app


def write_config(path: Path, location: DbLocation) -> Path:
    accounting = f"  database_url: {location.url}\n" if location.url else f"  data_dir: {location.data_dir}\n"
    path.write_text(
        "targets:\n"
        "  up: {kind: openai, base_url: 'http://127.0.0.1:9/v1', model: m}\n"
        "aliases:\n"
        "  chat: {targets: [up]}\n"
        f"accounting:\n{accounting}",
        encoding="utf-8",
    )
    return path


def test_cli_reports_from_the_configured_database(seeded_location: DbLocation, tmp_path: Path) -> None:
    config = write_config(tmp_path / "lifeline.yaml", seeded_location)
    runner = CliRunner()

    result = runner.invoke(cli(), ["usage", "--config", str(config), "--by", "alias,day", "--format", "csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["alias"], r["day"], r["requests"]) for r in rows] == [
        ("chat", "2024-05-01", "2"),
        ("chat", "2024-05-02", "1"),
        ("code", "2024-05-02", "1"),
        ("code", "2024-05-03", "1"),
    ]

    args = ["usage", "-c", str(config), "--by", "key", "--since", "2024-05-02", "--key", "b", "--format", "json"]
    result = runner.invoke(cli(), args)
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout) == [
        {"key": "b", "requests": 2, "errors": 0, "prompt_tokens": 21, "completion_tokens": 31,
         "cost_usd": 5e-7, "estimated": 1}
    ]  # fmt: skip

    result = runner.invoke(cli(), ["usage", "-c", str(config), "--alias", "x' OR '1'='1"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].split() == ["0", "0", "0", "0", "0.000000", "0"]


def test_cli_refuses_bad_arguments(tmp_path: Path) -> None:
    config = write_config(tmp_path / "lifeline.yaml", DbLocation(None, tmp_path / "data"))
    runner = CliRunner()
    result = runner.invoke(cli(), ["usage", "-c", str(config), "--by", "key;DROP TABLE ledger"])
    assert result.exit_code == 2
    assert "cannot group by" in result.stderr
    result = runner.invoke(cli(), ["usage", "-c", str(config), "--since", "last tuesday"])
    assert result.exit_code == 2
    assert "not a date" in result.stderr
    result = runner.invoke(cli(), ["usage", "-c", str(config), "--format", "xml"])
    assert result.exit_code == 2


def test_cli_with_no_ledger_yet_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIFELINE_CONFIG", raising=False)
    monkeypatch.setenv("LIFELINE_DATA_DIR", str(tmp_path / "default"))
    result = CliRunner().invoke(cli(), ["usage", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "[]"
    assert "no ledger yet" in result.stderr
    assert not (tmp_path / "default").exists()


def test_cli_uses_the_default_data_dir_without_a_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIFELINE_CONFIG", raising=False)
    monkeypatch.setenv("LIFELINE_DATA_DIR", str(tmp_path))
    db = Database(data_dir=tmp_path)
    try:
        migrate(db)
        seed(db)
    finally:
        db.close()
    result = CliRunner().invoke(cli(), ["usage", "--by", "model"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["model", *METRICS]
    assert [line.split()[0] for line in lines[1:]] == ["gpt-4o", "gpt-4o-mini", "smollm2", "-"]


def test_lifeline_usage_as_installed(tmp_path: Path) -> None:
    """Through the real `lifeline` entry point, in a process of its own."""
    location = DbLocation(None, tmp_path / "data")
    db = location.open()
    try:
        migrate(db)
        seed(db)
    finally:
        db.close()
    config = write_config(tmp_path / "lifeline.yaml", location)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run(
        [sys.executable, "-m", "lifeline.cli.main", "usage", "-c", str(config), "--by", "day", "-f", "csv"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == [
        "2024-05-01,2,1,10,5,1e-06,0",
        "2024-05-02,2,1,27,33,2.5,1",
        "2024-05-03,1,0,1,1,5e-07,0",
    ]
