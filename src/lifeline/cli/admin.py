"""`lifeline admin`: control a running gateway over its admin API — list circuits and failovers; drain, cut
or heal a target; reload the config file.

Every command talks HTTP to `--url` (default $LIFELINE_URL, else http://127.0.0.1:4000) with the master key
from `--key` (default $LIFELINE_MASTER_KEY), prints a table (or the API's JSON with `--json`), and reports a
failure as one `error:` line with exit status 1.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import urllib.parse
from collections.abc import Sequence
from typing import Annotated, Any, NoReturn

import httpx
import typer

DEFAULT_URL = "http://127.0.0.1:4000"

admin_app = typer.Typer(no_args_is_help=True, help="Control a running gateway: circuits, drains, faults, reloads.")

UrlOption = Annotated[str, typer.Option("--url", envvar="LIFELINE_URL", help="The gateway's address.")]
KeyOption = Annotated[
    str | None,
    typer.Option("--key", envvar="LIFELINE_MASTER_KEY", help="The master key (admin.master_key)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of a table.")]
TargetArgument = Annotated[str, typer.Argument(help="The target's name, as in the config file.")]


class FaultChoice(enum.StrEnum):
    forbidden = "forbidden"
    timeout = "timeout"
    stream_cut = "stream_cut"
    unavailable = "unavailable"


def register(app: typer.Typer) -> None:
    app.add_typer(admin_app, name="admin")


# --- commands --------------------------------------------------------------------------------------


@admin_app.command()
def targets(url: UrlOption = DEFAULT_URL, key: KeyOption = None, as_json: JsonOption = False) -> None:
    """List every target: circuit state, override, failures, last error."""
    data = _call("GET", url, "/admin/targets", key)
    if as_json:
        _print_json(data)
        return
    _print_targets(data.get("targets") or [])


@admin_app.command()
def failovers(url: UrlOption = DEFAULT_URL, key: KeyOption = None, as_json: JsonOption = False) -> None:
    """List the recent failovers (the last 100), oldest first."""
    data = _call("GET", url, "/admin/failovers", key)
    if as_json:
        _print_json(data)
        return
    rows = [
        [
            _time(event.get("at")),
            str(event.get("alias", "")),
            str(event.get("from", "")),
            str(event.get("outcome", "")),
            _text(event.get("status")),
            ", ".join(event.get("remaining") or []) or "-",
            str(event.get("request_id", "")),
        ]
        for event in data.get("data") or []
    ]
    if not rows:
        typer.echo("no failovers")
        return
    _table(["TIME", "ALIAS", "FROM", "OUTCOME", "STATUS", "REMAINING", "REQUEST"], rows)


@admin_app.command()
def drain(
    target: TargetArgument, url: UrlOption = DEFAULT_URL, key: KeyOption = None, as_json: JsonOption = False
) -> None:
    """Take a target out of new requests; requests already on it finish."""
    _set_state(url, key, target, {"state": "drained"}, as_json)


@admin_app.command()
def cut(
    target: TargetArgument,
    fault: Annotated[FaultChoice, typer.Option(help="How the target fails.")] = FaultChoice.forbidden,
    after: Annotated[
        int | None, typer.Option(min=0, help="stream_cut: content chunks passed through before the cut (default 3).")
    ] = None,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Inject a fault in front of a target, to rehearse its failure."""
    body: dict[str, Any] = {"state": "cut", "fault": fault.value}
    if after is not None:
        body["after"] = after
    _set_state(url, key, target, body, as_json)


@admin_app.command()
def heal(
    target: TargetArgument, url: UrlOption = DEFAULT_URL, key: KeyOption = None, as_json: JsonOption = False
) -> None:
    """Clear a drain or cut and close the target's circuit."""
    _set_state(url, key, target, {"state": "healthy"}, as_json)


@admin_app.command()
def reload(url: UrlOption = DEFAULT_URL, key: KeyOption = None, as_json: JsonOption = False) -> None:
    """Reload the gateway's config file; requests in flight finish on the old config."""
    data = _call("POST", url, "/admin/reload", key, timeout=300.0)
    if as_json:
        _print_json(data)
        return
    aliases, names = data.get("aliases") or [], data.get("targets") or []
    typer.echo(f"reloaded: aliases {', '.join(aliases)}; targets {', '.join(names)}")
    carried = data.get("circuits_carried_over") or []
    typer.echo(f"circuits carried over: {', '.join(carried) or 'none'}")


# --- HTTP ------------------------------------------------------------------------------------------


def _set_state(url: str, key: str | None, target: str, body: dict[str, Any], as_json: bool) -> None:
    row = _call("POST", url, f"/admin/targets/{urllib.parse.quote(target, safe='')}", key, body=body)
    if as_json:
        _print_json(row)
        return
    _print_targets([row])


def _call(
    method: str, url: str, path: str, key: str | None, *, body: dict[str, Any] | None = None, timeout: float = 30.0
) -> dict[str, Any]:
    base = url.rstrip("/")
    headers = {"authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.request(method, base + path, json=body, headers=headers, timeout=timeout)
    except httpx.ConnectError:
        _fail(f"cannot connect to the gateway at {base} (is it running? set --url or LIFELINE_URL)")
    except httpx.TimeoutException:
        _fail(f"the gateway at {base} did not answer within {timeout:g} s")
    except httpx.HTTPError as exc:
        _fail(f"the request to {base} failed: {type(exc).__name__}")
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.status_code >= 400:
        message = _error_message(data) or response.reason_phrase
        if response.status_code == 401:
            _fail(f"the gateway refused the master key (401): {message} Pass --key or set LIFELINE_MASTER_KEY.")
        _fail(f"{response.status_code}: {message}")
    if not isinstance(data, dict):
        _fail(f"the gateway at {base} answered {response.status_code} with something that is not JSON")
    return data


def _error_message(data: Any) -> str | None:
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        message = data["error"].get("message")
        return str(message) if message else None
    return None


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


# --- output ----------------------------------------------------------------------------------------


def _print_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2))


def _print_targets(rows: Sequence[dict[str, Any]]) -> None:
    _table(
        ["TARGET", "KIND", "MODEL", "CIRCUIT", "OVERRIDE", "FAILURES", "OPEN FOR", "LAST ERROR"],
        [
            [
                str(row.get("target", "")),
                str(row.get("kind", "")),
                str(row.get("model", "")),
                str(row.get("state", "")),
                _text(row.get("override")),
                _text(row.get("consecutive_failures")),
                f"{row['open_for_seconds']:g}s" if row.get("open_for_seconds") else "-",
                _text(row.get("last_error")),
            ]
            for row in rows
        ],
    )


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    for line in (header, *rows):
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def _text(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def _time(at: object) -> str:
    if not isinstance(at, int | float):
        return "-"
    return dt.datetime.fromtimestamp(at).strftime("%H:%M:%S")
