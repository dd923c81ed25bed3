"""`lifeline eval` from the command line: a config file of fault-wall targets, the outputs in --out, and
exit status 2 with one line for every way of asking wrongly."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
import typer
from typer.testing import Result

from lifeline.cli.eval import register
from lifeline.testing import FaultWall
from tests.cli.support import command_app, invoke, write_config
from tests.conftest import FAST_RETRY
from tests.eval.conftest import ITEMS, eval_config_data, write_items


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    return command_app(register, monkeypatch)


def config_file(tmp_path: Path, wall: FaultWall, **sections: Any) -> Path:
    targets, aliases = eval_config_data(wall)
    data = {
        "targets": targets,
        "aliases": {k: (v if isinstance(v, dict) else {"targets": v}) for k, v in aliases.items()},
        "retry": FAST_RETRY,
        "accounting": {"data_dir": str(tmp_path / "data")},
        **sections,
    }
    return write_config(tmp_path, data)


def run(app: typer.Typer, *args: str) -> Result:
    return invoke(app, "eval", *args)


def test_an_eval_writes_its_results_and_reports_and_prints_verdicts(
    cli: typer.Typer, wall: FaultWall, tmp_path: Path, items_file: Path
) -> None:
    config, out = config_file(tmp_path, wall, eval={"min_sample": 2}), tmp_path / "out"
    result = run(cli, "-c", str(config), "--input", str(items_file), "--candidates", "pricey", "--baseline", "good",
                 "--out", str(out), "--max-cost-ratio", "3", "--min-win-or-tie", "0.2")  # fmt: skip
    assert result.exit_code == 0, result.output
    figures = orjson.loads((out / "results.json").read_bytes())
    pricey = figures["candidates"][0]
    assert figures["run"]["settings"]["max_cost_ratio"] == 3.0  # the flag
    assert figures["run"]["settings"]["min_sample"] == 2  # the config's eval: section
    assert figures["run"]["settings"]["min_win_or_tie"] == 0.2
    assert pricey["outcomes"]["ties"] == 4
    assert not any("cost per 1k" in c for c in pricey["verdict"]["caveats"])  # 2.0 is within 3
    assert f"pricey: {pricey['verdict']['status'].replace('_', ' ')}" in result.output
    for reason in pricey["verdict"]["reasons"]:
        assert f"  - not ready: {reason}" in result.output
    for caveat in pricey["verdict"]["caveats"]:
        assert f"  - caveat: {caveat}" in result.output
    assert (out / "report.md").exists() and (out / "report.html").exists()
    assert (out / "results.jsonl").exists() and (out / "gateway.log").exists()
    # the eval's requests are in the ledger under their pinned aliases (docs/eval.md says how to see them)
    with sqlite3.connect(tmp_path / "data" / "lifeline.db") as ledger:
        rows = ledger.execute("select alias, target, count(*) from ledger group by 1, 2 order by 1").fetchall()
    assert rows == [("eval:good", "good", 4), ("eval:pricey", "pricey", 4)]


def test_dry_run_prints_the_count_and_estimate_and_sends_nothing(
    cli: typer.Typer, wall: FaultWall, tmp_path: Path
) -> None:
    items = write_items(tmp_path / "items.jsonl", [{**i, "request": {**i["request"], "max_tokens": 10}} for i in ITEMS])
    result = run(cli, "-c", str(config_file(tmp_path, wall)), "--input", str(items), "--candidates", "notools",
                 "--baseline", "good", "--judge", "judge", "--dry-run", "--out", str(tmp_path / "out"))  # fmt: skip
    assert result.exit_code == 0, result.output
    # 4 items x (baseline + 1 candidate) answers, 4 x 2 judge calls; 8 x 10 USD + 8 x 512 x 0.1 USD
    assert "dry run: 16 requests to send (8 answers, 8 judge calls)" in result.output
    assert "$489.6000" in result.output
    assert not wall.attempts
    assert not (tmp_path / "out").exists()


def test_a_bad_input_line_is_one_line_naming_file_and_line(cli: typer.Typer, wall: FaultWall, tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text(orjson.dumps(ITEMS[0]).decode() + "\n{oops\n")
    result = run(cli, "-c", str(config_file(tmp_path, wall)), "--input", str(items), "--candidates", "notools")
    assert result.exit_code == 2
    assert result.output.strip().startswith(f"error: {items}:2: not a JSON object")
    assert len(result.output.strip().splitlines()) == 1
    assert not wall.attempts


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--candidates", "nope"], "'nope' is neither a target nor a chat alias"),
        (["--candidates", "notools", "--judge", "good"], "--judge must name a chat alias"),
        (["--candidates", "notools", "--min-win-or-tie", "1.5"], "--min-win-or-tie"),
        (["--candidates", "notools", "--baseline", "notools"], "both the baseline and a candidate"),
    ],
)
def test_asking_wrongly_is_exit_2_in_one_line(
    cli: typer.Typer, wall: FaultWall, tmp_path: Path, items_file: Path, args: list[str], says: str
) -> None:
    result = run(cli, "-c", str(config_file(tmp_path, wall)), "--input", str(items_file), *args)
    assert result.exit_code == 2, result.output
    assert says in result.output and len(result.output.strip().splitlines()) == 1


def test_input_and_captures_are_exclusive(cli: typer.Typer, wall: FaultWall, tmp_path: Path, items_file: Path) -> None:
    config = str(config_file(tmp_path, wall))
    for extra in ([], ["--input", str(items_file), "--from-captures"]):
        result = run(cli, "-c", config, "--candidates", "notools", *extra)
        assert result.exit_code == 2 and "either --input FILE or --from-captures" in result.output


def test_captured_baseline_needs_captured_answers(cli: typer.Typer, wall: FaultWall, tmp_path: Path) -> None:
    result = run(cli, "-c", str(config_file(tmp_path, wall)), "--input", str(write_items(tmp_path / "i.jsonl", ITEMS)),
                 "--candidates", "notools", "--out", str(tmp_path / "out"))  # fmt: skip
    assert result.exit_code == 2
    assert "no item carries a captured baseline answer" in result.output


def test_a_bad_since_with_captures_is_one_line(cli: typer.Typer, wall: FaultWall, tmp_path: Path) -> None:
    """It was a traceback (the ISO parser's ValueError), unlike `lifeline capture export --since`."""
    for since in ("yesterday", "2026-13-01"):
        result = run(cli, "-c", str(config_file(tmp_path, wall)), "--from-captures", "--since", since,
                     "--candidates", "notools", "--dry-run")  # fmt: skip
        assert result.exit_code == 2, result.output
        assert "--since is not a date" in result.output and len(result.output.strip().splitlines()) == 1
