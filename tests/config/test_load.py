"""Loading the config: interpolation, validation errors that name the path, and secrets kept secret."""

from __future__ import annotations

import sys
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
    assert "unknown key; did you mean connect?" in message


def test_unknown_top_level_key_rejected() -> None:
    data = {**minimal(), "retries": {"max_retries": 1}}
    with pytest.raises(ConfigError, match=r"retries: unknown key; did you mean retry\?"):
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


# --- #15.4: no value is ever quoted in a config error ---------------------------------------------------

INLINE = "sk-inline-secret-0f9e8d7c6b5a"


def test_a_yaml_syntax_error_names_the_line_and_key_but_quotes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "lifeline.yaml"
    path.write_text(f"admin:\n  master_key: {INLINE}: oops\naliases: {{}}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_config(path, env={})
    message = str(raised.value)
    assert message.startswith(f"{path}:2: not valid YAML")
    assert "admin.master_key" in message
    assert INLINE not in message and INLINE[:8] not in message


def test_an_unclosed_quote_says_where_it_started_and_quotes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "lifeline.yaml"
    path.write_text(f'targets:\n  a:\n    api_key: "{INLINE}\n    model: m\n', encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_config(path, env={})
    message = str(raised.value)
    assert "targets.a.api_key" in message and "starts at line 3" in message
    assert INLINE not in message and INLINE[:8] not in message


def test_a_value_continuing_on_the_next_line_is_not_taken_for_a_key(tmp_path: Path) -> None:
    path = tmp_path / "lifeline.yaml"
    path.write_text(f"admin:\n  master_key: sk-one\n    {INLINE}: x\n", encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_config(path, env={})
    assert "admin.master_key" in str(raised.value)
    assert INLINE not in str(raised.value)


@pytest.mark.parametrize("written", [f"*{INLINE}", f"!{INLINE} x", f"&{INLINE} x\n  other: *{INLINE}x"])
def test_a_secret_read_as_an_alias_anchor_or_tag_is_not_quoted(tmp_path: Path, written: str) -> None:
    """A value starting with *, & or ! is YAML syntax; PyYAML's messages quote the name that follows."""
    path = tmp_path / "lifeline.yaml"
    path.write_text(f"admin:\n  master_key: {written}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_config(path, env={})
    message = str(raised.value)
    assert "not valid YAML" in message and "admin." in message
    assert INLINE not in message and INLINE[:8] not in message


def test_validation_errors_do_not_echo_the_value(tmp_path: Path) -> None:
    path = tmp_path / "lifeline.yaml"
    path.write_text(
        "targets:\n"
        f"  a: {{kind: {INLINE}, base_url: http://x/v1, model: m}}\n"
        f"  b: {{kind: openai, base_url: http://x/v1, model: m, max_connections: {INLINE}}}\n"
        f"  c: {{kind: openai, base_url: {INLINE}, model: m}}\n"
        "aliases:\n"
        "  chat: {targets: [a]}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as raised:
        load_config(path, env={})
    message = str(raised.value)
    assert f"{path}:2: targets.a.kind: unknown kind" in message
    assert f"{path}:3: targets.b.openai.max_connections:" in message
    assert f"{path}:4: targets.c.openai.base_url:" in message
    assert INLINE not in message and INLINE[:8] not in message


def test_a_validator_echoing_its_input_is_redacted() -> None:
    from pydantic import BaseModel, ValidationError, field_validator

    from lifeline.config.load import validation_problems

    class Echo(BaseModel):
        url: str

        @field_validator("url")
        @classmethod
        def _refuse(cls, value: str) -> str:
            raise ValueError(f"unsupported URL {value!r}")

    with pytest.raises(ValidationError) as raised:
        Echo(url=INLINE)
    assert validation_problems(raised.value) == ["url: Value error, unsupported URL the value"]


# --- #15.20: every missing variable at once; structure without the environment ---------------------------


def test_every_missing_variable_is_reported_at_once() -> None:
    data = minimal(api_key="${FIRST_KEY}", headers={"x-org": "${ORG}"})
    data["targets"]["ds"] = {"preset": "deepseek", "model": "deepseek-flash"}
    data["admin"] = {"master_key": "${MASTER}"}
    data["server"] = {"port": "${PORT:-4000}"}
    with pytest.raises(ConfigError) as info:
        parse_config(data, env={})
    assert info.value.problems == [
        "targets.main.api_key: environment variable FIRST_KEY is not set",
        "targets.main.headers.x-org: environment variable ORG is not set",
        "admin.master_key: environment variable MASTER is not set",
        "targets.ds.api_key: environment variable DEEPSEEK_API_KEY is not set",
    ]
    assert info.value.missing_variables == ["FIRST_KEY", "ORG", "MASTER", "DEEPSEEK_API_KEY"]


def test_missing_variables_each_name_their_line(tmp_path: Path) -> None:
    path = tmp_path / "lifeline.yaml"
    path.write_text(
        "targets:\n"
        "  a: {kind: openai, base_url: http://x/v1, model: m, api_key: '${A_KEY}'}\n"
        "  b:\n"
        "    kind: openai\n"
        "    base_url: http://x/v1\n"
        "    model: m\n"
        "    api_key: ${B_KEY}\n"
        "aliases:\n"
        "  chat: {targets: [a, b]}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.problems == [
        f"{path}:2: targets.a.api_key: environment variable A_KEY is not set",
        f"{path}:7: targets.b.api_key: environment variable B_KEY is not set",
    ]


def test_ignore_env_checks_the_structure_without_any_variable() -> None:
    data = minimal(api_key="${FIRST_KEY}", base_url="${URL}", max_connections="${CONNS}")
    data["targets"]["ds"] = {"preset": "deepseek", "model": "deepseek-flash"}
    data["server"] = {"port": "${PORT}", "host": "${HOST:-0.0.0.0}"}
    data["hosts"] = {"deepseek": {}}
    data["aliases"]["open"] = {"open_model": "deepseek-v4-flash"}
    config = parse_config(data, env={"HOST": "ignored"}, ignore_env=True)
    assert set(config.targets) == {"main", "ds", "deepseek-v4-flash@deepseek"}
    assert config.server.host == "0.0.0.0"  # a default in the file is used, the environment is not read
    assert config.server.port == 4000  # left unresolved: the key's default stands in


def test_ignore_env_still_reports_what_is_wrong_with_the_structure() -> None:
    data = minimal(api_key="${FIRST_KEY}", modle="x")
    data["srever"] = {"port": 1}
    with pytest.raises(ConfigError) as info:
        parse_config(data, env={}, ignore_env=True)
    assert info.value.problems == [
        "targets.main.openai.modle: unknown key; did you mean model?",
        "srever: unknown key; did you mean server?",
    ]


def test_ignore_env_does_not_set_aside_a_bad_literal_value() -> None:
    data = minimal(max_connections="many", api_key="${K}")
    with pytest.raises(ConfigError, match=r"targets\.main\.openai\.max_connections"):
        parse_config(data, env={}, ignore_env=True)


# --- #15.22: which kinds exist; close matches for misspelt keys ---------------------------------------------


def test_a_target_without_kind_says_which_kinds_exist() -> None:
    data = {"targets": {"main": {"base_url": "http://x/v1", "model": "m"}}, "aliases": {"a": {"targets": ["main"]}}}
    with pytest.raises(ConfigError) as info:
        parse_config(data, env={})
    message = str(info.value)
    assert "discriminator" not in message
    assert message.startswith("targets.main: no `kind`")
    assert "openai, anthropic, gemini or llamacpp" in message and "preset" in message


def test_a_misspelt_kind_suggests_the_close_one() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(minimal(kind="opneai"), env={})
    assert str(info.value) == "targets.main.kind: unknown kind; did you mean openai?"
    with pytest.raises(ConfigError) as info:
        parse_config(minimal(kind="zzz"), env={})
    assert str(info.value) == "targets.main.kind: unknown kind: openai, anthropic, gemini or llamacpp"


@pytest.mark.parametrize(
    ("where", "typo", "meant"),
    [
        ((), "srever", "server"),
        (("server",), "prot", "port"),
        (("targets", "main"), "modle", "model"),
        (("targets", "main", "timeouts"), "conect", "connect"),
        (("aliases", "chat"), "targest", "targets"),
        (("accounting", "ledger"), "enabeld", "enabled"),
    ],
)
def test_a_misspelt_key_suggests_the_close_one(where: tuple[str, ...], typo: str, meant: str) -> None:
    data: dict[str, Any] = minimal()
    node = data
    for part in where:
        node = node.setdefault(part, {})
    node[typo] = 1
    with pytest.raises(ConfigError) as info:
        parse_config(data, env={})
    assert str(info.value).endswith(f"{typo}: unknown key; did you mean {meant}?")


def test_an_unknown_key_far_from_any_lists_the_keys_there() -> None:
    data = {**minimal(), "admin": {"zzzzzz": 1}}
    with pytest.raises(ConfigError) as info:
        parse_config(data, env={})
    assert str(info.value) == "admin.zzzzzz: unknown key (keys here: master_key)"


# --- #15.18: tracing without the otel extra --------------------------------------------------------------


@pytest.mark.parametrize("absent", ["opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"])
def test_tracing_without_the_otel_extra_is_a_load_error_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, absent: str
) -> None:
    monkeypatch.setitem(sys.modules, absent, None)  # as if not installed
    path = tmp_path / "lifeline.yaml"
    path.write_text(
        "tracing:\n  enabled: true\ntargets:\n  a: {kind: llamacpp}\naliases:\n  chat: {targets: [a]}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as raised:
        load_config(path, env={})
    message = str(raised.value)
    assert message.startswith(f"{path}:2: tracing.enabled: tracing needs the otel extra")
    assert absent in message and "lifeline-gateway[otel]" in message and ".[otel]" in message
    # tracing off: nothing of OpenTelemetry is needed
    path.write_text("targets:\n  a: {kind: llamacpp}\naliases:\n  chat: {targets: [a]}\n", encoding="utf-8")
    assert load_config(path, env={}).tracing.enabled is False


def test_a_tracer_built_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from lifeline.config.schema import TracingSettings
    from lifeline.tracing import Tracing

    monkeypatch.setitem(sys.modules, "opentelemetry.sdk", None)
    with pytest.raises(ConfigError, match=r"tracing\.enabled: .*otel"):
        Tracing(TracingSettings(enabled=True))


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
