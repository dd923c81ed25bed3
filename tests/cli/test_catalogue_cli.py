"""`lifeline models` as a group: aliases (plain or `list`), `catalogue` with filters, and `presets`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from lifeline.cli.catalogue import register
from lifeline.config.presets import PRESETS

runner = CliRunner()


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    """An app shaped like lifeline's: a plain `models` command that register() must replace."""
    monkeypatch.delenv("LIFELINE_CONFIG", raising=False)
    app = typer.Typer()

    @app.command()
    def models() -> None:
        typer.echo("the old models command")

    @app.command()
    def check() -> None:
        typer.echo("check")

    register(app)
    return app


def run(app: typer.Typer, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def table_models(output: str) -> list[str]:
    return [line.split()[0] for line in output.splitlines()[1:]]


def test_plain_models_still_lists_aliases(app: typer.Typer) -> None:
    code, out = run(app, "models")
    assert code == 0
    assert out.splitlines() == ["default: local", "local: local"]
    assert "old models command" not in out
    assert run(app, "check") == (0, "check\n")


def test_models_list_reads_a_config_with_an_open_model_alias(
    app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "lifeline.yaml"
    path.write_text(
        "hosts:\n  deepseek:\n  gpu: {preset: vllm}\n"
        "targets:\n  local: {kind: llamacpp}\n"
        "aliases:\n  chat: {open_model: deepseek-v4-flash, targets: [local]}\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-test")
    code, out = run(app, "models", "list", "--config", str(path))
    assert code == 0, out
    assert out.strip() == "chat: deepseek-v4-flash@deepseek -> deepseek-v4-flash@gpu -> local"
    assert run(app, "models", "--config", str(path))[1] == out


def test_catalogue_table_has_every_model_and_the_columns(app: typer.Typer) -> None:
    code, out = run(app, "models", "catalogue")
    assert code == 0
    assert out.splitlines()[0].split() == ["model", "publisher", "country", "licence", "params", "context", "hosts"]
    assert "deepseek-r1" in table_models(out) and "gpt-4o-mini" in table_models(out)
    assert "claude-sonnet-4 (retired)" in out
    smollm = next(line for line in out.splitlines() if line.startswith("smollm2-135m-instruct"))
    assert "embedded" in smollm and "8,192" in smollm


def test_catalogue_filters(app: typer.Typer) -> None:
    _, closed = run(app, "models", "catalogue", "--closed")
    assert set(table_models(closed)) == {"gpt-4o-mini", "claude-sonnet-4", "gemini-2.5-flash"}
    _, out = run(app, "models", "catalogue", "--open-weights", "--licence", "apache-2.0", "--country", "US")
    assert set(table_models(out)) == {"gpt-oss-120b", "gpt-oss-20b", "smollm2-135m-instruct", "smollm2-1.7b-instruct"}
    _, out = run(app, "models", "catalogue", "--min-context", "1000000", "--open-weights")
    assert table_models(out) == ["deepseek-v4-flash"]
    _, out = run(app, "models", "catalogue", "--publisher", "meta", "--supports", "tools,prefill")
    assert table_models(out) == ["llama-3.3-70b-instruct", "llama-3.1-8b-instruct"]
    _, out = run(app, "models", "catalogue", "--host", "dashscope", "--supports", "prefill")
    assert set(table_models(out)) == {"qwen2.5-72b-instruct", "qwen3-235b-a22b", "qwen3-32b"}


def test_catalogue_json(app: typer.Typer) -> None:
    code, out = run(app, "models", "catalogue", "--host", "deepseek", "--json")
    assert code == 0
    models = json.loads(out)
    assert [m["id"] for m in models] == ["deepseek-v4-flash"]
    row = next(h for h in models[0]["hosts"] if h["preset"] == "deepseek")
    assert row["model"] == "deepseek-flash" and row["source"] and row["date"] == "2026-11-23"


def test_catalogue_no_match_is_not_an_error(app: typer.Typer) -> None:
    result = runner.invoke(app, ["models", "catalogue", "--country", "ZZ"])
    assert result.exit_code == 0
    assert "no catalogue model matches" in result.output


def test_catalogue_bad_arguments(app: typer.Typer) -> None:
    code, out = run(app, "models", "catalogue", "--supports", "tools,telepathy")
    assert code == 2 and "unknown capability telepathy" in out
    code, out = run(app, "models", "catalogue", "--host", "deepsek")
    assert code == 2 and "did you mean deepseek" in out


def test_presets_table_and_json(app: typer.Typer) -> None:
    code, out = run(app, "models", "presets")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["preset", "kind", "base_url", "key", "variable"]
    assert [line.split()[0] for line in lines[1:]] == list(PRESETS)
    assert any(line.split() == ["ollama", "openai", "http://127.0.0.1:11434/v1", "-"] for line in lines)
    code, out = run(app, "models", "presets", "--json")
    rows = json.loads(out)
    assert {r["name"]: r["api_key_env"] for r in rows}["deepseek"] == "DEEPSEEK_API_KEY"
