"""`lifeline usage`: totals from the ledger, grouped and filtered, as a table, CSV or JSON."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from lifeline.accounting.db import Database, default_data_dir
from lifeline.accounting.usage import (
    METRICS,
    UsageReport,
    ledger_exists,
    make_query,
    usage_report,
)
from lifeline.cli.common import read_config
from lifeline.config.database_url import parse_database_url
from lifeline.errors import DatabaseError, UsageQueryError


class OutputFormat(enum.StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def usage(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML config file; its accounting section names the database."),
    ] = None,
    by: Annotated[
        str | None, typer.Option("--by", help="Group by one or more of key,alias,target,model,day (comma-separated).")
    ] = None,
    since: Annotated[str | None, typer.Option(help="From this date/time (ISO 8601, UTC) or epoch, inclusive.")] = None,
    until: Annotated[
        str | None, typer.Option(help="Up to this date/time or epoch; a bare date includes that whole day.")
    ] = None,
    key: Annotated[str | None, typer.Option("--key", help="Only this key id.")] = None,
    alias: Annotated[str | None, typer.Option(help="Only this alias.")] = None,
    target: Annotated[str | None, typer.Option(help="Only this target.")] = None,
    model: Annotated[str | None, typer.Option(help="Only this upstream model.")] = None,
    output: Annotated[OutputFormat, typer.Option("--format", "-f", help="table, csv or json.")] = OutputFormat.table,
    shadow: Annotated[
        bool, typer.Option("--shadow", help="Shadow calls instead of client traffic (docs/eval.md).")
    ] = False,
) -> None:
    """Show usage from the ledger: requests, errors, tokens and cost."""
    try:
        query = make_query(by, since, until, key_id=key, alias=alias, target=target, model=model, shadow=shadow)
    except UsageQueryError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None

    url, data_dir = _database(config)
    empty = UsageReport(columns=(*query.group_by, *METRICS))
    sqlite_path = _sqlite_path(url, data_dir)
    if sqlite_path is not None and not sqlite_path.exists():
        # Opening it would create an empty database where none was: say so instead.
        typer.echo(f"note: no ledger yet at {sqlite_path}", err=True)
        _emit(empty, output)
        return
    try:
        db = Database(url=url, data_dir=data_dir)
    except DatabaseError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    try:
        if not ledger_exists(db):
            typer.echo("note: the database has no ledger yet", err=True)
            report = empty
        else:
            report = usage_report(db, query)
    except DatabaseError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        db.close()
    _emit(report, output)


def _database(config: Path | None) -> tuple[str | None, str | None]:
    """The database URL (None for SQLite) and data directory the config names."""
    accounting = read_config(config).accounting
    url = accounting.database_url.get_secret_value() if accounting.database_url else None
    return url, accounting.data_dir


def _sqlite_path(url: str | None, data_dir: str | None) -> Path | None:
    """Where Database() would put the SQLite file (None for PostgreSQL)."""
    if url and url.strip():
        return parse_database_url(url).path  # the config was checked at load: a URL here is recognised
    return (Path(data_dir).expanduser() if data_dir else default_data_dir()) / "lifeline.db"


def _emit(report: UsageReport, output: OutputFormat) -> None:
    if output is OutputFormat.json:
        typer.echo(report.to_json())
    elif output is OutputFormat.csv:
        typer.echo(report.to_csv(), nl=False)
    else:
        typer.echo(report.to_table(), nl=False)


def register(app: typer.Typer) -> None:
    """Add the `usage` command to the `lifeline` app."""
    app.command("usage")(usage)
