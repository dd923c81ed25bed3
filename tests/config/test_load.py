"""Loading the config: interpolation, validation errors that name the path, and secrets kept secret."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from lifeline.config import ConfigError, default_config, load_config, parse_config
from lifeline.config.load import interpolate
from lifeline.config.schema import LlamaCppTarget, OpenAITarget

SECRET = "sk-very-secret-value-123456"


def minimal(**target: Any) -> dict[str, Any]:
    spec = {"kind": "openai", "base_url": "https://api.example.com/v1", "model": "m1", **target}
    return {"targets": {"main": spec}, "aliases": {"chat": {"targets": ["main"]}}}


def test_interpolation_of_set_variable() -> None:
    config = parse_config(minimal(api_key="${KEY}", base_url="${URL}/v1"), env={"KEY": SECRET, "URL": "http://h:1"})
    target = config.targets["main"]
    assert isinstance(target, OpenAITarget)
    assert target.api_key is not None
    assert target.api_key.get_secret_value() == SECRET
    assert target.base_url == "http://h:1/v1"


def test_interpolation_default_used_only_when_unset() -> None:
    data = minimal(model="${MODEL:-fallback-model}")
    assert parse_config(data, env={}).targets["main"].model == "fallback-model"
    assert parse_config(data, env={"MODEL": "real"}).targets["main"].model == "real"


def test_interpolation_empty_default() -> None:
    assert interpolate("a${X:-}b", {}) == "ab"


def test_interpolation_leaves_other_types_and_text_alone() -> None:
    assert interpolate({"n": 3, "b": True, "s": "$HOME {X}", "l": ["${A}"]}, {"A": "1"}) == {
        "n": 3,
        "b": True,
        "s": "$HOME {X}",
        "l": ["1"],
    }


def test_interpolation_does_not_read_os_environ_when_env_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFELINE_TEST_ONLY_IN_OS", "x")
    with pytest.raises(ConfigError, match="LIFELINE_TEST_ONLY_IN_OS"):
        parse_config(minimal(model="${LIFELINE_TEST_ONLY_IN_OS}"), env={})


def test_missing_variable_names_path_and_variable() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(minimal(api_key="${OPENAI_KEY}"), env={})
    message = str(info.value)
    assert "targets.main.api_key" in message
    assert "OPENAI_KEY" in message


def test_missing_variable_in_list_names_index() -> None:
    data = minimal()
    data["aliases"]["chat"]["targets"] = ["${WHICH}"]
    with pytest.raises(ConfigError, match=r"aliases\.chat\.targets\[0\].*WHICH"):
        parse_config(data, env={})


def test_unknown_key_rejected_with_dotted_path() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(minimal(timeouts={"conect": 1}), env={})
    message = str(info.value)
    assert "targets.main" in message
    assert "timeouts.conect" in message
    assert "Extra inputs are not permitted" in message


def test_unknown_top_level_key_rejected() -> None:
    data = {**minimal(), "retries": {"max_retries": 1}}
    with pytest.raises(ConfigError, match="retries: Extra inputs"):
        parse_config(data, env={})


def test_alias_naming_unknown_target() -> None:
    data = minimal()
    data["aliases"]["chat"]["targets"] = ["main", "ghost"]
    with pytest.raises(ConfigError) as info:
        parse_config(data, env={})
    assert "'chat'" in str(info.value)
    assert "'ghost'" in str(info.value)


def test_alias_listing_a_target_twice() -> None:
    data = minimal()
    data["aliases"]["chat"]["targets"] = ["main", "main"]
    with pytest.raises(ConfigError, match="lists a target twice"):
        parse_config(data, env={})


def test_no_alias_rejected() -> None:
    data = minimal()
    data["aliases"] = {}
    with pytest.raises(ConfigError, match="at least one alias"):
        parse_config(data, env={})


def test_base_url_must_be_http() -> None:
    with pytest.raises(ConfigError, match="base_url must start with http"):
        parse_config(minimal(base_url="api.example.com/v1"), env={})


def test_unknown_kind_rejected() -> None:
    with pytest.raises(ConfigError, match=r"targets\.main"):
        parse_config({"targets": {"main": {"kind": "bogus"}}, "aliases": {"a": {"targets": ["main"]}}}, env={})


def test_non_mapping_rejected() -> None:
    with pytest.raises(ConfigError, match="mapping"):
        parse_config(["targets"], env={})


def test_retry_for_prefers_the_targets_own_policy() -> None:
    data = minimal(retry={"max_retries": 7})
    data["targets"]["other"] = {"kind": "openai", "base_url": "http://x", "model": "m"}
    data["retry"] = {"max_retries": 1}
    config = parse_config(data, env={})
    assert config.retry_for("main").max_retries == 7
    assert config.retry_for("other").max_retries == 1


def test_load_config_from_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "lifeline.yaml"
    path.write_text(
        """
server:
  port: 8080
targets:
  openai:
    kind: openai
    base_url: https://api.openai.com/v1
    api_key: ${OPENAI_API_KEY}
    model: gpt-4o-mini
    context_window: 128000
  local:
    kind: llamacpp
aliases:
  chat:
    targets: [openai, local]
    failover_on_content_filter: true
""",
        encoding="utf-8",
    )
    config = load_config(path, env={"OPENAI_API_KEY": SECRET})
    assert config.server.port == 8080
    assert list(config.aliases["chat"].targets) == ["openai", "local"]
    assert config.aliases["chat"].failover_on_content_filter is True
    openai = config.targets["openai"]
    assert isinstance(openai, OpenAITarget)
    assert openai.context_window == 128000
    assert isinstance(config.targets["local"], LlamaCppTarget)


def test_load_config_error_is_prefixed_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("targets: {}\naliases: {}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml: "):
        load_config(path, env={})


def test_invalid_yaml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("targets: [unclosed\n  - x: : y\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path, env={})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml", env={})


def test_empty_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path, env={})


def test_default_config() -> None:
    config = default_config()
    assert set(config.aliases) == {"default", "local"}
    assert list(config.aliases["default"].targets) == ["local"]
    assert list(config.aliases["local"].targets) == ["local"]
    target = config.targets["local"]
    assert isinstance(target, LlamaCppTarget)
    assert target.kind == "llamacpp"
    assert target.model == "builtin:smollm2"
    assert target.supports_n is False


def test_api_key_is_secret_and_never_printed(tmp_path: Path) -> None:
    data = minimal(api_key="${KEY}")
    data["admin"] = {"master_key": "${MASTER}"}
    master = "master-key-should-stay-hidden"
    config = parse_config(data, env={"KEY": SECRET, "MASTER": master})
    target = config.targets["main"]
    assert isinstance(target, OpenAITarget)
    assert isinstance(target.api_key, SecretStr)
    assert isinstance(config.admin.master_key, SecretStr)
    for text in (repr(config), str(config), repr(target), str(target), config.model_dump_json()):
        assert SECRET not in text
        assert master not in text


def test_config_is_frozen() -> None:
    config = default_config()
    with pytest.raises(Exception, match="frozen"):
        config.server.port = 1  # type: ignore[misc]


def test_a_config_file_error_names_the_offending_line(tmp_path: Path) -> None:
    path = tmp_path / "lifeline.yaml"
    path.write_text(
        "targets:\n"
        "  a:\n"
        "    kind: openai\n"
        "    base_url: http://x/v1\n"
        "    model: m\n"
        "    bogus: 1\n"
        "aliases:\n"
        "  chat:\n"
        "    targets: [a]\n"
    )
    with pytest.raises(ConfigError) as raised:
        load_config(path, env={})
    assert str(raised.value).startswith(f"{path}:6: targets.a.")
    assert "bogus" in str(raised.value)


@pytest.mark.parametrize("value", ["${LIFELINE_TEST_UNSET_MASTER:-}", "", "   ", "\t\n"])
def test_an_empty_or_blank_master_key_is_a_load_error(value: str) -> None:
    """`master_key: "${VAR:-}"` with VAR unset must not leave an empty key that an empty bearer matches."""
    data = {**minimal(), "admin": {"master_key": value}}
    with pytest.raises(ConfigError, match=r"admin\.master_key: .*empty") as info:
        parse_config(data, env={})
    assert "remove" in str(info.value)  # says how to run without one


def test_whitespace_around_a_master_key_is_dropped() -> None:
    """An HTTP header cannot carry it, so a key read with a trailing newline would never match."""
    config = parse_config({**minimal(), "admin": {"master_key": "${MASTER}"}}, env={"MASTER": " mk-abc\n"})
    assert config.admin.master_key is not None
    assert config.admin.master_key.get_secret_value() == "mk-abc"
