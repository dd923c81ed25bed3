"""The `lifeline` command: serve the gateway, list aliases, run the fault wall."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Iterable
from typing import Annotated

import typer
from pydantic import ValidationError

from lifeline.cli.common import ConfigOption, config_path, read_config, refuse
from lifeline.config import Config, default_config, load_config
from lifeline.config.load import describe_validation_error
from lifeline.config.schema import ServerSettings
from lifeline.errors import ConfigError, DatabaseError, ModelResolutionError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Lifeline: an OpenAI-compatible gateway.")
fakes = typer.Typer(no_args_is_help=True, help="The fault wall: an OpenAI-compatible upstream that misbehaves.")
app.add_typer(fakes, name="fakes")


def _show_version(value: bool) -> None:
    if value:
        from lifeline import __version__

        typer.echo(f"lifeline {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Lifeline: an OpenAI-compatible gateway."""


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
    from lifeline.cli.audit import register as register_audit

    register_audit(app)
    from lifeline.cli.eval import register as register_eval

    register_eval(app)
    from lifeline.cli.capture import register as register_capture

    register_capture(app)
    from lifeline.cli.imports import register as register_import

    register_import(app)


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Bind address (overrides the config).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (overrides the config).")] = None,
    log_format: Annotated[str | None, typer.Option(help="text or json (overrides the config).")] = None,
    insecure_admin: Annotated[
        bool,
        typer.Option(
            "--insecure-admin",
            help="Serve /admin/* without admin.master_key on a bind beyond loopback (server.insecure_admin).",
        ),
    ] = False,
    workers: Annotated[
        str | None,
        typer.Option(
            metavar="N|auto",
            help="Worker processes serving the port: a number, or auto (one per CPU); overrides server.workers. "
            "They share circuits, rate limits and budgets.",
        ),
    ] = None,
) -> None:
    """Start the gateway."""
    import uvicorn

    from lifeline.logs import configure_logging
    from lifeline.server.app import create_app
    from lifeline.server.serving import uvicorn_options
    from lifeline.server.workers import worker_count

    cfg = read_config(config)
    overrides = {k: v for k, v in {"host": host, "port": port, "log_format": log_format}.items() if v is not None}
    if insecure_admin:
        overrides["insecure_admin"] = True
    if workers is not None:
        overrides["workers"] = workers if workers == "auto" or not workers.isdigit() else int(workers)
    try:
        server = ServerSettings.model_validate({**cfg.server.model_dump(), **overrides})
    except ValidationError as exc:
        typer.echo(f"error: {describe_validation_error(exc)}", err=True)
        raise typer.Exit(2) from None
    cfg = cfg.model_copy(update={"server": server})
    _check_database(cfg)
    configure_logging(server.log_format, server.log_level)
    # The address first: a port in use is one line, before any model loads.
    try:
        sock = bind_socket(server.host, server.port)
    except OSError as exc:
        typer.echo(f"error: {bind_error(server.host, server.port, exc)}", err=True)
        raise typer.Exit(2) from None
    count = worker_count(server.workers)
    if count > 1:
        _serve_workers(cfg, config, sock, count)
        return
    try:
        # The file is read again on SIGHUP or POST /admin/reload.
        application = create_app(cfg, config_path=config_path(config), freeze=True)
    except Exception as exc:  # a model that cannot be resolved, a bad target: one line, no trace
        sock.close()
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(banner(server.host, sock.getsockname()[1], cfg.aliases))
    exposure = admin_exposure(server, has_master_key=cfg.admin.master_key is not None)
    if exposure is not None:
        logging.getLogger("lifeline.server").warning(exposure)
    uvicorn_server = uvicorn.Server(
        uvicorn.Config(application, timeout_graceful_shutdown=10, **uvicorn_options(cfg))  # limits: server/serving.py
    )
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn_server.run(sockets=[sock])
    if not uvicorn_server.started:
        raise typer.Exit(3)  # the application failed to start (uvicorn has said why); as uvicorn.run would


def _serve_workers(cfg: Config, config: ConfigOption, sock: socket.socket, count: int) -> None:
    """`serve --workers N`, N > 1: a supervisor and N worker processes on the one socket (server/workers.py)."""
    from lifeline.errors import EngineProcessError
    from lifeline.server.workers import Supervisor

    server = cfg.server
    typer.echo(f"{banner(server.host, sock.getsockname()[1], cfg.aliases)}; {count} workers")
    exposure = admin_exposure(server, has_master_key=cfg.admin.master_key is not None)
    if exposure is not None:
        logging.getLogger("lifeline.server").warning(exposure)
    try:
        code = Supervisor(cfg, config_path(config), sock, count).run()
    except EngineProcessError as exc:  # the embedded model cannot load: one line, as one process would say it
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if code:
        raise typer.Exit(code)


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to `host:port` (not yet listening: uvicorn listens once the gateway has started),
    set up as uvicorn would bind it."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def bind_error(host: str, port: int, exc: OSError) -> str:
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return f"{where} is already in use; stop what listens there, or choose another port"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: this machine has no such address"
    return f"cannot listen on {where}: {exc.strerror or exc}"


def banner(host: str, port: int, aliases: Iterable[str]) -> str:
    """The start-up line: the address really bound (0.0.0.0 stays 0.0.0.0), and the aliases."""
    shown = f"[{host}]" if ":" in host else host or "0.0.0.0"
    scope = {"": ", every IPv4 address of this machine", "0.0.0.0": ", every IPv4 address of this machine"}
    scope["::"] = ", every address of this machine"
    return f"Lifeline is starting on http://{shown}:{port}/v1{scope.get(host, '')} (aliases: {', '.join(aliases)})"


def admin_exposure(server: ServerSettings, *, has_master_key: bool) -> str | None:
    """The one line said at start when the admin API is refused, or open to the network, on a bind beyond
    loopback without a master key; None when there is nothing to say."""
    from lifeline.server.guard import is_loopback

    if has_master_key or is_loopback(server.host):
        return None
    where = server.host or "0.0.0.0"
    if server.insecure_admin:
        return (
            f"/admin/* is open to anyone who can reach {where}: no admin.master_key, and --insecure-admin "
            "(server.insecure_admin) is set"
        )
    return (
        f"/admin/* is refused: the gateway listens on {where}, beyond loopback, without admin.master_key "
        "(set one, or pass --insecure-admin)"
    )


def _check_database(cfg: Config) -> None:
    """Open (and migrate) the database before serving: one that is down is one line and exit 2, rather than
    a traceback of the ASGI lifespan from uvicorn."""
    from lifeline.accounting.db import Database, describe_location
    from lifeline.accounting.migrations import migrate

    settings = cfg.accounting
    url = settings.database_url.get_secret_value() if settings.database_url else None
    try:
        db = Database(url=url, data_dir=settings.data_dir)
        try:
            migrate(db)
        finally:
            db.close()
    except DatabaseError as exc:  # its message names no URL and no password
        where = describe_location(url, settings.data_dir)
        setting = "accounting.database_url" if url else "accounting.data_dir"
        typer.echo(f"error: cannot open the database, {where} ({setting}): {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def models(config: ConfigOption = None) -> None:
    """List the aliases a client may ask for, with their ordered targets."""
    cfg = read_config(config)
    for name, alias in cfg.aliases.items():
        typer.echo(f"{name}: {' -> '.join(alias.targets)}")


@app.command("check")
def check(
    config: ConfigOption = None,
    no_env: Annotated[
        bool,
        typer.Option("--no-env", help="Check the structure alone, reading no environment variable (${VAR})."),
    ] = False,
) -> None:
    """Validate a config file and exit."""
    path = config_path(config)
    try:
        cfg = load_config(path, ignore_env=no_env) if path is not None else default_config()
    except ConfigError as exc:
        refuse(
            exc, "set them, or check the structure alone: lifeline check --no-env" if exc.missing_variables else None
        )
    from lifeline.providers.llamacpp import check_adapter, resolve_model

    for name, target in cfg.targets.items():
        if target.kind != "llamacpp":
            continue
        # hub models are fetched at serve time, not by a check; with --no-env a ${VAR} model is not read
        model = None
        if not target.model.startswith("hf:") and not (no_env and "${" in target.model):
            try:
                model, _ = resolve_model(target.model)
            except ModelResolutionError as exc:
                typer.echo(f"error: targets.{name}.model: {exc}", err=True)
                raise typer.Exit(2) from None
        if target.lora_path and not (no_env and "${" in target.lora_path):
            try:  # the adapter's header, as serve reads it (against the model's when the model is local)
                check_adapter(name, target.lora_path, model)
            except ModelResolutionError as exc:
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(2) from None
    used = {t for a in cfg.aliases.values() for t in a.targets}
    used |= {c for a in cfg.aliases.values() if a.shadow is not None for c in a.shadow.candidates}
    unused = sorted(set(cfg.targets) - used)
    if unused:
        typer.echo(f"warning: no alias uses target(s) {', '.join(unused)}; they are started all the same", err=True)
    scope = " (structure only: environment variables not read)" if no_env else ""
    typer.echo(f"ok: {len(cfg.targets)} target(s), {len(cfg.aliases)} alias(es){scope}")


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
