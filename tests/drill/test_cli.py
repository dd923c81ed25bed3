"""`lifeline drill` end to end through typer's CliRunner: a config file whose targets are the fault wall,
the reports in a temporary --out directory, and exit status 2 for every way of asking wrongly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import typer
import yaml
from typer.testing import Result

from lifeline.cli.drill import register
from lifeline.testing import FaultWall
from tests.cli.support import command_app, invoke, write_config
from tests.conftest import FAST_RETRY, wall_target

PRIMARY, BACKUP = "ok?t=primary", "ok?t=backup"


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    return command_app(register, monkeypatch)


def config_file(tmp_path: Path, wall: FaultWall, primary: dict[str, Any] | None = None) -> Path:
    data = {
        "targets": {"primary": wall_target(wall, PRIMARY, **(primary or {})), "backup": wall_target(wall, BACKUP)},
        "aliases": {
            "vectors": {"kind": "embeddings", "targets": ["primary"]},
            "chat": {"targets": ["primary", "backup"]},
        },
        "retry": FAST_RETRY,
        "accounting": {"data_dir": str(tmp_path / "data")},
    }
    return write_config(tmp_path, data)


def run(app: typer.Typer, *args: str) -> Result:
    return invoke(app, "drill", *args)


def test_a_drill_from_the_command_line_writes_its_reports(cli: typer.Typer, wall: FaultWall, tmp_path: Path) -> None:
    config, out = config_file(tmp_path, wall), tmp_path / "out"
    result = run(cli, "--config", str(config), "--cut", "primary", "-n", "20", "-C", "5", "--out", str(out))
    assert result.exit_code == 0, result.output
    # the Markdown on stdout is the report; the first chat alias was chosen (not the embeddings one)
    assert result.stdout.startswith("# Lifeline drill: 100.0 % served with primary cut off")
    assert "- **Alias**: chat: primary → backup" in result.stdout
    assert "| backup | 20 | 100.0 % | 20 |" in result.stdout
    assert (out / "report.md").read_text() == result.stdout.rstrip("\n") + "\n"
    assert "<svg" in (out / "report.html").read_text()
    data = orjson.loads((out / "results.json").read_bytes())
    summary = data["drill"]["summary"]
    # checked against the wall: the primary was never reached, the backup served every request
    assert wall.attempts_for(PRIMARY) == []
    assert summary["served_by"] == {"backup": len(wall.attempts_for(BACKUP))} == {"backup": 20}
    assert summary["share_served"] == 1.0 and summary["errors_by_code"] == []
    # without a terminal, progress is a few plain lines on stderr, and the gateway's log went to a file
    assert "drill: 20/20 done, 20 answered, 0 not" in result.stderr
    assert "\r" not in result.stderr
    assert (out / "gateway.log").exists()


def test_a_baseline_and_a_prompts_file_from_the_command_line(cli: typer.Typer, wall: FaultWall, tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "one"}\n{"prompt": "two"}\n')
    config = config_file(tmp_path, wall, {"timeouts": {"response": 0.3}})
    args = ["--config", str(config), "--cut", "primary", "--fault", "timeout"]
    args += ["-n", "4", "-C", "2", "--no-stream", "--baseline", "--prompts", str(prompts), "--out", str(tmp_path / "o")]
    result = run(cli, *args)
    assert result.exit_code == 0, result.output
    data = orjson.loads((tmp_path / "o" / "results.json").read_bytes())
    assert data["baseline"]["summary"]["served_by"] == {"primary": 4}
    assert data["drill"]["summary"]["served_by"] == {"backup": 4}
    assert data["plan"]["stream"] is False and data["plan"]["prompts_file"] == str(prompts)
    assert "| served | 4 / 4 (100.0 %) | 4 / 4 (100.0 %) |" in result.stdout
    assert len(wall.attempts_for(PRIMARY)) == 4  # the baseline's, none during the cut
    # not streamed, a silent primary holds each request for its response timeout
    assert data["drill"]["summary"]["latency_seconds"]["p50"] >= 0.3


def test_an_unknown_cut_target_is_exit_2_naming_the_targets(cli: typer.Typer, wall: FaultWall, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run(cli, "-c", str(config_file(tmp_path, wall)), "--cut", "primary,nope", "--out", str(out))
    assert result.exit_code == 2
    assert "error: --cut names unknown target(s) 'nope'; targets: primary, backup" in result.stderr
    assert not out.exists() and wall.attempts == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cut", "primary", "--after", "2"], "--after applies only to --fault stream_cut"),
        (["--cut", "primary", "--alias", "vectors"], "there is no chat alias 'vectors'; chat aliases: chat"),
        (["--cut", ","], "--cut names no target"),
        (["--cut", "primary", "--prompts", "missing.jsonl"], "missing.jsonl: cannot read"),
        (["--cut", "primary", "--requests", "0"], "Invalid value for '--requests'"),
        (["--cut", "primary", "--fault", "meteor"], "Invalid value for '--fault'"),
    ],
)
def test_bad_usage_is_exit_2(cli: typer.Typer, wall: FaultWall, tmp_path: Path, args: list[str], message: str) -> None:
    result = run(cli, "-c", str(config_file(tmp_path, wall)), *args, "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert message in result.stderr


def test_a_bad_config_is_exit_2(cli: typer.Typer, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("targets: {}\naliases: {chat: {targets: [ghost]}}\n")
    result = run(cli, "-c", str(bad), "--cut", "ghost")
    assert result.exit_code == 2 and "error: " in result.stderr and "ghost" in result.stderr
    auth = tmp_path / "auth.yaml"
    auth.write_text(
        yaml.safe_dump(
            {
                "targets": {"a": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}},
                "aliases": {"chat": {"targets": ["a"]}},
                "auth": {"enabled": True},
                "admin": {"master_key": "mk-0123456789abcdef"},
                "accounting": {"data_dir": str(tmp_path / "data")},
            }
        )
    )
    result = run(cli, "-c", str(auth), "--cut", "a")
    assert result.exit_code == 2 and "--api-key" in result.stderr


def test_lifeline_has_the_drill_command() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "lifeline.cli.main", "drill", "--help"], capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    assert "--cut" in shown.stdout and "--concurrency" in shown.stdout


def test_progress_is_a_bar_on_a_terminal_and_plain_lines_elsewhere(capsys: pytest.CaptureFixture[str]) -> None:
    import io

    from rich.console import Console
    from rich.progress import Progress

    from lifeline.cli.drill import BarProgress, PlainProgress, progress_watcher
    from lifeline.drill import RequestResult

    outcomes = ["answered", "error", "answered", "answered", "incomplete"]
    results = [RequestResult(index=i, started=0.0, latency=0.1, outcome=o) for i, o in enumerate(outcomes)]  # type: ignore[arg-type]
    assert isinstance(progress_watcher(), PlainProgress)  # pytest's stderr is no terminal

    plain = PlainProgress(steps=2)
    plain.begin("drill", 5)
    for result in results:
        plain.update(result)
    plain.end()
    assert capsys.readouterr().err.splitlines() == [
        "drill: 3/5 done, 2 answered, 1 not",
        "drill: 5/5 done, 3 answered, 2 not",
    ]

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100)
    bar = BarProgress(lambda: Progress(console=console))
    for phase in ("baseline", "drill"):
        bar.begin(phase, len(results))
        for result in results:
            bar.update(result)
        bar.end()
    assert "baseline" in screen.getvalue() and "drill" in screen.getvalue()
