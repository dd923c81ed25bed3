"""What the tests of the job commands (drill, eval, audit) share: an app holding one command group as
`lifeline` registers it, a config file written from a dict, and an invocation that never shows a traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner, Result


def command_app(register: Callable[[typer.Typer], None], monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    """A `lifeline`-like app with the commands `register` adds, and no config or key from the environment."""
    monkeypatch.delenv("LIFELINE_CONFIG", raising=False)
    monkeypatch.delenv("LIFELINE_API_KEY", raising=False)
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """lifeline"""

    register(app)
    return app


def write_config(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "lifeline.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def invoke(app: typer.Typer, *words: str) -> Result:
    result = CliRunner().invoke(app, list(words))
    assert "Traceback" not in result.output, result.output
    return result
