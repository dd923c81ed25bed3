"""`lifeline capture export`: captured requests, with the answers their clients got and the shadow
candidates' answers, as JSON Lines in the eval item format (docs/eval.md) — what `lifeline eval` reads."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import orjson
import typer

from lifeline.accounting.captures import iter_items
from lifeline.accounting.db import Database
from lifeline.accounting.migrations import migrate
from lifeline.cli.common import ConfigOption, read_config
from lifeline.errors import DatabaseError

capture_app = typer.Typer(no_args_is_help=True, help="Captured traffic (aliases with capture: or shadow:).")


def _since(text: str | None) -> float | None:
    """An ISO 8601 date or date-time (UTC unless it names a zone), or None; a bad one exits 2."""
    if text is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        typer.echo(f"error: --since {text!r} is not a date (write 2026-11-30 or 2026-11-30T18:00:00Z)", err=True)
        raise typer.Exit(2) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


@capture_app.command("export")
def export(
    out: Annotated[Path, typer.Option("--out", "-o", help="The JSON Lines file to write ('-': standard output).")],
    config: ConfigOption = None,
    alias: Annotated[str | None, typer.Option(help="Only this alias's captures.")] = None,
    since: Annotated[str | None, typer.Option(help="Captured at or after this date/time (ISO 8601, UTC).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many items (oldest first).")] = None,
) -> None:
    """Write captured pairs as eval items, one JSON object a line."""
    start = _since(since)
    accounting = read_config(config).accounting
    url = accounting.database_url.get_secret_value() if accounting.database_url else None
    try:
        db = Database(url=url, data_dir=accounting.data_dir)
    except DatabaseError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    try:
        migrate(db)  # an older database gets the capture tables (empty) rather than an error
        lines = [orjson.dumps(item) + b"\n" for item in iter_items(db, alias=alias, since=start, limit=limit)]
    except DatabaseError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        db.close()
    payload = b"".join(lines)
    count = len(lines)
    if str(out) == "-":
        typer.echo(payload.decode(), nl=False)
    else:
        try:
            out.write_bytes(payload)
        except OSError as exc:
            typer.echo(f"error: cannot write {out}: {exc.strerror}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"wrote {count} item(s) to {out}", err=True)


def register(app: typer.Typer) -> None:
    """Add `capture` to the `lifeline` app."""
    app.add_typer(capture_app, name="capture")
