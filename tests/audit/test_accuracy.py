"""The classifier's published accuracy: held-out accuracy above a floor (guards regression), docs/audit.md
carries exactly what the script generates now, and `lifeline audit --self-test` prints the same matrix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer
from typer.testing import CliRunner

from lifeline.audit.accuracy import BEGIN, END, main, render, replace_section, section
from lifeline.audit.classifier import AnswerClass, self_test
from lifeline.cli.audit import register

ROOT = Path(__file__).resolve().parents[2]
#: a few points below the measured held-out accuracy (see docs/audit.md); a regression fails here
FLOOR = 0.93


def test_held_out_accuracy_stays_above_the_floor() -> None:
    result = self_test("heldout")
    assert result.total >= 150
    assert result.accuracy >= FLOOR, render(result)
    for cls in AnswerClass:
        assert (result.recall(cls) or 0.0) >= 0.8, render(result)


def test_without_expected_facts_it_is_weaker_but_still_useful() -> None:
    bare, full = self_test("heldout", with_facts=False), self_test("heldout")
    assert bare.total == full.total
    assert 0.75 <= bare.accuracy <= full.accuracy, render(bare)
    assert (bare.recall(AnswerClass.refused) or 0.0) >= 0.9  # refusals need no facts


def test_the_counts_add_up() -> None:
    dev, heldout = self_test("dev"), self_test("heldout")
    for result in (dev, heldout):
        assert sum(sum(row.values()) for row in result.confusion.values()) == result.total
        assert sum(seen for _, seen in result.by_language.values()) == result.total
    assert dev.total + heldout.total >= 300


def test_the_docs_carry_what_the_script_generates_now() -> None:
    document = (ROOT / "docs" / "audit.md").read_text(encoding="utf-8")
    assert document.startswith("# The speech audit")
    assert "## The classifier" in document and "## Classifier accuracy (held-out)" in document
    assert replace_section(document, section()) == document, "run: python -m lifeline.audit.accuracy --write-docs"


def test_the_docs_example_prints_what_the_classifier_says() -> None:
    document = (ROOT / "docs" / "audit.md").read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0] for b in document.split("```python\n")[1:]]
    block = next(b for b in blocks if "verdict.explain()" in b)
    code, _, shown = block.partition("verdict.explain()\n# ")
    namespace: dict[str, object] = {}
    exec(code.split("verdict.label", 1)[0], namespace)  # the import and the classify call
    assert namespace["verdict"].explain() == shown.strip()  # type: ignore[attr-defined]


def test_the_script_rewrites_only_its_section(tmp_path: Path) -> None:
    docs = tmp_path / "audit.md"
    docs.write_text(f"# Title\n\nbefore\n\n{BEGIN}\nstale figures\n{END}\n\nafter\n", encoding="utf-8")
    assert main(["--check", "--docs", str(docs)]) == 1
    assert main(["--write-docs", "--docs", str(docs)]) == 0
    text = docs.read_text(encoding="utf-8")
    assert "stale figures" not in text and text.startswith("# Title\n\nbefore\n") and text.endswith("after\n")
    assert "| **steered** |" in text
    assert main(["--check", "--docs", str(docs)]) == 0
    docs.write_text("# no markers\n", encoding="utf-8")
    assert main(["--write-docs", "--docs", str(docs)]) == 2


def test_the_module_runs_as_a_script() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lifeline.audit.accuracy", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.command()
    def other() -> None:  # a second command, so that `audit` is a group as under `lifeline`
        pass

    register(app)
    return app


def test_audit_self_test_prints_the_held_out_matrix() -> None:
    result = CliRunner().invoke(_app(), ["audit", "--self-test"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == render(self_test("heldout"))
    dev = CliRunner().invoke(_app(), ["audit", "--self-test", "--split", "dev"])
    assert dev.exit_code == 0 and dev.output.startswith("Split `dev`:")


def test_audit_without_an_option_is_a_one_line_error() -> None:
    result = CliRunner().invoke(_app(), ["audit"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: nothing to do: pass --candidates to audit (or --self-test to measure the offline classifier)"
    ]
