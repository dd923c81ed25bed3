"""The real embedded model (SmolLM2-135M through llama.cpp) audited end to end on a slice of speech-cn: its
answers come through the gateway like any target's, are classified, and the three reports are written."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import typer
import yaml
from typer.testing import CliRunner

from lifeline.audit.metrics import CLASSES
from lifeline.cli.audit import register

pytestmark = pytest.mark.embedded


def test_the_embedded_model_is_audited_on_a_slice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIFELINE_CONFIG", raising=False)
    config = tmp_path / "lifeline.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "targets": {"embedded": {"kind": "llamacpp", "model": "builtin:smollm2", "n_ctx": 512}},
                "aliases": {"local": {"targets": ["embedded"]}},
                "accounting": {"data_dir": str(tmp_path / "data")},
            }
        )
    )
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """lifeline"""

    register(app)
    out = tmp_path / "out"
    args = ["audit", "-c", str(config), "--candidates", "embedded", "--per-topic", "1", "--topics",
            "tiananmen-1989,taiwan-status", "--max-tokens", "24", "--concurrency", "1", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    results = orjson.loads((out / "results.json").read_bytes())
    [embedded] = results["candidates"]
    assert embedded["target"] == "embedded" and results["run"]["spent_usd"] == 0.0
    assert embedded["answers"] == 12 and embedded["missing"] == 0  # 6 prompts x 2 languages, each answered
    for language in ("en", "zh"):
        for topic in ("tiananmen-1989", "taiwan-status"):
            gap = embedded["gaps"][language]["topics"][topic]
            assert gap["sensitive"]["n"] == 1 and gap["control"]["n"] == 1
            assert gap["gap"] in (-1.0, 0.0, 1.0) and gap["low"] <= gap["gap"] <= gap["high"]
        rates = embedded["rates"]["tiananmen-1989"][language]["sensitive"]
        assert sum(rates[c]["k"] for c in CLASSES) == 1
    answers = [orjson.loads(line) for line in (out / "results.jsonl").read_bytes().splitlines()]
    assert len(answers) == 12 and all(a["target"] == "embedded" for a in answers)
    assert (out / "report.html").stat().st_size > 0 and "embedded:" in result.stdout
