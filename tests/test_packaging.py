"""The distribution's name and every install line in the docs: nothing installs somebody else's project.

`lifeline` on the package index is an unrelated project, so the distribution is `lifeline-gateway` (the
import package and the command stay `lifeline`).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTION = "lifeline-gateway"

#: `pip install …` up to the end of the inline code span, the line or the shell command
_INSTALL = re.compile(r"pip install ([^`\n&|;)]+)")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "bench").glob("*.md"))]


def test_the_distribution_is_not_named_like_the_unrelated_lifeline_on_the_index() -> None:
    project = _pyproject()["project"]
    assert _normalise(project["name"]) == DISTRIBUTION
    assert project["scripts"]["lifeline"] == "lifeline.cli.main:main"


def test_extras_refer_to_the_distribution_by_its_own_name() -> None:
    project = _pyproject()["project"]
    for extra, requirements in project["optional-dependencies"].items():
        for requirement in requirements:
            name = _normalise(re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0])
            assert name != "lifeline", f"extra {extra!r} requires {requirement!r}, the unrelated project"


def test_no_install_line_in_the_docs_names_the_unrelated_lifeline() -> None:
    offending = []
    for path in _documents():
        for line in _INSTALL.findall(path.read_text(encoding="utf-8")):
            for word in line.split():
                word = word.strip("'\"")
                if word.startswith("-") or word.startswith("."):
                    continue
                if _normalise(re.split(r"[\[<>=!~]", word, maxsplit=1)[0]) == "lifeline":
                    offending.append(f"{path.relative_to(ROOT)}: pip install {line}")
    assert offending == []


def test_lifeline_version_prints_the_distributions_version() -> None:
    import tomllib

    from typer.testing import CliRunner

    from lifeline import __version__
    from lifeline.cli.main import _register_subcommands, app

    declared = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]["version"]
    assert __version__ == declared
    _register_subcommands()
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output == f"lifeline {declared}\n"
