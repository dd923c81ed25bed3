"""The console's routes (mounted at /ui by server/app.py) and who may see them.

Who: with `admin.master_key` set, every page needs a session opened by logging in with it; without one, the
console is read-only and served only on a loopback bind (a bind beyond loopback without a master key serves
no console at all: 404, as if it were not there). What: the pages read the gateway serving now through the
same functions as the admin API — target rows (Gateway.target_row), drain/cut/heal (control.change_target),
reload (the Reloader), keys (admin.new_key / change_key / end_key) and usage (admin.usage_of, the query of
`lifeline usage`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import logging
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from lifeline.accounting.usage import GROUPS, per_minute, recent_takeovers
from lifeline.console.sessions import COOKIE, IDLE_SECONDS, Session, Sessions
from lifeline.errors import LifelineError
from lifeline.providers.faults import FAULT_KINDS
from lifeline.server.gateway import Gateway
from lifeline.server.guard import is_loopback
from lifeline.server.reload import Reloader
from lifeline.server.routes.admin import change_key, end_key, new_key, usage_of
from lifeline.server.routes.control import change_target

log = logging.getLogger("lifeline.console")

MAX_FORM = 64 * 1024
#: how far back the Failovers page looks in the ledger for streams taken over mid-answer
TAKEOVER_WINDOW = 24 * 3600.0
_STATIC = {"console.css": "text/css; charset=utf-8", "console.js": "text/javascript; charset=utf-8"}
_PAGES = (
    ("overview", "/ui", "Overview"),
    ("targets", "/ui/targets", "Targets"),
    ("keys", "/ui/keys", "Keys"),
    ("failovers", "/ui/failovers", "Failovers"),
    ("usage", "/ui/usage", "Usage"),
    ("reports", "/ui/reports", "Reports"),
)
#: the report files the Reports page lists and opens (what reports/ writes), and how each is served
_REPORT_TYPES = {".html": "text/html; charset=utf-8", ".md": "text/plain; charset=utf-8", ".json": "application/json"}
#: how deep under reports_dir the page looks (a run's --out directory, possibly one level of grouping)
_REPORT_DEPTH = 3
_MAX_REPORTS = 500

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("lifeline.console", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "—"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso_input(epoch: float | None) -> str:
    """A time as a datetime-local input's value (UTC)."""
    if epoch is None:
        return ""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M")


_templates.filters["when"] = _when
_templates.filters["isoinput"] = _iso_input


@dataclass
class Access:
    """What a request may do: `read` (see pages), `write` (change things), and its session if any."""

    read: bool
    write: bool
    session: Session | None
    read_only_mode: bool


class Console:
    """The console's state, kept on the app (not the gateway: a reload keeps the sessions)."""

    def __init__(self) -> None:
        self.sessions = Sessions()
        #: when each target's shown state (override or circuit) was first seen, for "since"
        self._since: dict[str, tuple[str, float | None]] = {}

    # --- access ---------------------------------------------------------------------------------

    def served(self, gateway: Gateway) -> bool:
        return gateway.config.admin.master_key is not None or is_loopback(gateway.config.server.host)

    def access(self, request: Request) -> Access:
        gateway: Gateway = request.app.state.gateway
        key = gateway.config.admin.master_key
        if key is None:
            return Access(read=True, write=False, session=None, read_only_mode=True)
        session = self.sessions.find(request.cookies.get(COOKIE), key.get_secret_value())
        return Access(read=session is not None, write=session is not None, session=session, read_only_mode=False)

    # --- what the pages show --------------------------------------------------------------------

    def target_rows(self, gateway: Gateway) -> list[dict[str, Any]]:
        now = time.time()
        rows = []
        for name in gateway.config.targets:
            row = gateway.target_row(name)
            # the operator's override ("drained", "cut:<fault>") comes before the circuit's state
            override, _, fault = (row["override"] or "").partition(":")
            shown = override or row["state"]
            seen = self._since.get(name)
            now_showing = f"{row['state']}|{override}"
            if seen is None or seen[0] != now_showing:
                # A change the console saw happened since its last look (every two seconds while a page is
                # open); what it finds on its first look started at a time it cannot know — except an open
                # circuit, which opened at its last failure.
                since: float | None = now if seen is not None else None
                if row["state"] == "open" and row["seconds_since_last_failure"] is not None:
                    since = now - row["seconds_since_last_failure"]
                seen = (now_showing, since)
                self._since[name] = seen
            row["shown"] = shown
            row["circuit"] = row["state"].replace("_", "-")
            row["override_text"] = {"drained": "drained", "cut": f"cut ({fault})"}.get(override, "—")
            row["since"] = seen[1]
            row["since_text"] = _when(seen[1])
            row["fault"] = fault or None
            row["why"] = _why(row)
            rows.append(row)
        return rows

    async def sparklines(self, gateway: Gateway) -> dict[str, list[float]]:
        now = time.time()
        since = (now // 60) * 60 - 59 * 60
        minutes: list[tuple[int, int]] = [(0, 0)] * 60
        ledger = gateway.accounting.ledger
        if ledger is not None:
            minutes = await asyncio.to_thread(per_minute, gateway.accounting.db, since, 60)
        failovers = [0.0] * 60
        for event in list(gateway.health.recent_failovers):
            index = int((event["at"] - since) // 60)
            if 0 <= index < 60:
                failovers[index] += 1
        return {
            "requests": [float(r) for r, _ in minutes],
            "error_rate": [(e / r if r else 0.0) for r, e in minutes],
            "failovers": failovers,
        }


def _why(row: dict[str, Any]) -> str:
    if row["shown"] == "drained":
        return "drained by the operator"
    if row["shown"] == "cut":
        return f"cut by the operator ({row['fault']})"
    if row["state"] == "open":
        return f"{row['last_error'] or 'failures'}; reopens in {row['open_for_seconds']:.0f} s"
    if row["state"] == "half_open":
        return "probing after a cooldown"
    if row["consecutive_failures"]:
        return f"{row['consecutive_failures']} failure(s) in a row: {row['last_error']}"
    return ""


def spark_path(values: list[float], width: int = 240, height: int = 36) -> str:
    """An SVG polyline's points for a sparkline (the page draws the same with JS when it updates)."""
    top = max(values) if values and max(values) > 0 else 1.0
    step = width / max(1, len(values) - 1)
    return " ".join(f"{i * step:.1f},{height - 2 - (v / top) * (height - 4):.1f}" for i, v in enumerate(values))


_templates.globals["spark_path"] = spark_path


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def _not_found() -> Response:
    return PlainTextResponse("Not Found", status_code=404)


def _gate(request: Request) -> tuple[Console, Gateway, Access] | None:
    """The console, the gateway serving now and what this request may do; None when no console is served."""
    console = console_of(request)
    gateway: Gateway = request.app.state.gateway
    if not console.served(gateway):
        return None
    return console, gateway, console.access(request)


def _render(request: Request, template: str, access: Access, status: int = 200, **context: Any) -> HTMLResponse:
    gateway: Gateway = request.app.state.gateway
    session = access.session
    flash = list(session.flash) if session is not None else []
    if session is not None:
        session.flash.clear()
    page = _templates.get_template(template).render(
        pages=_PAGES,
        current=template.removesuffix(".html"),
        access=access,
        csrf=session.csrf if session is not None else "",
        flash=flash,
        gateway=gateway,
        **context,
    )
    response = HTMLResponse(page, status_code=status)
    response.headers["cache-control"] = "no-store"
    response.headers["x-frame-options"] = "DENY"
    response.headers["content-security-policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-src 'self'; "
        "frame-ancestors 'none'; "
        "form-action 'self'; base-uri 'none'"
    )
    # "no-referrer" would make a browser send `Origin: null` with a form, which the edge guard refuses
    response.headers["referrer-policy"] = "same-origin"
    return response


def _page(template: str, handler: Any) -> Any:
    """A GET page: 404 when the console is not served, the login page's redirect without a session."""

    async def endpoint(request: Request) -> Response:
        gate = _gate(request)
        if gate is None:
            return _not_found()
        access = gate[2]
        if not access.read:
            return RedirectResponse("/ui/login", status_code=303)
        context = await handler(request, access)
        if isinstance(context, Response):
            return context
        return _render(request, template, access, **context)

    return endpoint


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_FORM:
        return {}
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _action(handler: Any) -> Any:
    """A POST: needs a session (so a master key) and the session's CSRF token, in the form or X-CSRF-Token."""

    async def endpoint(request: Request) -> Response:
        gate = _gate(request)
        if gate is None:
            return _not_found()
        access = gate[2]
        if not access.write or access.session is None:
            return PlainTextResponse(
                "Forbidden: log in with the master key (a console without one is read-only).", status_code=403
            )
        form = await _form(request)
        token = form.pop("csrf", "") or request.headers.get("x-csrf-token", "")
        if not hmac.compare_digest(token.encode(), access.session.csrf.encode()):
            return PlainTextResponse("Forbidden: the form's CSRF token is missing or stale.", status_code=403)
        try:
            result: Response = await handler(request, access.session, form)
            return result
        except LifelineError as exc:
            access.session.flash.append(("error", str(exc)))
            return RedirectResponse(_back(request), status_code=303)

    return endpoint


def _back(request: Request) -> str:
    path = request.url.path
    for _, href, _title in _PAGES[1:]:
        if path.startswith(href):
            return href
    return "/ui"


# --- login ------------------------------------------------------------------------------------------


async def login_page(request: Request) -> Response:
    gate = _gate(request)
    if gate is None:
        return _not_found()
    _console, _gateway, access = gate
    if access.read:
        return RedirectResponse("/ui", status_code=303)
    return _render(request, "login.html", access, error=None)


async def login(request: Request) -> Response:
    console = console_of(request)
    gateway: Gateway = request.app.state.gateway
    if not console.served(gateway):
        return _not_found()
    key = gateway.config.admin.master_key
    if key is None:
        return RedirectResponse("/ui", status_code=303)
    form = await _form(request)
    given = form.get("master_key", "")
    if not console.sessions.key_matches(given, key.get_secret_value()):
        log.info("console: a login with a wrong master key was refused")
        access = Access(read=False, write=False, session=None, read_only_mode=False)
        return _render(request, "login.html", access, status=401, error="That is not the master key.")
    session = console.sessions.open(key.get_secret_value())
    log.info("console: an operator logged in")
    response = RedirectResponse("/ui", status_code=303)
    response.set_cookie(
        COOKIE,
        session.id,
        max_age=IDLE_SECONDS,
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


async def _logout(request: Request, session: Session, form: dict[str, str]) -> Response:
    console_of(request).sessions.close(session.id)
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict")
    return response


# --- overview and targets ------------------------------------------------------------------------


async def _overview(request: Request, access: Access) -> dict[str, Any]:
    gateway: Gateway = request.app.state.gateway
    console = console_of(request)
    return {
        "aliases": {name: alias.targets for name, alias in gateway.config.aliases.items()},
        "targets": console.target_rows(gateway),
        "sparks": await console.sparklines(gateway),
    }


async def overview_data(request: Request) -> Response:
    gate = _gate(request)
    if gate is None:
        return _not_found()
    console, gateway, access = gate
    if not access.read:
        return Response(b'{"error": "log in"}', status_code=401, media_type="application/json")
    data = {"targets": console.target_rows(gateway), "sparks": await console.sparklines(gateway)}
    return Response(orjson.dumps(data), media_type="application/json", headers={"cache-control": "no-store"})


async def _targets(request: Request, access: Access) -> dict[str, Any]:
    gateway: Gateway = request.app.state.gateway
    return {"targets": console_of(request).target_rows(gateway), "faults": FAULT_KINDS}


async def _set_target(request: Request, session: Session, form: dict[str, str]) -> Response:
    fields: dict[str, Any] = {"state": form.get("state")}
    if form.get("state") == "cut" and form.get("fault"):
        fields["fault"] = form["fault"]
    name = request.path_params["name"]
    row = change_target(request.app.state.gateway, name, fields)
    session.flash.append(("ok", f"Target {name} is now {row['override'] or 'healthy'}."))
    return RedirectResponse("/ui/targets", status_code=303)


async def _reload(request: Request, session: Session, form: dict[str, str]) -> Response:
    reloader: Reloader = request.app.state.reloader
    done = await reloader.reload()
    carried = ", ".join(done.carried_over) or "none"
    targets = len(done.gateway.config.targets)
    session.flash.append(("ok", f"Config reloaded: {targets} target(s); circuits kept: {carried}."))
    return RedirectResponse("/ui/targets", status_code=303)


# --- keys ---------------------------------------------------------------------------------------


async def _keys(request: Request, access: Access) -> dict[str, Any] | Response:
    gateway: Gateway = request.app.state.gateway
    if access.read_only_mode:
        return {"keys": None, "secret": None, "aliases": list(gateway.config.aliases)}
    keys = await asyncio.to_thread(gateway.accounting.store.list, True)
    secret = None
    if access.session is not None:
        secret, access.session.secret = access.session.secret, None
    return {"keys": [k.public() for k in keys], "secret": secret, "aliases": list(gateway.config.aliases)}


def _key_fields(form: dict[str, str], *, editing: bool) -> dict[str, Any]:
    """The key form's text fields → the admin API's fields (an empty field: unset on create, cleared on edit)."""
    from lifeline.errors import InvalidRequest

    fields: dict[str, Any] = {}
    if "name" in form and (form["name"].strip() or not editing):
        fields["name"] = form["name"].strip()

    def put(name: str, value: Any) -> None:
        if value is not None or editing:
            fields[name] = value

    aliases = [a.strip() for a in form.get("aliases", "").split(",") if a.strip()]
    put("aliases", aliases or None)
    for name, kind in (("budget_usd", float), ("rpm", int), ("tpm", int)):
        text = form.get(name, "").strip()
        try:
            put(name, kind(text) if text else None)
        except ValueError:
            raise InvalidRequest(f"'{name}' must be a number.", param=name) from None
    put("budget_period", form.get("budget_period", "").strip() or None)
    expires = form.get("expires_at", "").strip()
    if expires:
        try:
            when = dt.datetime.fromisoformat(expires)
        except ValueError:
            raise InvalidRequest("'expires_at' must be a date and time.", param="expires_at") from None
        put("expires_at", (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp())
    else:
        put("expires_at", None)
    return fields


async def _create_key(request: Request, session: Session, form: dict[str, str]) -> Response:
    key, secret = await new_key(request.app.state.gateway, _key_fields(form, editing=False))
    session.secret = secret
    session.flash.append(("ok", f"Key {key.name} ({key.id}) created. Copy its secret now: it is shown only once."))
    return RedirectResponse("/ui/keys", status_code=303)


async def _edit_key(request: Request, session: Session, form: dict[str, str]) -> Response:
    key = await change_key(request.app.state.gateway, request.path_params["key_id"], _key_fields(form, editing=True))
    session.flash.append(("ok", f"Key {key.name} ({key.id}) saved."))
    return RedirectResponse("/ui/keys", status_code=303)


async def _revoke_key(request: Request, session: Session, form: dict[str, str]) -> Response:
    key = await end_key(request.app.state.gateway, request.path_params["key_id"])
    session.flash.append(("ok", f"Key {key.name} ({key.id}) revoked."))
    return RedirectResponse("/ui/keys", status_code=303)


# --- failovers, usage ---------------------------------------------------------------------------


async def _failovers(request: Request, access: Access) -> dict[str, Any]:
    gateway: Gateway = request.app.state.gateway
    wanted = {name: request.query_params.get(name, "").strip() for name in ("alias", "target", "request_id")}
    events = []
    for event in reversed(list(gateway.health.recent_failovers)):
        if wanted["alias"] and event.get("alias") != wanted["alias"]:
            continue
        if wanted["target"] and event.get("from") != wanted["target"]:
            continue
        if wanted["request_id"] and wanted["request_id"] not in str(event.get("request_id", "")):
            continue
        events.append(event)
    takeovers = []
    if gateway.accounting.ledger is not None:
        found = await asyncio.to_thread(recent_takeovers, gateway.accounting.db, time.time() - TAKEOVER_WINDOW)
        for row in found:
            if wanted["alias"] and row["alias"] != wanted["alias"]:
                continue
            if wanted["target"] and wanted["target"] not in {a.get("target") for a in row["attempts"]}:
                continue
            if wanted["request_id"] and wanted["request_id"] not in str(row["request_id"]):
                continue
            takeovers.append(row)
    return {"events": events, "takeovers": takeovers, "wanted": wanted}


_USAGE_PARAMS = ("by", "since", "until", "key", "alias", "target", "model")


async def _usage(request: Request, access: Access) -> dict[str, Any]:
    gateway: Gateway = request.app.state.gateway
    params = {name: request.query_params.get(name, "").strip() for name in _USAGE_PARAMS}
    if "by" not in request.query_params:
        params["by"] = "day"
    if access.read_only_mode:
        return {"report": None, "params": params, "groups": GROUPS, "error": None, "charts": None, "query": ""}
    error = None
    report = None
    try:
        report = await usage_of(gateway, params)
    except LifelineError as exc:
        error = str(exc)
    query = urlencode({k: v for k, v in params.items() if v})
    charts = None
    if report is not None:
        by_day = await usage_of(gateway, {**params, "by": "day,target"})
        by_target = await usage_of(gateway, {**params, "by": "target"})
        charts = {"spend": _stacked_spend(by_day.rows), "tokens": _token_bars(by_target.rows)}
    return {"report": report, "params": params, "groups": GROUPS, "error": error, "charts": charts, "query": query}


#: the stacked chart's geometry: plot height, bar width and gap, left margin for the axis labels
_PLOT_H, _BAR_W, _GAP, _LEFT = 160.0, 28.0, 10.0, 56.0
_PALETTE = 8


def _stacked_spend(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Spend per day stacked by target: the rectangles of an SVG chart (oldest day first, the last 31)."""
    days = sorted({str(r["day"]) for r in rows})[-31:]
    if not days:
        return None
    targets = sorted({str(r["target"]) if r["target"] is not None else "—" for r in rows})
    color = {t: i % _PALETTE for i, t in enumerate(targets)}
    totals = dict.fromkeys(days, 0.0)
    for r in rows:
        if str(r["day"]) in totals:
            totals[str(r["day"])] += r["cost_usd"] or 0.0
    highest = max(totals.values())
    top = highest or 1.0
    bars = []
    for i, day in enumerate(days):
        x, y = _LEFT + i * (_BAR_W + _GAP), _PLOT_H
        for r in (r for r in rows if str(r["day"]) == day):
            height = (r["cost_usd"] or 0.0) / top * (_PLOT_H - 10)
            y -= height
            target = str(r["target"]) if r["target"] is not None else "—"
            bars.append(
                {
                    "x": x,
                    "y": y,
                    "h": height,
                    "day": day,
                    "target": target,
                    "cost": r["cost_usd"] or 0.0,
                    "c": color[target],
                }
            )
    width = max(400.0, _LEFT + len(days) * (_BAR_W + _GAP))  # a few days stay bars, not walls
    labels = [{"x": _LEFT + i * (_BAR_W + _GAP) + _BAR_W / 2, "day": d[5:]} for i, d in enumerate(days)]
    legend = [{"target": t, "c": color[t]} for t in targets]
    return {"bars": bars, "width": width, "height": _PLOT_H + 24, "top": highest, "labels": labels, "legend": legend}


def _token_bars(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tokens per target (prompt and completion), as horizontal bars scaled to the largest."""
    totals = [
        (str(r["target"]) if r["target"] is not None else "—", r["prompt_tokens"], r["completion_tokens"]) for r in rows
    ]
    top = max((p + c for _, p, c in totals), default=0) or 1
    return [
        {"target": t, "prompt": p, "completion": c, "pw": p / top * 200, "cw": c / top * 200} for t, p, c in totals
    ][:40]


async def usage_csv(request: Request) -> Response:
    gate = _gate(request)
    if gate is None:
        return _not_found()
    _console, gateway, access = gate
    if not access.read or access.read_only_mode:
        return PlainTextResponse("Forbidden: usage needs a master key and a session.", status_code=403)
    params = {name: request.query_params.get(name, "").strip() for name in _USAGE_PARAMS}
    try:
        report = await usage_of(gateway, params)
    except LifelineError as exc:
        return PlainTextResponse(str(exc), status_code=400)
    return Response(
        report.to_csv(),
        media_type="text/csv",
        headers={"content-disposition": 'attachment; filename="lifeline-usage.csv"', "cache-control": "no-store"},
    )


# --- reports -----------------------------------------------------------------------------------


def _reports_dir(gateway: Gateway) -> Path | None:
    configured = gateway.config.console.reports_dir
    return Path(configured).expanduser().resolve() if configured else None


def _list_reports(root: Path) -> list[dict[str, Any]]:
    """The reports under `root`, newest first: each HTML page (with its Markdown and results.json beside it)."""
    found: list[dict[str, Any]] = []
    if not root.is_dir():
        return found
    for depth in range(1, _REPORT_DEPTH + 1):
        for page in root.glob("/".join(["*"] * depth) + ".html"):
            if not page.is_file() or len(found) >= _MAX_REPORTS:
                continue
            relative = page.relative_to(root).as_posix()
            kind = next((k for k in ("drill", "eval", "audit") if k in relative.lower()), "report")
            siblings = [p.relative_to(root).as_posix() for p in sorted(page.parent.glob("*")) if p != page]
            found.append(
                {
                    "path": relative,
                    "kind": kind,
                    "modified": page.stat().st_mtime,
                    "others": [o for o in siblings if Path(o).suffix in _REPORT_TYPES][:4],
                }
            )
    return sorted(found, key=lambda r: r["modified"], reverse=True)


def _report_file(root: Path, relative: str) -> Path | None:
    """The file `relative` names under `root`, or None when it leaves it or is not a report's kind of file."""
    if not relative or "\\" in relative or relative.startswith("/"):
        return None
    path = (root / relative).resolve()
    if not path.is_relative_to(root) or path.suffix not in _REPORT_TYPES or not path.is_file():
        return None
    return path


async def _reports(request: Request, access: Access) -> dict[str, Any]:
    gateway: Gateway = request.app.state.gateway
    root = _reports_dir(gateway)
    reports = await asyncio.to_thread(_list_reports, root) if root is not None else None
    opened = request.query_params.get("open", "")
    if root is None or _report_file(root, opened) is None:
        opened = ""
    return {"reports": reports, "opened": opened}


async def report_file(request: Request) -> Response:
    """A report's file, served for the Reports page's frame: sandboxed, no script runs, nothing is fetched."""
    gate = _gate(request)
    if gate is None:
        return _not_found()
    _console, gateway, access = gate
    if not access.read:
        return PlainTextResponse("Forbidden: log in with the master key.", status_code=403)
    root = _reports_dir(gateway)
    path = _report_file(root, request.query_params.get("path", "")) if root is not None else None
    if root is None or path is None:
        return _not_found()
    data = await asyncio.to_thread(path.read_bytes)
    return Response(
        data,
        media_type=_REPORT_TYPES[path.suffix],
        headers={
            "content-security-policy": "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
            "frame-ancestors 'self'",
            "x-content-type-options": "nosniff",
            "cache-control": "no-store",
        },
    )


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in _STATIC or not console_of(request).served(request.app.state.gateway):
        return _not_found()
    data = resources.files("lifeline.console").joinpath("static", name).read_bytes()
    return Response(data, media_type=_STATIC[name], headers={"cache-control": "no-cache"})


def console_routes() -> list[Route]:
    return [
        Route("/ui", _page("overview.html", _overview), methods=["GET"]),
        Route("/ui/login", login_page, methods=["GET"]),
        Route("/ui/login", login, methods=["POST"]),
        Route("/ui/logout", _action(_logout), methods=["POST"]),
        Route("/ui/data/overview", overview_data, methods=["GET"]),
        Route("/ui/targets", _page("targets.html", _targets), methods=["GET"]),
        Route("/ui/targets/{name}", _action(_set_target), methods=["POST"]),
        Route("/ui/reload", _action(_reload), methods=["POST"]),
        Route("/ui/keys", _page("keys.html", _keys), methods=["GET"]),
        Route("/ui/keys", _action(_create_key), methods=["POST"]),
        Route("/ui/keys/{key_id}", _action(_edit_key), methods=["POST"]),
        Route("/ui/keys/{key_id}/revoke", _action(_revoke_key), methods=["POST"]),
        Route("/ui/failovers", _page("failovers.html", _failovers), methods=["GET"]),
        Route("/ui/usage", _page("usage.html", _usage), methods=["GET"]),
        Route("/ui/usage.csv", usage_csv, methods=["GET"]),
        Route("/ui/reports", _page("reports.html", _reports), methods=["GET"]),
        Route("/ui/reports/file", report_file, methods=["GET"]),
        Route("/ui/static/{name}", static, methods=["GET"]),
    ]
