"""`lifeline keys create|update --alias`: an alias the config file does not define is refused (#15.21)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from lifeline.cli.keys import keys_app

runner = CliRunner()


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("LIFELINE_CONFIG", raising=False)
    monkeypatch.setenv("LIFELINE_DATA_DIR", str(tmp_path / "default-data"))
    path = tmp_path / "lifeline.yaml"
    path.write_text(
        f"accounting: {{data_dir: {tmp_path / 'data'}}}\n"
        "targets:\n  local: {kind: llamacpp}\n"
        "aliases:\n  chat: {targets: [local]}\n  cheap: {targets: [local]}\n",
        encoding="utf-8",
    )
    return path


def keys(*args: str) -> tuple[int, str]:
    result = runner.invoke(keys_app, list(args))
    return result.exit_code, result.output


def test_creating_a_key_for_an_alias_the_config_lacks_is_refused(config: Path) -> None:
    code, out = keys("create", "--name", "team", "--alias", "chat", "--alias", "chta", "-c", str(config))
    assert code == 2
    assert out.strip() == f"error: --alias chta: {config} defines no such alias; did you mean chat, cheap?"
    code, out = keys("create", "--name", "team", "--alias", "nosuch", "-c", str(config))
    assert code == 2 and "no such alias (known: chat, cheap)" in out
    code, out = keys("list", "-c", str(config))
    assert (code, out) == (0, "")  # nothing was created


def test_known_aliases_and_no_aliases_are_accepted(config: Path) -> None:
    code, out = keys("create", "--name", "team", "--alias", "chat", "--alias", "cheap", "-c", str(config))
    assert code == 0, out
    code, out = keys("create", "--name", "everyone", "-c", str(config))
    assert code == 0, out
    code, out = keys("list", "-c", str(config))
    assert "aliases=chat,cheap" in out and "aliases=*" in out


def test_updating_a_key_to_an_alias_the_config_lacks_is_refused(config: Path) -> None:
    code, out = keys("create", "--name", "team", "--alias", "chat", "-c", str(config))
    key_id = out.split()[2]
    code, out = keys("update", key_id, "--alias", "nosuch", "-c", str(config))
    assert code == 2 and "--alias nosuch" in out
    code, out = keys("list", "-c", str(config))
    assert "aliases=chat " in out


def test_without_a_config_file_aliases_are_not_checked(config: Path) -> None:
    code, out = keys("create", "--name", "elsewhere", "--alias", "served-elsewhere")
    assert code == 0, out


def test_a_database_that_is_down_is_one_line_and_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing listens on the port: one line naming where (never the password), no traceback."""
    monkeypatch.delenv("LIFELINE_CONFIG", raising=False)
    path = tmp_path / "lifeline.yaml"
    path.write_text(
        "accounting: {database_url: 'postgresql://lifeline:s3cret-pw@127.0.0.1:9/lifeline'}\n"
        "targets:\n  local: {kind: llamacpp}\naliases:\n  chat: {targets: [local]}\n",
        encoding="utf-8",
    )
    for args in (["create", "--name", "x"], ["list"]):
        code, output = keys(*args, "-c", str(path))
        assert code == 2, output
        assert output.startswith("error: cannot open the database, PostgreSQL at 127.0.0.1:9/lifeline: "), output
        assert "Traceback" not in output and "s3cret-pw" not in output
