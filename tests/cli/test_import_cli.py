"""`lifeline import litellm`: the YAML on stdout or in --output, the report on stderr, a file `lifeline check`
accepts, and input that is not a LiteLLM config refused in one line with status 2."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lifeline.cli.imports import register
from lifeline.cli.main import app as lifeline_app
from tests.cli.support import command_app, invoke

SECRET = "sk-proj-literal-key-00112233445566"

CONFIG = f"""\
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: azure/gpt-4o
      api_base: https://acme.openai.azure.com
      api_key: os.environ/AZURE_API_KEY
      api_version: "2024-10-21"
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: {SECRET}
  - model_name: claude
    litellm_params:
      model: anthropic/claude-sonnet-4-5
  - model_name: local
    litellm_params:
      model: ollama/qwen2.5:7b
      api_base: http://127.0.0.1:11434
  - model_name: titan
    litellm_params:
      model: bedrock/amazon.titan-text-express-v1
router_settings:
  fallbacks: [{{gpt-4o: [claude, local]}}]
  num_retries: 1
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
"""

VARIABLES = ("AZURE_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "LITELLM_MASTER_KEY")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def test_the_written_config_passes_lifeline_check(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "lifeline.yaml"
    result = invoke(command_app(register, monkeypatch), "import", "litellm", str(source), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    report = result.stderr.splitlines()
    assert report == [
        "carried with a difference: model_list[0].litellm_params.model: Azure OpenAI is reached through its v1 API "
        "(api_base + /openai/v1, the deployment name as the model), which takes no api_version",
        "set a variable: model_list[1].litellm_params.api_key: the value written there is not copied; set "
        "OPENAI_API_KEY to it (the new config reads ${OPENAI_API_KEY})",
        "not carried over: model_list[4]: Lifeline does not sign requests with cloud credentials (AWS SigV4, Google "
        "service accounts); reach the model through its publisher's API (e.g. preset anthropic)",
        "carried with a difference: general_settings.master_key: it now guards /admin/*; clients of /v1 need virtual "
        "keys (auth.enabled is on): create them with lifeline keys create",
        f"wrote {out}: 4 target(s), 3 alias(es); 1 setting(s) not carried over",
        "set before serving: AZURE_API_KEY, OPENAI_API_KEY, ANTHROPIC_API_KEY, LITELLM_MASTER_KEY",
        f"check it: lifeline check --config {out}",
    ]
    text = out.read_text(encoding="utf-8")
    assert SECRET not in text + result.output and SECRET[:12] not in text + result.output
    assert yaml.safe_load(text)["aliases"]["gpt-4o"]["targets"] == [
        "gpt-4o-azure", "gpt-4o-openai", "claude", "local"
    ]  # fmt: skip

    runner = CliRunner()
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    missing = runner.invoke(lifeline_app, ["check", "--config", str(out)])
    assert missing.exit_code == 2
    assert sorted(re.findall(r"environment variable (\w+) is not set", missing.output)) == sorted(VARIABLES)
    for name in VARIABLES:
        monkeypatch.setenv(name, f"value-of-{name.lower()}")
    checked = runner.invoke(lifeline_app, ["check", "--config", str(out)])
    assert checked.exit_code == 0, checked.output
    assert checked.output.strip() == "ok: 4 target(s), 3 alias(es)"


def test_without_output_the_yaml_goes_to_stdout_and_the_report_to_stderr(
    source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = invoke(command_app(register, monkeypatch), "import", "litellm", str(source))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("# Converted from the LiteLLM config config.yaml by `lifeline import litellm`.")
    document = yaml.safe_load(result.stdout)
    assert document["targets"]["local"] == {
        "preset": "ollama",
        "model": "qwen2.5:7b",
        "base_url": "http://127.0.0.1:11434/v1",
    }
    assert document["retry"] == {"max_retries": 1}
    assert "not carried over" not in result.stdout
    assert "converted: 4 target(s), 3 alias(es); 1 setting(s) not carried over" in result.stderr


def test_an_existing_output_is_kept_without_force(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "lifeline.yaml"
    out.write_text("mine\n", encoding="utf-8")
    app = command_app(register, monkeypatch)
    refused = invoke(app, "import", "litellm", str(source), "-o", str(out))
    assert refused.exit_code == 2
    assert refused.stderr == f"error: {out} exists; choose another file, or pass --force to overwrite it\n"
    assert out.read_text(encoding="utf-8") == "mine\n"
    assert invoke(app, "import", "litellm", str(source), "-o", str(out), "--force").exit_code == 0
    assert out.read_text(encoding="utf-8").startswith("# Converted")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            f"model_list:\n  - model_name: x\n    litellm_params: {{api_key: {SECRET}, model: [\n",
            "not valid YAML (line 4)",
        ),
        (
            "general_settings:\n  master_key: sk-1234\n",
            "not a LiteLLM proxy config: no model_list (a list of models) in it",
        ),
        ("just a sentence\n", "not a LiteLLM proxy config: the file is not a mapping with a model_list"),
        (None, "cannot read: No such file or directory"),
    ],
)
def test_input_that_is_not_a_litellm_config_is_one_line_and_status_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str | None, problem: str
) -> None:
    path = tmp_path / "config.yaml"
    if text is not None:
        path.write_text(text, encoding="utf-8")
    result = invoke(command_app(register, monkeypatch), "import", "litellm", str(path), "-o", str(tmp_path / "o.yaml"))
    assert result.exit_code == 2
    assert result.stderr == f"error: {path}: {problem}\n"
    assert result.stdout == ""
    assert SECRET[:12] not in result.output
    assert not (tmp_path / "o.yaml").exists()


def test_lifeline_lists_the_import_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from lifeline.cli import main

    main._register_subcommands()
    result = CliRunner().invoke(main.app, ["import", "--help"])
    assert result.exit_code == 0
    assert "litellm" in result.output
