"""What every `lifeline` command shares: the `--config` option, finding and reading the config file, and
refusing a bad one in one line a problem. Main and every subcommand import this; none imports main."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from lifeline.config import Config, default_config, load_config
from lifeline.errors import ConfigError

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config file (default: $LIFELINE_CONFIG, else the embedded model)."),
]


def config_path(path: Path | None) -> Path | None:
    """The config file named, else $LIFELINE_CONFIG, else None (the embedded model)."""
    return path or (Path(os.environ["LIFELINE_CONFIG"]) if os.environ.get("LIFELINE_CONFIG") else None)


def read_config(path: Path | None, *, ignore_env: bool = False) -> Config:
    """The config of `config_path(path)`; one that cannot be used is refused (exit 2)."""
    path = config_path(path)
    if path is None:
        return default_config()
    try:
        return load_config(path, ignore_env=ignore_env)
    except ConfigError as exc:
        refuse(exc)


def refuse(exc: ConfigError, hint: str | None = None) -> NoReturn:
    """Print a config's problems, one a line, and exit 2."""
    for problem in exc.problems:
        typer.echo(f"error: {problem}", err=True)
    if hint:
        typer.echo(f"hint: {hint}", err=True)
    raise typer.Exit(2)
