"""The console's pages and actions in process: each goes through the admin API's own service, so what the
page does shows in /admin/* and the other way round."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from lifeline.config import load_config
from lifeline.server.app import create_app
from tests.console.test_security import MASTER, TARGET, log_in, make, run

ADMIN = {"authorization": f"Bearer {MASTER}"}


def test_keys_created_edited_and_revoked_in_the_page_are_the_admin_apis_keys() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        csrf = await log_in(client)
        page = await client.post(
            "/ui/keys",
            data={"csrf": csrf, "name": "team-a", "aliases": "chat", "budget_usd": "2.5", "budget_period": "day"},
            follow_redirects=True,
        )
        secret = re.search(r'<code id="new-secret">([^<]+)</code>', page.text)
        assert secret is not None
        # shown once: the next page has no secret
        assert 'id="new-secret"' not in (await client.get("/ui/keys")).text
        keys = (await client.get("/admin/keys", headers=ADMIN)).json()["data"]
        assert [(k["name"], k["aliases"], k["budget_usd"], k["budget_period"]) for k in keys] == [
            ("team-a", ["chat"], 2.5, "day")
        ]
        key_id = keys[0]["id"]
        assert secret.group(1) not in str(keys)
        edited = await client.post(
            f"/ui/keys/{key_id}",
            data={"csrf": csrf, "name": "team-a", "aliases": "", "rpm": "60", "expires_at": "2099-01-02T03:04"},
            follow_redirects=True,
        )
        assert "saved" in edited.text
        key = (await client.get(f"/admin/keys/{key_id}", headers=ADMIN)).json()
        assert key["aliases"] is None and key["rpm"] == 60 and key["budget_usd"] is None
        assert key["expires_at"] == dt.datetime(2099, 1, 2, 3, 4, tzinfo=dt.UTC).timestamp()
        # a mistake is shown in the page, in the admin API's words, and changes nothing
        bad = await client.post(f"/ui/keys/{key_id}", data={"csrf": csrf, "aliases": "nope"}, follow_redirects=True)
        assert bad.status_code == 200 and "no alias of that name" in bad.text
        bad = await client.post("/ui/keys", data={"csrf": csrf, "name": "b", "rpm": "x"}, follow_redirects=True)
        assert "&#39;rpm&#39; must be a number" in bad.text
        revoked = await client.post(f"/ui/keys/{key_id}/revoke", data={"csrf": csrf}, follow_redirects=True)
        assert "revoked" in revoked.text
        assert (await client.get(f"/admin/keys/{key_id}", headers=ADMIN)).json()["status"] == "revoked"

    run(make(), scenario)


def test_drain_cut_and_heal_show_in_the_admin_api() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        csrf = await log_in(client)

        async def admin_row() -> dict[str, Any]:
            row: dict[str, Any] = (await client.get("/admin/targets", headers=ADMIN)).json()["targets"][0]
            return row

        async def since() -> str:
            text: str = (await client.get("/ui/data/overview")).json()["targets"][0]["since_text"]
            return text

        assert await since() == "—"  # closed before the console first looked: since it cannot know when
        await client.post("/ui/targets/t", data={"csrf": csrf, "state": "cut", "fault": "timeout"})
        assert (await admin_row())["override"] == "cut:timeout"
        assert (await since()).endswith("UTC")  # a change it saw
        page = (await client.get("/ui/targets")).text
        assert "cut by the operator (timeout)" in page
        await client.post("/ui/targets/t", data={"csrf": csrf, "state": "drained"})
        assert (await admin_row())["override"] == "drained"
        await client.post("/ui/targets/t", data={"csrf": csrf, "state": "healthy"})
        assert (await admin_row())["override"] is None
        bad = await client.post("/ui/targets/nope", data={"csrf": csrf, "state": "cut"}, follow_redirects=True)
        assert "There is no target" in bad.text

    run(make(), scenario)


def test_a_reload_of_a_bad_file_shows_its_validation_error(tmp_path: Path) -> None:
    path = tmp_path / "lifeline.yaml"
    good: dict[str, Any] = {
        "targets": {"t": TARGET, "u": TARGET},
        "aliases": {"chat": {"targets": ["t"]}},
        "admin": {"master_key": MASTER},
        "accounting": {"data_dir": str(tmp_path)},
    }
    path.write_text(yaml.safe_dump(good))

    async def main() -> None:
        app = create_app(load_config(path), config_path=path)
        await app.state.gateway.start()
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:4000") as client:
                csrf = await log_in(client)
                path.write_text(yaml.safe_dump({**good, "aliases": {"chat": {"targets": ["missing"]}}}))
                bad = await client.post("/ui/reload", data={"csrf": csrf}, follow_redirects=True)
                assert bad.status_code == 200 and "missing" in bad.text and 'class="flash error"' in bad.text
                assert list(app.state.gateway.config.aliases["chat"].targets) == ["t"]
                path.write_text(yaml.safe_dump({**good, "aliases": {"chat": {"targets": ["u", "t"]}}}))
                done = await client.post("/ui/reload", data={"csrf": csrf}, follow_redirects=True)
                assert "Config reloaded" in done.text
                assert list(app.state.gateway.config.aliases["chat"].targets) == ["u", "t"]
                overview = (await client.get("/ui")).text
                assert re.search(r"chat</strong>:.*u.*→.*t", overview)
        finally:
            await app.state.reloader.shutdown()

    asyncio.run(main())


def test_the_usage_page_shows_the_admin_apis_report_and_its_csv() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        await log_in(client)
        # a request that fails (no target listens) is still a ledger row
        await client.post(
            "/v1/chat/completions", json={"model": "chat", "messages": [{"role": "user", "content": "x"}]}
        )
        page = await client.get("/ui/usage", params={"by": "alias,target"})
        report = (await client.get("/admin/usage", headers=ADMIN, params={"by": "alias,target"})).json()
        assert report["data"] and report["data"][0]["requests"] == 1
        cells = re.findall(r'<td data-column="requests">(\d+)</td>', page.text)
        assert [int(c) for c in cells] == [r["requests"] for r in report["data"]]
        csv = await client.get("/ui/usage.csv", params={"by": "alias,target"})
        admin_csv = await client.get("/admin/usage", headers=ADMIN, params={"by": "alias,target", "format": "csv"})
        assert csv.text == admin_csv.text and "attachment" in csv.headers["content-disposition"]
        # the charts: spend per day stacked by target, tokens per target
        assert re.search(r'<rect [^>]*data-day="\d{4}-\d\d-\d\d" data-target="—"', page.text)  # no target answered
        assert 'id="tokens-chart"' in page.text
        bad = await client.get("/ui/usage", params={"by": "colour"})
        assert bad.status_code == 200 and 'class="flash error"' in bad.text

    run(make(), scenario)


def test_the_failovers_page_filters_the_gateways_log() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        await log_in(client)
        app = client._transport.app  # type: ignore[attr-defined]
        ring = app.state.gateway.health.recent_failovers
        ring.append(
            {
                "at": 1.0,
                "request_id": "req-one",
                "alias": "chat",
                "from": "t",
                "outcome": "x",
                "status": 500,
                "remaining": ["u"],
            }
        )
        ring.append(
            {
                "at": 2.0,
                "request_id": "req-two",
                "alias": "other",
                "from": "u",
                "outcome": "y",
                "status": None,
                "remaining": [],
            }
        )
        every = (await client.get("/ui/failovers")).text
        assert "req-one" in every and "req-two" in every and every.index("req-two") < every.index("req-one")
        only = (await client.get("/ui/failovers", params={"alias": "chat"})).text
        assert "req-one" in only and "req-two" not in only
        by_id = (await client.get("/ui/failovers", params={"request_id": "two"})).text
        assert "req-two" in by_id and "req-one" not in by_id

    run(make(), scenario)


def test_the_failovers_page_lists_streams_taken_over_from_the_ledger() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        await log_in(client)
        app = client._transport.app  # type: ignore[attr-defined]
        db = app.state.gateway.accounting.db
        now = time.time()
        steps = {
            "req-continued": [("t", "error", 500), ("u", "continued", 200)],
            "req-replayed": [("t", "unavailable", 503), ("u", "replayed", 200)],
            "req-plain": [("t", "error", 500), ("u", "ok", 200)],
            "req-old": [("t", "error", 500), ("u", "continued", 200)],
        }
        for i, (request_id, attempts) in enumerate(steps.items()):
            started = now - (48 * 3600 if request_id == "req-old" else i)
            ledger_form = [{"target": t, "outcome": o, "status": st, "latency": 0.1} for t, o, st in attempts]
            db.execute(
                "INSERT INTO ledger (id, request_id, alias, target, outcome, status, attempts, prompt_tokens, "
                "completion_tokens, usage_estimated, cost_nusd, latency_ms, streamed, started_at, finished_at) "
                "VALUES (?, ?, 'chat', 'u', 'ok', 200, ?, 1, 1, ?, 0, 1.0, ?, ?, ?)",
                (f"id-{i}", request_id, orjson.dumps(ledger_form).decode(), False, True, started, started + 1),
            )
        page = (await client.get("/ui/failovers")).text
        assert "<title>Failovers · Lifeline console</title>" in page
        table = page[page.index('id="takeovers"') :]
        assert "req-continued" in table and "req-replayed" in table
        assert "req-plain" not in table and "req-old" not in table  # no takeover; older than a day
        assert table.index("req-continued") < table.index("req-replayed")  # newest first
        assert "(continued 200)" in table
        only = (await client.get("/ui/failovers", params={"request_id": "replayed"})).text
        assert "req-replayed" in only and "req-continued" not in only

    run(make(), scenario)


def test_the_overview_data_has_every_target_and_an_hour_of_minutes() -> None:
    async def scenario(client: httpx.AsyncClient) -> dict[str, Any]:
        await log_in(client)
        data: dict[str, Any] = (await client.get("/ui/data/overview")).json()
        return data

    data = run(make(), scenario)
    assert [t["target"] for t in data["targets"]] == ["t"] and data["targets"][0]["shown"] == "closed"
    assert {k: len(v) for k, v in data["sparks"].items()} == {"requests": 60, "error_rate": 60, "failovers": 60}


def test_reports_are_listed_and_opened_sandboxed_from_the_reports_directory(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    (reports / "drill-1").mkdir(parents=True)
    (reports / "drill-1" / "report.html").write_text("<h1>Drill one</h1>")
    (reports / "drill-1" / "results.json").write_text("{}")
    (reports / "eval-2" / "nested").mkdir(parents=True)
    (reports / "eval-2" / "nested" / "report.html").write_text("<h1>Eval two</h1>")
    (tmp_path / "secret.html").write_text("outside")
    config = make().model_copy(update={"console": make().console.model_copy(update={"reports_dir": str(reports)})})

    async def scenario(client: httpx.AsyncClient) -> None:
        assert (await client.get("/ui/reports/file", params={"path": "drill-1/report.html"})).status_code == 403
        await log_in(client)
        page = (await client.get("/ui/reports")).text
        assert "drill-1/report.html" in page and "eval-2/nested/report.html" in page
        assert "results.json" in page
        opened = await client.get("/ui/reports", params={"open": "drill-1/report.html"})
        assert "<iframe" in opened.text and "sandbox" in opened.text
        served = await client.get("/ui/reports/file", params={"path": "drill-1/report.html"})
        assert served.text == "<h1>Drill one</h1>"
        assert served.headers["content-security-policy"].startswith("sandbox;")
        for path in ("../secret.html", "/etc/passwd", "drill-1/../../secret.html", "drill-1", ""):
            assert (await client.get("/ui/reports/file", params={"path": path})).status_code == 404, path

    run(config, scenario)


def test_without_a_reports_directory_the_page_says_how_to_set_one() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        await log_in(client)
        assert "console.reports_dir" in (await client.get("/ui/reports")).text
        assert (await client.get("/ui/reports/file", params={"path": "x.html"})).status_code == 404

    run(make(), scenario)
