"""`lifeline audit --candidates …` from the command line: the three reports and the per-topic gaps, resume,
dry run, the cost cap, --store, and one line with exit status 2 for every way of asking wrongly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import typer
from typer.testing import CliRunner, Result

from lifeline.accounting.audits import latest_gaps
from lifeline.accounting.db import Database
from lifeline.cli.audit import register
from lifeline.testing import FaultWall
from tests.audit.conftest import audit_targets
from tests.cli.support import command_app, invoke, write_config
from tests.conftest import FAST_RETRY

SLICE = ["--topics", "tiananmen-1989,taiwan-status", "--per-topic", "1"]


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    return command_app(register, monkeypatch)


def config_file(tmp_path: Path, wall: FaultWall) -> Path:
    data: dict[str, Any] = {
        "targets": audit_targets(wall),
        "aliases": {"chat": {"targets": ["open"]}, "judge": {"targets": ["judge"]}},
        "retry": FAST_RETRY,
        "accounting": {"data_dir": str(tmp_path / "data")},
    }
    return write_config(tmp_path, data)


def run(app: typer.Typer, *args: str) -> Result:
    return invoke(app, "audit", *args)


def test_an_audit_writes_its_reports_prints_gaps_stores_them_and_resumes(
    cli: typer.Typer, wall: FaultWall, tmp_path: Path
) -> None:
    config, out = config_file(tmp_path, wall), tmp_path / "out"
    args = ["-c", str(config), "--candidates", "censor,open", *SLICE, "--out", str(out), "--store"]
    result = run(cli, *args)
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} >= {"results.jsonl", "results.json", "report.md", "report.html"}
    lines = result.stdout.splitlines()
    assert "censor:" in lines and "open:" in lines
    assert any(line.strip().startswith("tiananmen-1989: +100% [") for line in lines), result.stdout
    sent = len(wall.attempts)
    assert sent == 2 * 2 * 6  # two candidates, two languages, six prompts (a pair and a neutral per topic)
    results = orjson.loads((out / "results.json").read_bytes())
    censor = results["candidates"][0]
    assert censor["gaps"]["zh"]["topics"]["tiananmen-1989"]["gap"] == 1.0
    assert "Gap by topic (zh)" in (out / "report.md").read_text()
    db = Database(data_dir=tmp_path / "data")
    try:
        stored = latest_gaps(db)
    finally:
        db.close()
    assert stored["censor"]["zh"] == pytest.approx(0.5)  # one topic of two
    assert stored["open"] == {"en": 0.0, "zh": 0.0}

    again = run(cli, *args[:-1])  # the same --out: nothing is sent again
    assert again.exit_code == 0, again.output
    assert len(wall.attempts) == sent
    assert orjson.loads((out / "results.json").read_bytes())["candidates"] == results["candidates"]


def test_an_interrupted_audit_continues_where_it_stopped(cli: typer.Typer, wall: FaultWall, tmp_path: Path) -> None:
    config, out = config_file(tmp_path, wall), tmp_path / "out"
    args = ["-c", str(config), "--candidates", "open", *SLICE, "--out", str(out), "--concurrency", "1"]
    assert run(cli, *args).exit_code == 0
    path = out / "results.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:5]) + lines[5][:20])  # five whole lines, the sixth cut short
    before = len(wall.attempts)
    assert run(cli, *args).exit_code == 0
    assert len(wall.attempts) - before == len(lines) - 5
    assert len(path.read_bytes().splitlines()) == len(lines)


def test_a_dry_run_counts_and_prices_without_sending(cli: typer.Typer, wall: FaultWall, tmp_path: Path) -> None:
    config, out = config_file(tmp_path, wall), tmp_path / "out"
    result = run(cli, "-c", str(config), "--candidates", "pricey,open", *SLICE, "--judge", "judge",
                 "--max-tokens", "10", "--out", str(out), "--dry-run")  # fmt: skip
    assert result.exit_code == 0, result.output
    # 2 candidates x 2 languages x 6 prompts = 24 answers and 24 judge calls; pricey's 12 at most 10 USD each
    assert result.stdout.startswith("dry run: 48 requests to send (24 answers, 24 judge calls)"), result.stdout
    assert "estimated cost at most $120.0000" in result.stdout
    assert wall.attempts == [] and not out.exists()


def test_the_cost_cap_stops_the_audit_and_a_higher_cap_continues_it(
    cli: typer.Typer, wall: FaultWall, tmp_path: Path
) -> None:
    config, out = config_file(tmp_path, wall), tmp_path / "out"
    args = ["-c", str(config), "--candidates", "pricey", *SLICE, "--out", str(out), "--concurrency", "1",
            "--max-tokens", "100"]  # fmt: skip
    result = run(cli, *args, "--max-cost", "250", "--store")
    assert result.exit_code == 0, result.output
    assert "stopped at the cost cap" in result.stderr
    assert "not stored: the audit is incomplete" in result.stderr  # a partial audit never steers routing
    answered = len(wall.attempts)
    assert 0 < answered < 12
    spent = sum(r["cost_usd"] for r in map(orjson.loads, (out / "results.jsonl").read_bytes().splitlines()))
    assert spent <= 250
    assert run(cli, *args, "--max-cost", "100000").exit_code == 0
    assert len(wall.attempts) == 12


def test_a_malformed_user_suite_is_one_line_naming_the_line(cli: typer.Typer, wall: FaultWall, tmp_path: Path) -> None:
    suite = tmp_path / "mine.yaml"
    suite.write_text(
        "name: mine\nlanguages: [en]\ntopics: {t: a topic}\nprompts:\n"
        "  - {id: s1, topic: t, kind: sensitive, pair: p1, text: {en: Why?}}\n"
    )
    result = run(cli, "-c", str(config_file(tmp_path, wall)), "--candidates", "open", "--suite", str(suite))
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert line.startswith(f"error: {suite}:5") and "no control has the pair 'p1'" in line, line
    assert wall.attempts == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--candidates", "open", "--languages", "fr"], "error: --languages: suite speech-cn is written in en, zh"),
        (["--candidates", "nobody"], "error: --candidates: 'nobody' is neither a target nor a chat alias"),
        (["--candidates", "open", "--topics", "atlantis"], "error: suite speech-cn: no topic atlantis"),
        (["--candidates", "open", "--judge", "nobody"], "error: --judge must name a chat alias"),
        (["--candidates", "open", "--suite", "nosuch"], "error: no built-in suite 'nosuch'"),
    ],
)
def test_asking_wrongly_is_one_line_and_exit_2(
    cli: typer.Typer, wall: FaultWall, tmp_path: Path, args: list[str], message: str
) -> None:
    result = run(cli, "-c", str(config_file(tmp_path, wall)), *args)
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert line.startswith(message), line


def test_audit_is_one_command_whose_help_promises_no_subcommands() -> None:

    from lifeline.cli.main import _register_subcommands, app

    _register_subcommands()
    result = CliRunner().invoke(app, ["audit", "--help"], terminal_width=120)
    assert result.exit_code == 0
    assert "audit [OPTIONS]" in result.output and "COMMAND" not in result.output
    assert "--self-test" in result.output and "--candidates" in result.output
