"""The `lifeline` command: serve the gateway, list aliases, run the fault wall."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from lifeline.config import Config, ConfigError, default_config, load_config
from lifeline.config.load import describe_validation_error
from lifeline.config.schema import ServerSettings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Lifeline: an OpenAI-compatible gateway.")
fakes = typer.Typer(no_args_is_help=True, help="The fault wall: an OpenAI-compatible upstream that misbehaves.")
app.add_typer(fakes, name="fakes")


def _register_subcommands() -> None:
    from lifeline.cli.keys import keys_app

    app.add_typer(keys_app, name="keys")
    from lifeline.cli.admin import register as register_admin
    from lifeline.cli.catalogue import register as register_catalogue
    from lifeline.cli.usage import register

    register(app)
    register_admin(app)
    register_catalogue(app)
    from lifeline.cli.drill import register as register_drill

    register_drill(app)


ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config file (default: $LIFELINE_CONFIG, else the embedded model)."),
]


def _config_path(path: Path | None) -> Path | None:
    return path or (Path(os.environ["LIFELINE_CONFIG"]) if os.environ.get("LIFELINE_CONFIG") else None)


def _config(path: Path | None) -> Config:
    path = _config_path(path)
    if path is None:
        return default_config()
    try:
        return load_config(path)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Bind address (overrides the config).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (overrides the config).")] = None,
    log_format: Annotated[str | None, typer.Option(help="text or json (overrides the config).")] = None,
) -> None:
    """Start the gateway."""
    import uvicorn

    from lifeline.logs import configure_logging
    from lifeline.server.app import create_app
    from lifeline.server.serving import uvicorn_options

    cfg = _config(config)
    overrides = {k: v for k, v in {"host": host, "port": port, "log_format": log_format}.items() if v is not None}
    try:
        server = ServerSettings.model_validate({**cfg.server.model_dump(), **overrides})
    except ValidationError as exc:
        typer.echo(f"error: {describe_validation_error(exc)}", err=True)
        raise typer.Exit(2) from None
    cfg = cfg.model_copy(update={"server": server})
    configure_logging(server.log_format, server.log_level)
    try:
        # The file is read again on SIGHUP or POST /admin/reload.
        application = create_app(cfg, config_path=_config_path(config))
    except Exception as exc:  # a model that cannot be resolved, a bad target: one line, no trace
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    shown = "127.0.0.1" if server.host in ("0.0.0.0", "::") else server.host
    typer.echo(f"Lifeline is starting on http://{shown}:{server.port}/v1 (aliases: {', '.join(cfg.aliases)})")
    uvicorn.run(
        application,
        host=server.host,
        port=server.port,
        timeout_graceful_shutdown=10,
        **uvicorn_options(cfg),  # the server's limits (server/serving.py)
    )


@app.command()
def models(config: ConfigOption = None) -> None:
    """List the aliases a client may ask for, with their ordered targets."""
    cfg = _config(config)
    for name, alias in cfg.aliases.items():
        typer.echo(f"{name}: {' -> '.join(alias.targets)}")


@app.command("check")
def check(config: ConfigOption = None) -> None:
    """Validate a config file and exit."""
    cfg = _config(config)
    from lifeline.providers.llamacpp import ModelResolutionError, resolve_model

    for name, target in cfg.targets.items():
        # hub models are fetched at serve time, not by a check
        if target.kind == "llamacpp" and not target.model.startswith("hf:"):
            try:
                resolve_model(target.model)
            except ModelResolutionError as exc:
                typer.echo(f"error: targets.{name}.model: {exc}", err=True)
                raise typer.Exit(2) from None
    unused = sorted(set(cfg.targets) - {t for a in cfg.aliases.values() for t in a.targets})
    if unused:
        typer.echo(f"warning: no alias uses target(s) {', '.join(unused)}; they are started all the same", err=True)
    typer.echo(f"ok: {len(cfg.targets)} target(s), {len(cfg.aliases)} alias(es)")


@fakes.command("serve")
def fakes_serve(
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 4010,
) -> None:
    """Run the fault wall. The model name picks the behaviour: ok, status?code=503, cut?after=3, hang …"""
    from lifeline.testing.wall import serve_forever

    typer.echo(f"fault wall on http://{host}:{port}/v1")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever(host, port))


def main() -> None:
    _register_subcommands()
    app()


if __name__ == "__main__":
    main()
