"""The console in a real headless Chromium, against a real gateway whose targets are fault-wall servers: log in,
watch a cut target's circuit open without a reload, drain and heal from the page, create a key and use it from
the openai SDK, revoke it and see the SDK refused, and the usage page's totals equal `lifeline usage`.

Every page is saved as a screenshot under the test's artefacts directory ($LIFELINE_ARTEFACTS, else a
temporary one); with LIFELINE_DOCS_SCREENSHOTS=1 the ones docs/console.md shows are copied into docs/console/.
The page may reach the gateway only: every other request is aborted (the console works offline).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
import typer
import yaml
from typer.testing import CliRunner

from lifeline.cli.usage import register
from lifeline.config import load_config
from lifeline.drill.report import write_reports
from lifeline.testing import FaultWall
from lifeline.testing.gateway import RunningGateway, run_gateway
from tests.conftest import FAST_RETRY, wall_target
from tests.drill.test_report import sample

MASTER = "mk-console-browser-0123456789abcdef"
AUTH = {"authorization": f"Bearer {MASTER}"}
ARTEFACTS = Path(os.environ.get("LIFELINE_ARTEFACTS") or tempfile.mkdtemp(prefix="lifeline-artefacts-")) / "console"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "console"
#: the screenshots docs/console.md shows
FOR_DOCS = ("overview", "targets", "keys", "failovers", "usage", "reports", "overview-phone-dark")


@pytest.fixture(scope="module")
def served(wall_server: FaultWall, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, Path]]:
    directory = tmp_path_factory.mktemp("console")
    # written as a file (secrets and all) for `lifeline usage --config` to read the same ledger
    config = {
        "targets": {
            "primary": wall_target(wall_server, "ok?t=primary", price={"input": 3000, "output": 15000}),
            "backup": wall_target(wall_server, "ok?t=backup", price={"input": 5000, "output": 25000}),
            "local": wall_target(wall_server, "ok?t=local", price={"input": 0, "output": 0}),
        },
        "aliases": {"chat": {"targets": ["primary", "backup"]}, "fast": {"targets": ["local", "backup"]}},
        "retry": FAST_RETRY,
        "admin": {"master_key": MASTER},
        "auth": {"enabled": True},
        "accounting": {"data_dir": str(directory / "data")},
        "console": {"reports_dir": str(directory / "reports")},
    }
    write_reports(sample(), directory / "reports" / "drill-sample")
    path = directory / "lifeline.yaml"
    path.write_text(yaml.safe_dump(config))
    wall_server.reset()
    with run_gateway(load_config(path)) as gw:
        yield gw, path


@pytest.fixture
def page(chromium: Any, served: tuple[RunningGateway, Path]) -> Iterator[Any]:
    gw, _ = served
    context = chromium.new_context(viewport={"width": 1200, "height": 900}, color_scheme="light")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("dialog", lambda dialog: dialog.accept())  # the confirmations; the test checks one asked
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(gw.url) else route.abort())
    page.set_default_timeout(20_000)
    try:
        yield page
    finally:
        context.close()
    assert not errors


def shot(page: Any, name: str) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    target = ARTEFACTS / f"{name}.png"
    page.screenshot(path=str(target), full_page=True)
    if os.environ.get("LIFELINE_DOCS_SCREENSHOTS") == "1" and name in FOR_DOCS:
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(target, DOCS / target.name)


def log_in(page: Any, gw: RunningGateway) -> None:
    page.goto(f"{gw.url}/ui")
    assert page.url == f"{gw.url}/ui/login"
    shot(page, "login")
    page.get_by_label("Master key").fill(MASTER)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{gw.url}/ui")
    assert page.get_by_role("heading", name="Overview").is_visible()


def cell(page: Any, target: str, field: str) -> Any:
    return page.locator(f'tr[data-target="{target}"] [data-field="{field}"]')


def wait_text(page: Any, target: str, field: str, text: str) -> None:
    page.wait_for_function(
        '([t, f, text]) => { const e = document.querySelector(`tr[data-target="${t}"] [data-field="${f}"]`);'
        " return e !== null && e.textContent === text; }",
        arg=[target, field, text],
    )


def sdk(gw: RunningGateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=30)


def ask(client: openai.OpenAI, model: str = "chat") -> str:
    answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    return answer.choices[0].message.content or ""


def admin_override(gw: RunningGateway, target: str) -> str | None:
    rows = httpx.get(f"{gw.url}/admin/targets", headers=AUTH, timeout=10).json()["targets"]
    override: str | None = next(r for r in rows if r["target"] == target)["override"]
    return override


def test_a_target_cut_in_the_page_opens_its_circuit_live(page: Any, served: tuple[RunningGateway, Path]) -> None:
    gw, _ = served
    log_in(page, gw)
    asked: list[str] = []
    page.on("dialog", lambda dialog: asked.append(dialog.message))
    page.get_by_role("link", name="Targets").click()
    page.get_by_label("Fault for primary").select_option("forbidden")
    page.get_by_role("button", name="Cut primary").click()
    page.wait_for_url(f"{gw.url}/ui/targets")
    assert asked and "Cut primary?" in asked[-1]
    assert admin_override(gw, "primary") == "cut:forbidden"
    assert cell(page, "primary", "override_text").text_content() == "cut (forbidden)"

    page.get_by_role("link", name="Overview").click()
    assert cell(page, "primary", "circuit").text_content() == "closed"
    page.evaluate("window.notReloaded = true")
    # traffic meets the cut: the circuit opens, the request fails over to backup
    key = create_key_in_the_page(page, gw, "circuit-watcher")
    page.get_by_role("link", name="Overview").click()
    page.evaluate("window.notReloaded = true")
    assert ask(sdk(gw, key)) != ""
    wait_text(page, "primary", "circuit", "open")
    assert page.evaluate("window.notReloaded") is True
    # the alias's chain shows where traffic goes: primary struck through
    assert page.locator('[data-chain-target="primary"]').get_attribute("class") == "chip chip-cut"
    assert "cut_off" in (cell(page, "primary", "why").text_content() or "") or "cut by" in (
        cell(page, "primary", "why").text_content() or ""
    )
    shot(page, "overview")

    # heal from the page: the override ends and the circuit closes
    page.get_by_role("link", name="Targets").click()
    page.get_by_role("button", name="Heal primary").click()
    page.wait_for_url(f"{gw.url}/ui/targets")
    assert admin_override(gw, "primary") is None
    assert cell(page, "primary", "override_text").text_content() == "—"


def create_key_in_the_page(page: Any, gw: RunningGateway, name: str) -> str:
    page.get_by_role("link", name="Keys").click()
    if page.locator("details:has(#create-key)").get_attribute("open") is None:
        page.locator("summary", has_text="Create a key").click()
    page.locator("#create-key").get_by_label("Name", exact=True).fill(name)
    page.locator("#create-key").get_by_role("button", name="Create").click()
    page.wait_for_url(f"{gw.url}/ui/keys")
    secret: str = page.locator("#new-secret").text_content() or ""
    assert secret.startswith("sk-") or len(secret) > 20
    return secret


def test_drain_and_heal_from_the_page(page: Any, served: tuple[RunningGateway, Path]) -> None:
    gw, _ = served
    log_in(page, gw)
    page.get_by_role("link", name="Targets").click()
    page.get_by_role("button", name="Drain backup").click()
    page.wait_for_url(f"{gw.url}/ui/targets")
    assert admin_override(gw, "backup") == "drained"
    assert page.get_by_role("status").first.text_content() == "Target backup is now drained."
    assert cell(page, "backup", "override_text").text_content() == "drained"
    shot(page, "targets")
    page.get_by_role("button", name="Heal backup").click()
    page.wait_for_url(f"{gw.url}/ui/targets")
    assert admin_override(gw, "backup") is None
    assert cell(page, "backup", "override_text").text_content() == "—"


def test_a_key_made_in_the_page_serves_the_sdk_until_it_is_revoked(
    page: Any, served: tuple[RunningGateway, Path]
) -> None:
    gw, _ = served
    log_in(page, gw)
    secret = create_key_in_the_page(page, gw, "sdk-user")
    shot(page, "keys")
    client = sdk(gw, secret)
    assert ask(client, "fast") != ""
    # the secret is shown once
    page.reload()
    assert page.locator("#new-secret").count() == 0
    page.get_by_role("button", name="Revoke sdk-user").click()
    page.wait_for_url(f"{gw.url}/ui/keys")
    row = page.locator("tr", has=page.locator("th", has_text=re.compile("^sdk-user$")))
    assert row.locator('[data-field="status"]').text_content() == "revoked"
    with pytest.raises(openai.AuthenticationError):
        ask(client, "fast")


def test_failovers_and_usage_equal_lifeline_usage(page: Any, served: tuple[RunningGateway, Path]) -> None:
    gw, path = served
    log_in(page, gw)
    secret = create_key_in_the_page(page, gw, "usage-user")
    client = sdk(gw, secret)
    for _ in range(3):
        ask(client, "chat")
        ask(client, "fast")
    page.goto(f"{gw.url}/ui/failovers")
    shot(page, "failovers")
    page.goto(f"{gw.url}/ui/usage?by=target")
    shot(page, "usage")
    # one stacked segment a target that cost something today, drawn with a size
    segments = page.locator("#spend-chart rect").all()
    assert {s.get_attribute("data-target") for s in segments} >= {"primary", "backup"}
    assert all(s.bounding_box()["width"] > 0 for s in segments)
    shown = {
        row.locator('[data-column="target"]').text_content(): int(
            row.locator('[data-column="requests"]').text_content() or 0
        )
        for row in page.locator("#usage tbody tr").all()
    }
    costs = [c.text_content() for c in page.locator('#usage [data-column="cost_usd"]').all()]
    cli = typer.Typer()
    register(cli)
    cli.command("noop")(lambda: None)  # two commands: typer keeps the subcommand's name
    result = CliRunner().invoke(cli, ["usage", "--config", str(path), "--by", "target", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = orjson.loads(result.output)
    rows = rows["data"] if isinstance(rows, dict) else rows
    assert shown == {r["target"] if r["target"] is not None else "—": r["requests"] for r in rows}
    assert costs == [str(r["cost_usd"]) if r["cost_usd"] is not None else "—" for r in rows]
    assert sum(shown.values()) >= 6
    assert any(float(c or 0) > 0 for c in costs)
    # the CSV the page links to is the same report
    csv = page.request.get(f"{gw.url}/ui/usage.csv?by=target")
    assert csv.ok and csv.text().splitlines()[0].startswith("target,requests")


def test_the_overview_fits_a_phone_in_dark_mode(chromium: Any, served: tuple[RunningGateway, Path]) -> None:
    gw, _ = served
    context = chromium.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark")
    page = context.new_page()
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(gw.url) else route.abort())
    try:
        log_in(page, gw)
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(18, 20, 23)"
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390
        # keyboard: the first Tab reaches the skip link
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
        shot(page, "overview-phone-dark")
    finally:
        context.close()


def test_a_report_opens_in_the_page(page: Any, served: tuple[RunningGateway, Path]) -> None:
    gw, _ = served
    log_in(page, gw)
    page.get_by_role("link", name="Reports").click()
    page.get_by_role("link", name="drill-sample/report.html").click()
    frame = page.frame_locator("iframe.report")
    # the report's own page, drawn inside the console (its charts are inline SVG)
    assert frame.locator("svg").count() > 0
    shot(page, "reports")
