"""Host presets: the shipped file, and targets that name a preset instead of spelling the host out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from lifeline.config import ConfigError, parse_config
from lifeline.config.presets import PRESETS, expand_target_presets, get_preset, load_presets
from lifeline.config.schema import AnthropicTarget, OpenAITarget

DOCS = Path(__file__).resolve().parents[2] / "docs" / "presets.md"

REQUIRED = {
    "openai", "deepseek", "dashscope", "dashscope-cn", "zhipu", "zai", "moonshot", "moonshot-cn", "siliconflow",
    "siliconflow-cn", "qianfan", "hunyuan", "minimax", "minimax-cn", "mistral", "groq", "together", "fireworks",
    "deepinfra", "openrouter", "anthropic", "gemini", "ollama", "vllm", "sglang", "llamacpp-server", "lmstudio",
}  # fmt: skip


def config(**target: Any) -> dict[str, Any]:
    return {"targets": {"main": target}, "aliases": {"chat": {"targets": ["main"]}}}


# ---- the shipped file --------------------------------------------------------------------------------


def test_every_required_preset_is_shipped() -> None:
    assert set(PRESETS) >= REQUIRED


def test_every_preset_says_where_and_when() -> None:
    for preset in PRESETS.values():
        assert preset.source.strip(), preset.name
        assert preset.date.year >= 2025, preset.name


LOCAL_PORTS = {"ollama": 11434, "vllm": 8000, "sglang": 30000, "llamacpp-server": 8080, "lmstudio": 1234}


def test_local_engines_are_self_hosted_on_loopback_without_a_key() -> None:
    for name, port in LOCAL_PORTS.items():
        preset = PRESETS[name]
        assert preset.self_hosted and preset.api_key_env is None
        assert preset.base_url == f"http://127.0.0.1:{port}/v1"
    assert {p.name for p in PRESETS.values() if p.self_hosted} == set(LOCAL_PORTS)


def test_hosted_presets_name_a_key_variable_and_use_https() -> None:
    for preset in PRESETS.values():
        if not preset.self_hosted:
            assert preset.api_key_env and preset.api_key_env.isupper(), preset.name
            assert preset.base_url.startswith("https://"), preset.name


def test_kinds() -> None:
    assert PRESETS["anthropic"].kind == "anthropic"
    assert PRESETS["gemini"].kind == "gemini"
    assert {p.kind for n, p in PRESETS.items() if n not in {"anthropic", "gemini"}} == {"openai"}


def test_docs_list_every_preset() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for preset in PRESETS.values():
        assert f"`{preset.name}`" in text, preset.name
        assert preset.base_url in text, preset.name


def test_get_preset_suggests_close_names() -> None:
    assert get_preset("groq").base_url == "https://api.groq.com/openai/v1"
    with pytest.raises(KeyError, match="did you mean deepseek"):
        get_preset("deepsek")


def test_loader_rejects_duplicates_unknown_fields_and_rows_without_source() -> None:
    row = "  - {name: a, kind: openai, base_url: 'https://a', api_key_env: A, self_hosted: false, verified: true"
    good = f"{row}, source: s, date: 2026-11-23}}"
    assert list(load_presets(f"presets:\n{good}\n")) == ["a"]
    with pytest.raises(ValueError, match="listed twice"):
        load_presets(f"presets:\n{good}\n{good}\n")
    with pytest.raises(ValidationError, match="source"):
        load_presets(f"presets:\n{row}, date: 2026-11-23}}\n")
    with pytest.raises(ValidationError, match="date"):
        load_presets(f"presets:\n{row}, source: s}}\n")
    with pytest.raises(ValidationError, match="extra"):
        load_presets(f"presets:\n{row}, source: s, date: 2026-11-23, colour: red}}\n")
    with pytest.raises(ValidationError, match="kind"):
        load_presets(f"presets:\n{good.replace('openai', 'cohere')}\n")


# ---- targets that name a preset ----------------------------------------------------------------------


def test_preset_fills_kind_base_url_key_and_self_hosted() -> None:
    cfg = parse_config(config(preset="deepseek", model="deepseek-flash"), env={"DEEPSEEK_API_KEY": "sk-ds"})
    target = cfg.targets["main"]
    assert isinstance(target, OpenAITarget)
    assert target.base_url == "https://api.deepseek.com"
    assert target.api_key is not None and target.api_key.get_secret_value() == "sk-ds"
    assert target.meta.self_hosted is False


def test_the_targets_own_fields_win() -> None:
    spec = config(
        preset="deepseek",
        model="deepseek-flash",
        base_url="https://api.deepseek.com/beta",
        api_key="sk-own",
        meta={"self_hosted": True, "country": "CN"},
    )
    target = parse_config(spec, env={}).targets["main"]
    assert isinstance(target, OpenAITarget)
    assert target.base_url == "https://api.deepseek.com/beta"
    assert target.api_key is not None and target.api_key.get_secret_value() == "sk-own"
    assert target.meta.self_hosted is True and target.meta.country == "CN"


def test_explicit_null_key_sends_none_and_reads_no_variable() -> None:
    target = parse_config(config(preset="openrouter", model="m", api_key=None), env={}).targets["main"]
    assert isinstance(target, OpenAITarget) and target.api_key is None


def test_meta_is_merged_not_replaced() -> None:
    target = parse_config(config(preset="vllm", model="m", meta={"licence": "mit"}), env={}).targets["main"]
    assert target.meta.licence == "mit" and target.meta.self_hosted is True


def test_local_engine_needs_no_key() -> None:
    target = parse_config(config(preset="ollama", model="gpt-oss:20b"), env={}).targets["main"]
    assert isinstance(target, OpenAITarget)
    assert target.api_key is None and target.base_url == "http://127.0.0.1:11434/v1"


def test_anthropic_preset_makes_an_anthropic_target() -> None:
    target = parse_config(config(preset="anthropic", model="claude-x"), env={"ANTHROPIC_API_KEY": "k"}).targets["main"]
    assert isinstance(target, AnthropicTarget)


def test_missing_variable_names_target_and_variable() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(config(preset="deepseek", model="deepseek-flash"), env={})
    assert str(info.value) == "targets.main.api_key: environment variable DEEPSEEK_API_KEY is not set"


def test_unknown_preset_names_the_path_and_suggests() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(config(preset="deepsek", model="m"), env={})
    message = str(info.value)
    assert message.startswith("targets.main.preset: unknown preset;")
    assert "deepsek" not in message  # a config error quotes no value
    assert "did you mean deepseek" in message


def test_unknown_preset_without_close_match_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"known: openai, deepseek"):
        parse_config(config(preset="zzzzzz", model="m"), env={})


def test_expansion_leaves_other_targets_and_the_input_alone() -> None:
    data = {"targets": {"a": {"preset": "vllm", "model": "m"}, "b": {"kind": "llamacpp"}}}
    out = expand_target_presets(data, env={})
    assert out["targets"]["b"] == {"kind": "llamacpp"}
    assert data["targets"]["a"] == {"preset": "vllm", "model": "m"}
    assert "preset" not in out["targets"]["a"]


def test_a_preset_sets_the_prefill_support_and_dialect_it_knows() -> None:
    def target(**spec: Any) -> OpenAITarget:
        made = parse_config(config(model="m", api_key=None, **spec), env={}).targets["main"]
        assert isinstance(made, OpenAITarget)
        return made

    vllm = target(preset="vllm")
    assert (vllm.capabilities.prefill, vllm.prefill_mode) == (True, "continue_final_message")
    qwen = target(preset="dashscope")
    assert (qwen.capabilities.prefill, qwen.prefill_mode) == (None, "partial")  # unknown: asked in its dialect
    plain = target(preset="openrouter")
    assert (plain.capabilities.prefill, plain.prefill_mode) == (None, None)
    # the target's own capabilities keep the preset's prefill unless they say otherwise
    assert target(preset="vllm", capabilities={"tools": False}).capabilities.prefill is True
    assert target(preset="vllm", capabilities={"prefill": False}).capabilities.prefill is False
    assert target(preset="vllm", prefill_mode="prefix").prefill_mode == "prefix"
