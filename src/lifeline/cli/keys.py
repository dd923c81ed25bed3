"""`lifeline keys …`: create, list, update and revoke virtual keys, straight in the configured database."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from lifeline.cli.common import config_path, read_config
from lifeline.errors import LifelineError

keys_app = typer.Typer(no_args_is_help=True, help="Virtual keys: create, list, update, revoke.")

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")]


def _store(config: Path | None, aliases: list[str] | None = None) -> Any:
    """The key store of the config's database; with `aliases`, each must be one the config file defines."""
    from lifeline.accounting.db import Database, describe_location
    from lifeline.accounting.keys import KeyStore
    from lifeline.accounting.migrations import migrate
    from lifeline.errors import DatabaseError

    cfg = read_config(config)
    path = config_path(config)
    if aliases and path is not None:
        _check_aliases(aliases, set(cfg.aliases), path)
    settings = cfg.accounting
    url = settings.database_url.get_secret_value() if settings.database_url else None
    try:
        db = Database(url=url, data_dir=settings.data_dir)
        migrate(db)
    except DatabaseError as exc:  # its message names no URL and no password
        where = describe_location(url, settings.data_dir)
        typer.echo(f"error: cannot open the database, {where}: {exc}", err=True)
        raise typer.Exit(2) from None
    return KeyStore(db)


def _check_aliases(aliases: list[str], known: set[str], path: Path) -> None:
    """A key limited to an alias the config does not define could never be used: refuse it now."""
    from lifeline.config.presets import suggest

    for alias in aliases:
        if alias not in known:
            typer.echo(
                f"error: --alias {alias}: {path} defines no such alias{suggest(alias, dict.fromkeys(sorted(known)))}",
                err=True,
            )
            raise typer.Exit(2)


def _expiry(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter("use an ISO date or time, e.g. 2026-12-31 or 2026-12-31T18:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def _metadata(pairs: list[str] | None) -> dict[str, str] | None:
    if not pairs:
        return None
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"metadata is written name=value, not {pair!r}")
        out[name] = value
    return out


def _fields(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _fail(exc: LifelineError) -> None:
    typer.echo(f"error: {exc.message}", err=True)
    raise typer.Exit(2)


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Option("--name", help="A name people recognise (team, service).")],
    alias: Annotated[list[str] | None, typer.Option("--alias", help="An alias the key may use (repeat).")] = None,
    budget: Annotated[float | None, typer.Option(help="Budget in USD per period.")] = None,
    period: Annotated[str | None, typer.Option(help="day, month (default) or total.")] = None,
    rpm: Annotated[int | None, typer.Option(help="Requests per minute.")] = None,
    tpm: Annotated[int | None, typer.Option(help="Tokens per minute.")] = None,
    expires: Annotated[str | None, typer.Option(help="Expiry, ISO date or time (UTC unless stated).")] = None,
    meta: Annotated[list[str] | None, typer.Option("--meta", help="Metadata name=value (repeat).")] = None,
    config: ConfigOption = None,
) -> None:
    """Create a key. Its secret is printed once: store it now."""
    fields = _fields(
        aliases=alias,
        budget_usd=budget,
        budget_period=period,
        rpm=rpm,
        tpm=tpm,
        expires_at=_expiry(expires),
        metadata=_metadata(meta),
    )
    try:
        key, secret = _store(config, alias).create(name, **fields)
    except LifelineError as exc:
        _fail(exc)
    typer.echo(f"created key {key.id} ({key.name})")
    typer.echo(f"secret (shown once): {secret}")


@keys_app.command("list")
def list_(
    include_revoked: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    config: ConfigOption = None,
) -> None:
    """List keys (never their secrets)."""
    keys = _store(config).list(include_revoked)
    if as_json:
        typer.echo(orjson.dumps([k.public() for k in keys], option=orjson.OPT_INDENT_2).decode())
        return
    for k in keys:
        budget = f"${k.budget_usd:g}/{k.budget_period}" if k.budget_usd is not None else "-"
        aliases = ",".join(k.aliases) if k.aliases is not None else "*"
        typer.echo(
            f"{k.id}  {k.status():8}  {k.name:20}  aliases={aliases}  budget={budget}  "
            f"rpm={k.rpm or '-'}  tpm={k.tpm or '-'}"
        )


@keys_app.command("update")
def update(
    key_id: Annotated[str, typer.Argument(help="The key's id.")],
    name: Annotated[str | None, typer.Option(help="New name.")] = None,
    alias: Annotated[list[str] | None, typer.Option("--alias", help="Replace the allowed aliases (repeat).")] = None,
    budget: Annotated[float | None, typer.Option(help="Budget in USD per period.")] = None,
    period: Annotated[str | None, typer.Option(help="day, month or total.")] = None,
    rpm: Annotated[int | None, typer.Option(help="Requests per minute.")] = None,
    tpm: Annotated[int | None, typer.Option(help="Tokens per minute.")] = None,
    expires: Annotated[str | None, typer.Option(help="Expiry, ISO date or time.")] = None,
    meta: Annotated[list[str] | None, typer.Option("--meta", help="Replace metadata name=value (repeat).")] = None,
    config: ConfigOption = None,
) -> None:
    """Change a key's limits, aliases or metadata."""
    fields = _fields(
        name=name,
        aliases=alias,
        budget_usd=budget,
        budget_period=period,
        rpm=rpm,
        tpm=tpm,
        expires_at=_expiry(expires),
        metadata=_metadata(meta),
    )
    try:
        key = _store(config, alias).update(key_id, **fields)
    except LifelineError as exc:
        _fail(exc)
    typer.echo(f"updated key {key.id} ({key.name})")


@keys_app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="The key's id.")], config: ConfigOption = None) -> None:
    """Revoke a key: every replica refuses it within the key refresh interval."""
    try:
        key = _store(config).revoke(key_id)
    except LifelineError as exc:
        _fail(exc)
    typer.echo(f"revoked key {key.id} ({key.name})")
