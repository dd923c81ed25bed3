"""`lifeline import litellm CONFIG`: a LiteLLM proxy config converted into a Lifeline config (config/litellm.py),
with one line for each setting that could not be carried over. The YAML goes to stdout or `--output`; the
report goes to stderr; no secret is ever printed or written."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lifeline.cli.common import refuse
from lifeline.config.litellm import NoteKind, convert_litellm
from lifeline.errors import ConfigError

import_app = typer.Typer(no_args_is_help=True, help="Convert another gateway's config into a Lifeline config.")


@import_app.command("litellm")
def import_litellm(
    source: Annotated[Path, typer.Argument(help="The LiteLLM proxy config (config.yaml).", show_default=False)],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the Lifeline config here (default: stdout).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --output if it exists.")] = False,
) -> None:
    """Convert a LiteLLM proxy config: model_list into targets and aliases, fallbacks into failover chains,
    os.environ/ keys into ${VAR}; every setting left behind is named, with why."""
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        typer.echo(f"error: {source}: cannot read: {getattr(exc, 'strerror', None) or 'not UTF-8 text'}", err=True)
        raise typer.Exit(2) from None
    if output is not None and output.exists() and not force:
        typer.echo(f"error: {output} exists; choose another file, or pass --force to overwrite it", err=True)
        raise typer.Exit(2)
    try:
        conversion = convert_litellm(text)
    except ConfigError as exc:
        refuse(ConfigError(*(f"{source}: {problem}" for problem in exc.problems)))
    document = conversion.yaml(source.name)
    if output is None:
        typer.echo(document, nl=False)
    else:
        try:
            output.write_text(document, encoding="utf-8")
        except OSError as exc:
            typer.echo(f"error: {output}: cannot write: {exc.strerror}", err=True)
            raise typer.Exit(2) from None
    for note in conversion.notes:
        typer.echo(note.line(), err=True)
    config = conversion.config
    dropped = sum(note.kind is NoteKind.DROPPED for note in conversion.notes)
    where = f"wrote {output}" if output is not None else "converted"
    counts = f"{len(config['targets'])} target(s), {len(config['aliases'])} alias(es)"
    typer.echo(f"{where}: {counts}; {dropped} setting(s) not carried over", err=True)
    if conversion.variables:
        typer.echo(f"set before serving: {', '.join(conversion.variables)}", err=True)
    if output is not None:
        typer.echo(f"check it: lifeline check --config {output}", err=True)


def register(app: typer.Typer) -> None:
    app.add_typer(import_app, name="import")
