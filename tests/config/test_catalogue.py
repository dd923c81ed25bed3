"""The model catalogue: the shipped file, filters, and `open_model` aliases expanded over configured hosts."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from lifeline.config import ConfigError, parse_config
from lifeline.config.catalogue import CATALOGUE, expand, filter, find, load_catalogue
from lifeline.config.presets import PRESETS
from lifeline.config.schema import LlamaCppTarget, OpenAITarget

REQUIRED = {
    "deepseek-v3", "deepseek-r1", "qwen2.5-72b-instruct", "qwen3-235b-a22b", "qwen3-32b", "glm-4.5", "kimi-k2",
    "llama-3.3-70b-instruct", "llama-3.1-8b-instruct", "mistral-small", "gpt-oss-120b", "gpt-oss-20b",
    "smollm2-135m-instruct", "gpt-4o-mini", "claude-sonnet-4", "gemini-2.5-flash",
}  # fmt: skip

DS = {"DEEPSEEK_API_KEY": "sk-deepseek"}


def config(hosts: dict[str, Any], alias: dict[str, Any], targets: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "hosts": hosts,
        "targets": {"embedded": {"kind": "llamacpp"}, **(targets or {})},
        "aliases": {"chat": alias},
    }


# ---- the shipped file --------------------------------------------------------------------------------


def test_every_required_model_is_catalogued() -> None:
    assert set(CATALOGUE) >= REQUIRED


def test_every_row_says_where_and_when_and_names_a_preset() -> None:
    for model in CATALOGUE.values():
        assert model.source.strip() and model.date.year >= 2025, model.id
        assert model.hosts, model.id
        for row in model.hosts:
            assert row.preset in PRESETS, (model.id, row.preset)
            assert row.source.strip() and row.date.year >= 2025, (model.id, row.preset)


def test_self_hosted_rows_cost_nothing() -> None:
    for model in CATALOGUE.values():
        for row in model.hosts:
            if PRESETS[row.preset].self_hosted:
                assert (row.price_in, row.price_out) == (0, 0), (model.id, row.preset)


def test_the_embedded_builtin_is_smollm2() -> None:
    model = find("smollm2-135m-instruct")
    assert model is not None and model.embedded == "builtin:smollm2"
    assert model.licence == "apache-2.0" and model.context == 8192


def test_find() -> None:
    model = find("deepseek-r1")
    assert model is not None and model.licence == "mit" and model.country == "CN"
    assert find("nope") is None


def test_loader_rejects_duplicates_unknown_presets_and_missing_provenance() -> None:
    row = "{preset: vllm, model: m, verified: true, source: s, date: 2026-11-23}"
    head = (
        "  - {id: m, name: M, open_weights: true, licence: mit, publisher: P, country: FR, context: 10, verified: true"
    )
    good = f"{head}, source: s, date: 2026-11-23, hosts: [{row}]}}"
    assert list(load_catalogue(f"models:\n{good}\n")) == ["m"]
    with pytest.raises(ValueError, match="listed twice"):
        load_catalogue(f"models:\n{good}\n{good}\n")
    with pytest.raises(ValueError, match="unknown preset 'nowhere'"):
        load_catalogue(f"models:\n{good.replace('vllm', 'nowhere')}\n")
    with pytest.raises(ValueError, match="host 'vllm' twice"):
        load_catalogue(f"models:\n{head}, source: s, date: 2026-11-23, hosts: [{row}, {row}]}}\n")
    with pytest.raises(ValidationError, match="source"):
        load_catalogue(f"models:\n{head}, date: 2026-11-23}}\n")
    with pytest.raises(ValidationError, match="country"):
        load_catalogue(f"models:\n{good.replace('FR', 'France')}\n")


# ---- filters -----------------------------------------------------------------------------------------


def ids(models: list[Any]) -> list[str]:
    return [m.id for m in models]


def test_filter_open_weights_and_closed() -> None:
    closed = ids(filter(open_weights=False))
    assert set(closed) == {"gpt-4o-mini", "claude-sonnet-4", "gemini-2.5-flash"}
    assert not set(closed) & set(ids(filter(open_weights=True)))


def test_filter_licence_country_publisher_ignore_case() -> None:
    assert set(ids(filter(licence="APACHE-2.0", country="us"))) == {
        "gpt-oss-120b",
        "gpt-oss-20b",
        "smollm2-135m-instruct",
        "smollm2-1.7b-instruct",
    }
    assert set(ids(filter(publisher="deepseek"))) == {"deepseek-v3", "deepseek-r1", "deepseek-v4-flash"}


def test_filter_min_context_and_host() -> None:
    assert ids(filter(min_context=1_000_000)) == ["deepseek-v4-flash", "gemini-2.5-flash"]
    assert ids(filter(host="deepseek")) == ["deepseek-v4-flash"]
    assert "smollm2-135m-instruct" in ids(filter(host="llamacpp-server", min_context=8192))


def test_filter_supports_every_named_capability() -> None:
    found = filter(supports={"tools", "vision", "prefill"})
    assert found
    for model in found:
        assert all(model.supports(c) for c in ("tools", "vision", "prefill"))
    assert "smollm2-135m-instruct" not in ids(filter(supports={"tools"}))
    # with a host, that host must have the capability itself
    assert ids(filter(host="openai", supports={"prefill"})) == []


def test_filter_rejects_unknown_capability() -> None:
    with pytest.raises(ValueError, match="unknown capability telepathy"):
        filter(supports={"telepathy"})


# ---- open_model aliases ------------------------------------------------------------------------------


def test_open_model_expands_over_configured_hosts_in_config_order() -> None:
    data = config(
        {"gpu": {"preset": "vllm", "base_url": "http://10.0.0.5:8000/v1"}, "deepseek": {}},
        {"open_model": "deepseek-v4-flash", "targets": ["embedded"]},
    )
    cfg = parse_config(data, env=DS)
    assert cfg.aliases["chat"].targets == ["deepseek-v4-flash@gpu", "deepseek-v4-flash@deepseek", "embedded"]
    assert cfg.aliases["chat"].open_model == "deepseek-v4-flash"
    assert isinstance(cfg.targets["embedded"], LlamaCppTarget)


def test_generated_target_carries_model_facts_price_and_capabilities() -> None:
    cfg = parse_config(config({"deepseek": {}}, {"open_model": "deepseek-v4-flash"}), env=DS)
    target = cfg.targets["deepseek-v4-flash@deepseek"]
    row = CATALOGUE["deepseek-v4-flash"].host("deepseek")
    assert isinstance(target, OpenAITarget) and row is not None
    assert target.base_url == "https://api.deepseek.com"
    assert target.model == row.model == "deepseek-flash"
    assert target.api_key is not None and target.api_key.get_secret_value() == "sk-deepseek"
    assert target.context_window == 1_048_576
    assert target.capabilities.tools is True and target.capabilities.json_schema is True
    assert target.capabilities.prefill is True
    assert target.meta.open_weights is True and target.meta.licence == "mit"
    assert (target.meta.publisher, target.meta.country, target.meta.self_hosted) == ("DeepSeek", "CN", False)
    assert target.price is not None and (target.price.input, target.price.output) == (row.price_in, row.price_out)


def test_host_fields_override_the_preset() -> None:
    hosts = {
        "gpu": {
            "preset": "vllm",
            "base_url": "http://10.0.0.5:8000/v1",
            "api_key": "vllm-token",
            "headers": {"x-team": "a"},
            "timeouts": {"connect": 2},
            "max_connections": 7,
        }
    }
    target = parse_config(config(hosts, {"open_model": "gpt-oss-20b"}), env={}).targets["gpt-oss-20b@gpu"]
    assert isinstance(target, OpenAITarget)
    assert target.base_url == "http://10.0.0.5:8000/v1"
    assert target.api_key is not None and target.api_key.get_secret_value() == "vllm-token"
    assert target.headers == {"x-team": "a"} and target.timeouts.connect == 2 and target.max_connections == 7
    assert target.meta.self_hosted is True and target.model == "openai/gpt-oss-20b"
    assert target.price is not None and target.price.input == 0
    # unknown capabilities stay unset, so the kind's defaults apply
    assert target.capabilities.tools is None


def test_unknown_capabilities_and_prices_are_left_unset() -> None:
    target = parse_config(config({"together": {}}, {"open_model": "deepseek-r1"}), env={"TOGETHER_API_KEY": "t"})
    generated = target.targets["deepseek-r1@together"]
    assert generated.price is None and generated.capabilities.tools is None


def test_two_aliases_share_one_generated_target_and_own_duplicates_collapse() -> None:
    data = {
        "hosts": {"deepseek": {}},
        "targets": {},
        "aliases": {
            "a": {"open_model": "deepseek-v4-flash"},
            "b": {"open_model": "deepseek-v4-flash", "targets": ["deepseek-v4-flash@deepseek"]},
        },
    }
    cfg = parse_config(data, env=DS)
    assert list(cfg.targets) == ["deepseek-v4-flash@deepseek"]
    assert cfg.aliases["b"].targets == ["deepseek-v4-flash@deepseek"]


def test_host_key_missing_names_the_host_and_variable() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(config({"deepseek": {}}, {"open_model": "deepseek-v4-flash"}), env={})
    assert str(info.value) == "hosts.deepseek.api_key: environment variable DEEPSEEK_API_KEY is not set"


def test_unknown_model_names_the_alias_and_suggests() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(config({"deepseek": {}}, {"open_model": "deepseek-v5"}), env=DS)
    message = str(info.value)
    assert message.startswith("aliases.chat.open_model: unknown catalogue model;")
    assert "deepseek-v5" not in message  # a config error quotes no value
    assert "did you mean" in message and "deepseek-v3" in message


def test_no_configured_host_says_which_hosts_serve_it() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(config({"deepseek": {}}, {"open_model": "kimi-k2"}), env=DS)
    message = str(info.value)
    assert message.startswith("aliases.chat.open_model: no configured host serves kimi-k2 (configured hosts: deepseek)")
    assert "vllm" in message and "openrouter" in message


def test_no_hosts_at_all() -> None:
    data = {"targets": {}, "aliases": {"chat": {"open_model": "gpt-oss-20b"}}}
    with pytest.raises(ConfigError, match="configured hosts: none"):
        parse_config(data, env={})


def test_generated_name_clashing_with_a_user_target_is_an_error() -> None:
    clash = {"deepseek-v4-flash@deepseek": {"kind": "llamacpp"}}
    with pytest.raises(
        ConfigError, match=r"aliases.chat.open_model: the generated target 'deepseek-v4-flash@deepseek' "
    ):
        parse_config(config({"deepseek": {}}, {"open_model": "deepseek-v4-flash"}, clash), env=DS)


def test_host_with_unknown_preset_is_an_error_at_its_path() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(config({"gpu": {"preset": "vlm"}}, {"targets": ["embedded"]}), env={})
    assert str(info.value).startswith("hosts.gpu.preset: unknown preset; did you mean vllm")
    with pytest.raises(ConfigError, match=r"hosts.my-box.preset: unknown preset.*taken to be the preset of its name"):
        parse_config(config({"my-box": None}, {"targets": ["embedded"]}), env={})


def test_retired_model_is_refused() -> None:
    with pytest.raises(ConfigError, match="claude-sonnet-4 is retired"):
        parse_config(config({"anthropic": {}}, {"open_model": "claude-sonnet-4"}), env={"ANTHROPIC_API_KEY": "k"})


def test_expand_without_hosts_or_open_models_returns_the_data_unchanged() -> None:
    data: dict[str, Any] = {"targets": {"a": {"kind": "llamacpp"}}, "aliases": {"x": {"targets": ["a"]}}}
    assert expand(data, {}) is data


def test_end_to_end_yaml_shaped_config() -> None:
    data = {
        "hosts": {
            "deepseek": None,
            "home": {"preset": "ollama", "base_url": "http://gpu-box:11434/v1"},
        },
        "targets": {
            "openai": {"preset": "openai", "model": "gpt-4o-mini"},
            "local": {"kind": "llamacpp", "model": "builtin:smollm2"},
        },
        "aliases": {
            "chat": {"open_model": "deepseek-r1", "targets": ["local"]},
            "fast": {"targets": ["openai", "local"]},
        },
    }
    env = {"OPENAI_API_KEY": "sk-openai", "DEEPSEEK_API_KEY": "sk-ds"}
    cfg = parse_config(data, env=env)
    assert cfg.aliases["chat"].targets == ["deepseek-r1@home", "local"]
    assert cfg.aliases["fast"].targets == ["openai", "local"]
    home = cfg.targets["deepseek-r1@home"]
    assert isinstance(home, OpenAITarget)
    assert home.base_url == "http://gpu-box:11434/v1" and home.model == "deepseek-r1:671b" and home.api_key is None
    assert set(cfg.hosts) == {"deepseek", "home"}
