"""`lifeline models`: the aliases (plain `models` or `models list`), the model catalogue, the host presets, and
the local models for the embedded engine (`local`, `pull`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
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
    if model.local:
        hosts.append("embedded (pull)")
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


# ---- local models for the embedded engine -----------------------------------------------------------


def hub_fetch() -> Callable[[str, str], str]:
    """The hub download the embedded engine itself uses for `hf:` models, so that a pulled file lands in
    the cache the engine reads. A function so that tests can put their own fetch in its place."""
    from lifeline.providers.llamacpp import _hub_fetch

    return _hub_fetch


def _shipped_size_mb(model: CatalogueModel) -> int | None:
    from lifeline.errors import ModelResolutionError
    from lifeline.providers.llamacpp import resolve_model

    try:
        path, _ = resolve_model(model.embedded or "")
    except ModelResolutionError:
        return None
    return round(path.stat().st_size / 1e6)


def _local_facts(model: CatalogueModel) -> dict[str, Any]:
    local = model.local
    return {
        "id": model.id,
        "name": model.name,
        "publisher": model.publisher,
        "parameters": model.parameters,
        "context": model.context,
        "licence": model.licence,
        "spec": local.spec if local else model.embedded,
        "size_mb": local.size_mb if local else _shipped_size_mb(model),
        "shipped": local is None,
        "file": local.model_dump(mode="json") if local else None,
        "quality": [q.model_dump(mode="json") for q in model.quality],
        "source": model.source,
    }


@models_app.command("local")
def show_local(as_json: JsonOption = False) -> None:
    """List the models recommended for the embedded engine: size, licence and published quality figures."""
    models = catalogue.local_models()
    if as_json:
        typer.echo(json.dumps([_local_facts(m) for m in models], indent=2, ensure_ascii=False))
        return
    rows = []
    for model in models:
        facts = _local_facts(model)
        size = "-" if facts["size_mb"] is None else f"{facts['size_mb']:,} MB"
        if model.local is not None and not model.local.verified:
            size += "*"
        figures = ", ".join(f"{q.benchmark} {q.score:g}" for q in model.quality) or "-"
        where = "shipped" if model.local is None else f"{model.local.repo}/{model.local.file}"
        rows.append((model.id, model.parameters or "-", model.licence, size, figures, where))
    typer.echo(_table(("model", "params", "licence", "size", "quality", "file"), rows))
    typer.echo("\nquality figures, as published (higher is better; each names the checkpoint it measured):")
    for model in models:
        for q in model.quality:
            typer.echo(f"  {model.id}: {q.benchmark} {q.score:g} ({q.setting}) {q.source}")
    typer.echo("* size not read on the repository's page (lifeline models local --json says why)")
    typer.echo("pull one: lifeline models pull NAME")


def _snippet(spec: str, context: int) -> str:
    return (
        "targets:\n"
        "  local:\n"
        "    kind: llamacpp\n"
        f"    model: {spec}\n"
        f"    n_ctx: {min(context, 4096)}    # up to {context:,} for this model, at the cost of memory\n"
    )


@models_app.command("pull")
def pull(name: Annotated[str, typer.Argument(help="A model of `lifeline models local` (qwen3-0.6b …).")]) -> None:
    """Download a recommended GGUF into the model cache the embedded engine reads, and say how to use it."""
    from lifeline.errors import ModelResolutionError
    from lifeline.providers.ggufmeta import gguf_header
    from lifeline.providers.llamacpp import resolve_model

    try:
        model = catalogue.find_local(name)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if model.local is None:
        typer.echo(f"{model.id} ships with Lifeline: nothing to download. Use it with:\n")
        typer.echo(_snippet(model.embedded or "", model.context), nl=False)
        return
    local = model.local
    typer.echo(f"downloading {local.repo}/{local.file} (about {local.size_mb:,} MB) …", err=True)
    # the hub client logs each retry of an unreachable hub; the one line below says what went wrong
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    try:
        path, _ = resolve_model(local.spec, hub_fetch())
        gguf_header(path, {"general.architecture"})  # what the hub sent is a whole GGUF file
    except ModelResolutionError as exc:
        typer.echo(f"error: {model.id}: {exc}", err=True)
        raise typer.Exit(2) from None
    except Exception as exc:  # anything else the download met: one line, no traceback
        typer.echo(f"error: {model.id}: the download failed ({type(exc).__name__}: {exc})", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"pulled {model.id} ({model.licence} licence) to {path}")
    typer.echo("use it as the embedded engine, e.g. the last resort of an alias:\n")
    typer.echo(_snippet(local.spec, model.context), nl=False)
