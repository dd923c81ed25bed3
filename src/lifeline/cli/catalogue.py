"""`lifeline models`: the aliases (plain `models` or `models list`), the model catalogue and the host presets."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from lifeline.cli.common import ConfigOption, read_config
from lifeline.config import catalogue
from lifeline.config.catalogue import CAPABILITIES, CatalogueModel
from lifeline.config.presets import PRESETS, suggest

models_app = typer.Typer(help="Aliases, the model catalogue and host presets.")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _list_aliases(config: Path | None) -> None:
    cfg = read_config(config)
    for name, alias in cfg.aliases.items():
        typer.echo(f"{name}: {' -> '.join(alias.targets)}")


@models_app.callback(invoke_without_command=True)
def models(ctx: typer.Context, config: ConfigOption = None) -> None:
    """List the aliases a client may ask for, with their ordered targets (also: catalogue, presets)."""
    if ctx.invoked_subcommand is None:
        _list_aliases(config)


@models_app.command("list")
def list_aliases(config: ConfigOption = None) -> None:
    """List the aliases a client may ask for, with their ordered targets."""
    _list_aliases(config)


@models_app.command("catalogue")
def show_catalogue(
    open_weights: Annotated[
        bool | None, typer.Option("--open-weights/--closed", help="Only open-weight (or only closed) models.")
    ] = None,
    licence: Annotated[str | None, typer.Option(help="Only this licence (apache-2.0, mit, qwen …).")] = None,
    supports: Annotated[
        str | None, typer.Option(help=f"Comma-separated capabilities every model must have: {','.join(CAPABILITIES)}.")
    ] = None,
    min_context: Annotated[
        int | None, typer.Option(help="Only models with at least this many tokens of context.")
    ] = None,
    country: Annotated[
        str | None, typer.Option(help="Only models whose publisher is in this country (ISO alpha-2).")
    ] = None,
    publisher: Annotated[str | None, typer.Option(help="Only models whose publisher contains this text.")] = None,
    host: Annotated[str | None, typer.Option(help="Only models this preset serves (deepseek, vllm …).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Show the model catalogue, filtered: publisher, country, licence, size, context and hosts."""
    wanted = [s.strip() for s in supports.split(",") if s.strip()] if supports else []
    if host is not None and host not in PRESETS:
        typer.echo(f"error: --host: unknown preset {host!r}{suggest(host, PRESETS)}", err=True)
        raise typer.Exit(2)
    try:
        found = catalogue.filter(
            open_weights=open_weights,
            licence=licence,
            supports=wanted,
            min_context=min_context,
            country=country,
            publisher=publisher,
            host=host,
        )
    except ValueError as exc:
        typer.echo(f"error: --supports: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps([m.model_dump(mode="json") for m in found], indent=2, ensure_ascii=False))
        return
    if not found:
        typer.echo("no catalogue model matches", err=True)
        return
    rows = [_catalogue_row(m) for m in found]
    typer.echo(_table(("model", "publisher", "country", "licence", "params", "context", "hosts"), rows))


@models_app.command("presets")
def show_presets(as_json: JsonOption = False) -> None:
    """List the host presets: name, kind, base URL and the variable holding the key."""
    if as_json:
        typer.echo(json.dumps([p.model_dump(mode="json") for p in PRESETS.values()], indent=2, ensure_ascii=False))
        return
    rows = [(p.name, p.kind, p.base_url, p.api_key_env or "-") for p in PRESETS.values()]
    typer.echo(_table(("preset", "kind", "base_url", "key variable"), rows))


def _catalogue_row(model: CatalogueModel) -> tuple[str, ...]:
    hosts = [row.preset for row in model.hosts]
    if model.embedded:
        hosts.append("embedded")
    name = model.id if model.status == "active" else f"{model.id} ({model.status})"
    return (
        name,
        model.publisher,
        model.country,
        model.licence,
        model.parameters or "-",
        f"{model.context:,}",
        ", ".join(hosts) or "-",
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    """Replace the app's plain `models` command with the `models` group (list, catalogue, presets)."""
    app.registered_commands = [
        c for c in app.registered_commands if (c.name or (c.callback.__name__ if c.callback else None)) != "models"
    ]
    app.add_typer(models_app, name="models")
