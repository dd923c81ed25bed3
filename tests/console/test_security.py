"""The console's guards, in process: no page or action without a session when a master key is set, the CSRF
token on every change, the master key never in a page, a cookie or a log, and no console at all on a bind
beyond loopback without a master key."""

from __future__ import annotations

import asyncio
import logging
import re
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from lifeline.config import Config, parse_config
from lifeline.server.app import create_app

MASTER = "mk-console-test-0123456789abcdef"
TARGET = {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}

#: every console route and its method (a page, the data endpoint, the CSV and every action)
PAGES = ["/ui", "/ui/targets", "/ui/keys", "/ui/failovers", "/ui/usage", "/ui/reports"]
READS = [*PAGES, "/ui/data/overview", "/ui/usage.csv"]
ACTIONS = ["/ui/logout", "/ui/targets/t", "/ui/reload", "/ui/keys", "/ui/keys/k1", "/ui/keys/k1/revoke"]


def make(host: str = "127.0.0.1", master_key: str | None = MASTER) -> Config:
    data: dict[str, Any] = {
        "targets": {"t": TARGET},
        "aliases": {"chat": {"targets": ["t"]}},
        "server": {"host": host},
        "accounting": {"data_dir": tempfile.mkdtemp(prefix="lifeline-console-")},  # its own keys and ledger
    }
    if master_key is not None:
        data["admin"] = {"master_key": master_key}
    return parse_config(data, env={})


Scenario = Callable[[httpx.AsyncClient], Awaitable[Any]]


def run(config: Config, scenario: Scenario) -> Any:
    async def main() -> Any:
        app = create_app(config)
        await app.state.gateway.start()
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:4000") as client:
                return await scenario(client)
        finally:
            await app.state.gateway.close()

    return asyncio.run(main())


async def log_in(client: httpx.AsyncClient) -> str:
    """Log in; returns the page's CSRF token."""
    response = await client.post("/ui/login", data={"master_key": MASTER})
    assert response.status_code == 303 and response.headers["location"] == "/ui"
    page = await client.get("/ui")
    assert page.status_code == 200
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


def test_every_route_refuses_without_a_session() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        for path in PAGES:
            response = await client.get(path)
            assert response.status_code == 303 and response.headers["location"] == "/ui/login", path
        assert (await client.get("/ui/data/overview")).status_code == 401
        assert (await client.get("/ui/usage.csv")).status_code == 403
        assert (await client.get("/ui/reports/file", params={"path": "x.html"})).status_code == 403
        for path in ACTIONS:
            response = await client.post(path, data={"state": "drained", "csrf": "x"})
            assert response.status_code == 403, path
        # a wrong key opens no session
        wrong = await client.post("/ui/login", data={"master_key": MASTER + "x"})
        assert wrong.status_code == 401 and "lifeline_console" not in wrong.headers.get("set-cookie", "")
        assert (await client.get("/ui")).status_code == 303

    run(make(), scenario)


def test_a_session_opens_every_page_and_the_cookie_is_strict() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        response = await client.post("/ui/login", data={"master_key": MASTER})
        cookie = response.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
        assert "Secure" not in cookie  # served over plain HTTP here
        for path in READS:
            assert (await client.get(path)).status_code == 200, path
        for path in PAGES:  # each page's own title, nothing else inside it
            assert re.search(r"<title>[A-Z][a-z ]+ · Lifeline console</title>", (await client.get(path)).text), path

    run(make(), scenario)


def test_the_cookie_is_secure_over_tls() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        response = await client.post("https://127.0.0.1:4000/ui/login", data={"master_key": MASTER})
        assert "Secure" in response.headers["set-cookie"]

    run(make(), scenario)


def test_every_action_needs_the_csrf_token() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        csrf = await log_in(client)
        gateway_state = []
        for path in ACTIONS:
            for token in (None, "", "not-the-token"):
                data = {"state": "drained", "name": "k"} | ({"csrf": token} if token is not None else {})
                response = await client.post(path, data=data)
                assert response.status_code == 403, (path, token)
                gateway_state.append(response.status_code)
        # with the token, the action is done (through the admin API's own service)
        response = await client.post("/ui/targets/t", data={"state": "drained", "csrf": csrf})
        assert response.status_code == 303
        overview = (await client.get("/ui/data/overview")).json()
        assert overview["targets"][0]["override"] == "drained"
        # the token also travels as a header, for a script's call
        response = await client.post("/ui/targets/t", data={"state": "healthy"}, headers={"x-csrf-token": csrf})
        assert response.status_code == 303
        assert (await client.get("/ui/data/overview")).json()["targets"][0]["override"] is None

    run(make(), scenario)


def test_logout_ends_the_session() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        csrf = await log_in(client)
        cookie = client.cookies.get("lifeline_console")
        assert (await client.post("/ui/logout", data={"csrf": csrf})).status_code == 303
        client.cookies.set("lifeline_console", cookie or "", path="/ui")  # the old id, sent again
        assert (await client.get("/ui")).status_code == 303

    run(make(), scenario)


def test_the_master_key_never_appears_in_a_page_a_cookie_or_a_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def scenario(client: httpx.AsyncClient) -> list[str]:
        seen: list[str] = []
        wrong = await client.post("/ui/login", data={"master_key": MASTER[:-1]})
        seen += [wrong.text, str(wrong.headers)]
        response = await client.post("/ui/login", data={"master_key": MASTER})
        seen += [response.text, str(response.headers)]
        csrf = await log_in(client)
        for path in READS:
            answer = await client.get(path)
            seen += [answer.text, str(answer.headers)]
        created = await client.post("/ui/keys", data={"name": "k", "csrf": csrf}, follow_redirects=True)
        seen += [created.text, str(dict(client.cookies))]
        return seen

    seen = run(make(), scenario)
    for text in [*seen, caplog.text]:
        assert MASTER not in text and MASTER[:-1] not in text


def test_without_a_master_key_the_console_is_read_only_on_loopback() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        page = await client.get("/ui")
        assert page.status_code == 200 and "Read-only" in page.text
        assert 'name="csrf"' not in page.text
        targets = await client.get("/ui/targets")
        assert targets.status_code == 200 and "Drain" not in targets.text
        for path in ACTIONS:
            assert (await client.post(path, data={"state": "drained"})).status_code == 403, path
        # keys and usage stay closed without a master key, as in the admin API
        keys = await client.get("/ui/keys")
        assert "managed only with a master key" in keys.text
        assert (await client.get("/ui/usage.csv")).status_code == 403

    run(make(master_key=None), scenario)


@pytest.mark.parametrize("bind", ["0.0.0.0", "192.168.1.5"])
def test_beyond_loopback_without_a_master_key_there_is_no_console(bind: str) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        for path in [*READS, "/ui/login", "/ui/static/console.css"]:
            assert (await client.get(path)).status_code == 404, path
        for path in [*ACTIONS, "/ui/login"]:
            assert (await client.post(path, data={"master_key": "x"})).status_code == 404, path

    run(make(host=bind, master_key=None), scenario)


def test_beyond_loopback_with_a_master_key_the_console_asks_for_it() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        assert (await client.get("/ui")).status_code == 303
        await log_in(client)

    run(make(host="0.0.0.0"), scenario)


def test_a_reload_that_changes_the_master_key_ends_the_sessions() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        await log_in(client)
        app = client._transport.app  # type: ignore[attr-defined]
        gateway = app.state.gateway
        gateway.config = gateway.config.model_copy(update={"admin": make(master_key="mk-another-key-0123456789").admin})
        assert (await client.get("/ui")).status_code == 303

    run(make(), scenario)


def test_the_assets_ship_in_the_package_and_pages_name_no_other_site() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        css = await client.get("/ui/static/console.css")
        js = await client.get("/ui/static/console.js")
        assert css.status_code == 200 and "prefers-color-scheme: dark" in css.text
        assert js.status_code == 200 and "data-live" in js.text
        assert (await client.get("/ui/static/../app.py")).status_code == 404
        await log_in(client)
        for path in PAGES:
            text = (await client.get(path)).text
            assert not re.search(r'(src|href)="(https?:)?//', text), path

    run(make(), scenario)
