"""`lifeline check`: every problem at once, one a line with its line number; `--no-env` for the structure
alone; no value from the file ever printed."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lifeline.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
INLINE = "sk-inline-secret-0f9e8d7c6b5a"
#: every variable the README's two config examples name
README_VARIABLES = ("OPENAI_API_KEY", "DASHSCOPE_API_KEY", "LIFELINE_MASTER_KEY", "DATABASE_URL", "REDIS_URL")

runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIFELINE_CONFIG", raising=False)
    for name in README_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def readme_config(tmp_path: Path) -> Path:
    """The README's failover chain and its keys-and-budgets block, as one file."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    chain = next(b for b in blocks if b.startswith("server:"))
    accounting = next(b for b in blocks if b.startswith("admin:"))
    path = tmp_path / "lifeline.yaml"
    path.write_text(chain + accounting, encoding="utf-8")
    return path


def check(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["check", *args])
    return result.exit_code, result.output


def test_check_names_every_missing_variable_in_one_run(tmp_path: Path) -> None:
    path = readme_config(tmp_path)
    code, out = check("--config", str(path))
    assert code == 2
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(README_VARIABLES)
    for name, line in zip(README_VARIABLES, errors, strict=True):
        assert re.match(rf"error: {re.escape(str(path))}:\d+: \S+: environment variable {name} is not set$", line)
    assert "lifeline check --no-env" in out


def test_check_no_env_validates_the_readme_example_without_any_key(tmp_path: Path) -> None:
    code, out = check("--config", str(readme_config(tmp_path)), "--no-env")
    assert code == 0, out
    assert "ok: 4 target(s), 2 alias(es) (structure only" in out


def test_check_no_env_still_finds_a_misspelt_key(tmp_path: Path) -> None:
    path = readme_config(tmp_path)
    path.write_text(path.read_text(encoding="utf-8").replace("server:", "srever:"), encoding="utf-8")
    code, out = check("--config", str(path), "--no-env")
    assert code == 2
    assert f"error: {path}:1: srever: unknown key; did you mean server?" in out


def test_check_prints_each_problem_on_its_own_line(tmp_path: Path) -> None:
    path = tmp_path / "lifeline.yaml"
    path.write_text(
        "targets:\n  a: {base_url: http://x/v1, model: m}\n  b: {kind: openai, base_url: http://x/v1, modle: m}\n"
        "aliases:\n  chat: {targets: [a, b]}\n",
        encoding="utf-8",
    )
    code, out = check("--config", str(path))
    assert code == 2
    assert out.splitlines()[:3] == [
        f"error: {path}:2: targets.a: no `kind`: say which it is: openai, anthropic, gemini or llamacpp "
        "(or name a host with `preset:`)",
        f"error: {path}:3: targets.b.openai.model: Field required",
        f"error: {path}:3: targets.b.openai.modle: unknown key; did you mean model?",
    ]


@pytest.mark.parametrize(
    "text",
    [
        f"admin:\n  master_key: {INLINE}: x\naliases: {{}}\n",
        f'admin:\n  master_key: "{INLINE}\naliases: {{}}\n',
        f"targets:\n  a: {{kind: openai, base_url: http://x/v1, model: m, api_key: {INLINE}, bogus: [\n",
        f"targets:\n  a: {{kind: {INLINE}, base_url: http://x/v1, model: m}}\naliases:\n  chat: {{targets: [a]}}\n",
        f"server:\n  port: {INLINE}\naliases:\n  chat: {{targets: [a]}}\n",
    ],
)
def test_check_never_prints_a_secret_from_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "lifeline.yaml"
    path.write_text(text, encoding="utf-8")
    code, out = check("--config", str(path))
    assert code == 2 and out.startswith(f"error: {path}:")
    assert INLINE not in out and INLINE[:8] not in out


def test_check_refuses_tracing_without_the_otel_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """#15.18: `check` said ok and `serve` then died with No module named 'opentelemetry.sdk'."""
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk", None)  # as if the extra were not installed
    path = tmp_path / "lifeline.yaml"
    path.write_text(
        "tracing: {enabled: true}\ntargets:\n  a: {kind: llamacpp}\naliases:\n  chat: {targets: [a]}\n",
        encoding="utf-8",
    )
    code, out = check("--config", str(path))
    assert code == 2 and "ok:" not in out
    assert out.startswith(f"error: {path}:1: tracing.enabled: tracing needs the otel extra")
    assert "pip install 'lifeline-gateway[otel]'" in out


def test_a_shadow_candidate_is_a_used_target(tmp_path: Path) -> None:
    path = tmp_path / "lifeline.yaml"
    path.write_text(
        "targets:\n  local: {kind: llamacpp}\n  candidate: {kind: llamacpp}\n  idle: {kind: llamacpp}\n"
        "aliases:\n  chat: {targets: [local], shadow: {candidates: [candidate], max_usd_per_day: 1}}\n",
        encoding="utf-8",
    )
    code, out = check("--config", str(path))
    assert code == 0, out
    assert "no alias uses target(s) idle;" in out  # the shadow candidate is not named as unused


def test_check_reads_the_lora_adapter_as_serve_does(tmp_path: Path) -> None:
    """A bad `lora_path` is reported by check, in serve's own line; a good one passes; a hub model (not
    fetched by a check) still has its adapter's own header read."""
    from tests.cli.support import invoke, write_config
    from tests.providers.test_llamacpp_lora import write_adapter

    def check_with(target: dict[str, object]) -> tuple[int, list[str]]:
        path = write_config(tmp_path, {"targets": {"local": target}, "aliases": {"chat": {"targets": ["local"]}}})
        result = invoke(app, "check", "--config", str(path))
        return result.exit_code, result.output.splitlines()

    missing = tmp_path / "absent.gguf"
    assert check_with({"kind": "llamacpp", "lora_path": str(missing)}) == (
        2,
        [f"error: target local: lora_path: no LoRA adapter at {missing}"],
    )
    gemma = write_adapter(tmp_path / "gemma.gguf", arch="gemma3")
    code, lines = check_with({"kind": "llamacpp", "lora_path": str(gemma)})
    assert code == 2
    assert re.fullmatch(r"error: target local: lora_path: .* adapts gemma3 models, and .* is llama", lines[0])
    good = write_adapter(tmp_path / "good.gguf")
    assert check_with({"kind": "llamacpp", "lora_path": str(good)}) == (0, ["ok: 1 target(s), 1 alias(es)"])
    notes = tmp_path / "notes.gguf"
    notes.write_text("not a model")
    hub = {"kind": "llamacpp", "model": "hf:owner/repo/model.gguf", "lora_path": str(notes)}
    assert check_with(hub) == (2, [f"error: target local: lora_path: {notes} is not a GGUF file"])
    assert check_with({**hub, "lora_path": str(good)})[0] == 0
