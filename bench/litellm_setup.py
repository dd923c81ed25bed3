"""The LiteLLM proxy for the benchmark: its own virtual environment, its config, its command line.

``python bench/litellm_setup.py`` creates ``bench/.venv-litellm`` with ``litellm[proxy]`` pinned to
``LITELLM_VERSION`` (once; later runs reuse it) and prints the installed version.

The pin matters: litellm 1.82.7 and 1.82.8 were malicious uploads (a credential stealer, March 2026); 1.82.6
is the last release before them and the one pinned here. The venv is checked for the stealer's start-up hook
(``litellm_init.pth``) and refused if it has one.

The config mirrors Lifeline's: model ``bench`` is the fault wall with the same fixed latency and token rate;
``backup`` is the same; ``cut1..cutN`` answer 401 (a cut-off) and fall back to ``backup``. Offline, LiteLLM
needs ``LITELLM_MASTER_KEY`` and ``LITELLM_LOCAL_MODEL_COST_MAP=True``. Logging is set to warning (uvicorn's
access log off), as Lifeline runs with ``log_level: warning`` and no access log.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-litellm"
LITELLM_VERSION = "1.82.6"
MASTER_KEY = "sk-bench-master"
FORBIDDEN_FILES = ("litellm_init.pth",)


def python() -> Path:
    return VENV / "bin" / "python"


def installed_version() -> str | None:
    if not python().exists():
        return None
    probe = subprocess.run(
        [str(python()), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


def check_clean() -> None:
    for site in (VENV / "lib").glob("python*/site-packages"):
        for name in FORBIDDEN_FILES:
            if (site / name).exists():
                raise SystemExit(f"refusing {VENV}: it contains {site / name} (the compromised litellm's hook)")


def ensure(base_python: str = sys.executable, log: Path | None = None) -> str:
    """Create the venv and install the pinned litellm[proxy] if needed; returns the installed version."""
    version = installed_version()
    if version != LITELLM_VERSION:
        if not python().exists():
            subprocess.run([base_python, "-m", "venv", str(VENV)], check=True)
        print(f"installing litellm[proxy]=={LITELLM_VERSION} into {VENV} (a few minutes, once)", file=sys.stderr)
        with (log or Path("/dev/null")).open("ab") as out:
            subprocess.run(
                [str(python()), "-m", "pip", "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"],
                check=True,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        version = installed_version()
    check_clean()
    if version != LITELLM_VERSION:
        raise SystemExit(f"litellm {LITELLM_VERSION} expected in {VENV}, found {version}")
    return version


def write_config(path: Path, wall_base_url: str, ok_spec: str, cut_spec: str, cuts: int) -> None:
    """LiteLLM's proxy config (JSON is valid YAML)."""

    def deployment(name: str, spec: str) -> dict[str, object]:
        return {
            "model_name": name,
            "litellm_params": {"model": f"openai/{spec}", "api_base": wall_base_url, "api_key": "sk-wall"},
        }

    models = [deployment("bench", ok_spec), deployment("backup", ok_spec)]
    models += [deployment(f"cut{i}", cut_spec) for i in range(1, cuts + 1)]
    config = {
        "model_list": models,
        "router_settings": {"fallbacks": [{f"cut{i}": ["backup"]} for i in range(1, cuts + 1)]},
        "litellm_settings": {"set_verbose": False},
    }
    path.write_text(json.dumps(config, indent=1))


def write_log_config(path: Path) -> None:
    """uvicorn/LiteLLM logging at warning, no access log."""
    handler = {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {"stderr": handler},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
            "uvicorn.error": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
            "uvicorn.access": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
        },
    }
    path.write_text(json.dumps(config, indent=1))


def command(config: Path, log_config: Path, port: int) -> tuple[list[str], dict[str, str]]:
    cmd = [
        str(VENV / "bin" / "litellm"),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
        "--telemetry",
        "False",
        "--log_config",
        str(log_config),
    ]
    env = {
        "LITELLM_MASTER_KEY": MASTER_KEY,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "WARNING",
    }
    return cmd, env


if __name__ == "__main__":
    print(ensure())
