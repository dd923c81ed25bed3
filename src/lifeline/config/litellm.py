"""`lifeline import litellm`: a LiteLLM proxy config (`model_list`, `router_settings`, `litellm_settings`,
`general_settings`) turned into a Lifeline config, with a note for every setting that could not be carried
over, or was carried with a difference.

Each `model_name` becomes an alias; each of its `model_list` entries a target, in order (`order` first); the
`fallbacks` (and the context-window and content-policy ones) append the named aliases' targets to the chain.
No secret is ever written out or said: `os.environ/NAME` becomes `${NAME}`, and a key written in the LiteLLM
file becomes a `${VAR}` reference too, with a note naming the variable to set (never the value).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from lifeline.config.litellm_models import add_fallbacks, add_group_aliases, build_aliases, deployment, positive
from lifeline.config.litellm_notes import Converter, Note, NoteKind
from lifeline.config.load import parse_config
from lifeline.config.presets import PRESETS
from lifeline.config.schema import Config
from lifeline.errors import ConfigError

__all__ = ["Conversion", "Note", "NoteKind", "convert_litellm"]


@dataclass
class Conversion:
    """The Lifeline config as YAML data, and what the conversion has to say about it."""

    config: dict[str, Any]
    notes: list[Note]
    #: the environment variables the new config reads, in order of first use
    variables: list[str]

    def yaml(self, source: str) -> str:
        head = f"# Converted from the LiteLLM config {source} by `lifeline import litellm`.\n"
        if self.variables:
            head += f"# It reads these environment variables: {', '.join(self.variables)}.\n"
        return head + yaml.safe_dump(self.config, sort_keys=False, allow_unicode=True, width=120)


def convert_litellm(text: str) -> Conversion:
    """Convert the text of a LiteLLM proxy config; ConfigError (one line) when it is not one."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise ConfigError("not a LiteLLM proxy config: the file is not a mapping with a model_list")
    models = data.get("model_list")
    if not isinstance(models, list) or not models:
        raise ConfigError("not a LiteLLM proxy config: no model_list (a list of models) in it")
    conv = Converter()
    config: dict[str, Any] = {}
    deployments = [d for d in (deployment(conv, i, entry) for i, entry in enumerate(models)) if d is not None]
    if not deployments:
        raise ConfigError(
            "nothing to carry over: no entry of model_list names a model Lifeline can reach", *_lines(conv)
        )
    router = _section(conv, data, "router_settings")
    module = _section(conv, data, "litellm_settings")
    general = _section(conv, data, "general_settings")
    targets, aliases = build_aliases(conv, deployments, router)
    add_fallbacks(conv, aliases, router, module)
    add_group_aliases(conv, aliases, router)
    _settings(conv, config, router, module)
    _general(conv, config, general)
    for name in data.get("environment_variables") or {}:
        conv.drop(f"environment_variables.{name}", "set it in the gateway's environment (its value is not copied)")
    for key in data:
        if key not in (
            "model_list",
            "router_settings",
            "litellm_settings",
            "general_settings",
            "environment_variables",
        ):
            conv.drop(str(key), "not a section Lifeline knows")
    config["targets"] = targets
    config["aliases"] = aliases
    config = {key: config[key] for key in Config.model_fields if key in config}  # the schema's order
    try:  # what is written must load: a failure here is a bug of the conversion, said as one line a problem
        parse_config(copy.deepcopy(config), ignore_env=True)
    except ConfigError as exc:
        raise ConfigError(*(f"the converted config does not load: {p}" for p in exc.problems)) from None
    return Conversion(config, conv.notes, _variables(config))


def _lines(conv: Converter) -> list[str]:
    return [note.line() for note in conv.notes]


def _section(conv: Converter, data: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        conv.drop(name, "not a mapping")
        return {}
    return value


# --- settings --------------------------------------------------------------------------------------------


def _settings(conv: Converter, config: dict[str, Any], router: dict[str, Any], module: dict[str, Any]) -> None:
    handled = {
        "routing_strategy",
        "fallbacks",
        "context_window_fallbacks",
        "content_policy_fallbacks",
        "model_group_alias",
        "default_fallbacks",
    }
    redis: dict[str, Any] = {
        k: router[k] for k in ("redis_host", "redis_port", "redis_password", "redis_url") if k in router
    }
    if redis:
        _redis(conv, config, redis)
    for section, settings in (("router_settings", router), ("litellm_settings", module)):
        for key, raw in settings.items():
            if key in handled or key in redis:
                continue
            path, value = f"{section}.{key}", conv.value(raw)
            if key == "num_retries" and isinstance(value, int) and value >= 0:
                config.setdefault("retry", {})["max_retries"] = min(value, 10)
                if value > 10:
                    conv.differs(path, "Lifeline retries a target 10 times at most")
            elif key in ("timeout", "request_timeout") and positive(value):
                config.setdefault("server", {})["request_timeout"] = value
            elif key == "allowed_fails" and isinstance(value, int) and value >= 1:
                config.setdefault("circuit", {})["failure_threshold"] = value
                conv.differs(
                    path, "Lifeline opens a target's circuit after this many failures in a row, not per minute"
                )
            elif key == "cooldown_time" and positive(value):
                config.setdefault("circuit", {})["cooldown"] = value
            elif key == "json_logs" and value is True:
                config.setdefault("server", {})["log_format"] = "json"
            elif key == "set_verbose" and value is True:
                config.setdefault("server", {})["log_level"] = "debug"
            else:
                conv.drop(path, _why_not(key))


def _why_not(key: str) -> str:
    if key in ("success_callback", "failure_callback", "callbacks", "service_callback"):
        return "Lifeline records every request in its ledger and exports OpenTelemetry spans (tracing:)"
    if key in ("cache", "cache_params"):
        return "Lifeline does not cache answers"
    if key == "drop_params":
        return "Lifeline forwards the client's parameters as they came"
    return "no Lifeline equivalent"


def _redis(conv: Converter, config: dict[str, Any], redis: dict[str, Any]) -> None:
    if "redis_url" in redis:
        url = conv.secret(redis["redis_url"], "router_settings.redis_url", "REDIS_URL")
    else:
        host = conv.value(redis.get("redis_host", "127.0.0.1"))
        port = conv.value(redis.get("redis_port", 6379))
        password = conv.secret(redis.get("redis_password"), "router_settings.redis_password", "REDIS_PASSWORD")
        url = f"redis://{f':{password}@' if password else ''}{host}:{port}/0"
        if password:
            conv.differs(
                "router_settings.redis_password",
                "placed in accounting.redis_url: a password with / : @ or % must be URL-encoded in the variable",
            )
    config.setdefault("accounting", {})["redis_url"] = url


def _general(conv: Converter, config: dict[str, Any], general: dict[str, Any]) -> None:
    for key, raw in general.items():
        path = f"general_settings.{key}"
        if key == "master_key" and raw:
            config["admin"] = {"master_key": conv.secret(raw, path, "LIFELINE_MASTER_KEY")}
            config["auth"] = {"enabled": True}
            conv.differs(
                path,
                "it now guards /admin/*; clients of /v1 need virtual keys (auth.enabled is on): "
                "create them with lifeline keys create",
            )
        elif key == "database_url" and raw:
            config.setdefault("accounting", {})["database_url"] = conv.secret(raw, path, "DATABASE_URL")
            conv.differs(path, "Lifeline keeps its own tables there; LiteLLM's keys, teams and spend are not migrated")
        else:
            conv.drop(path, "no Lifeline equivalent")


def _variables(config: dict[str, Any]) -> list[str]:
    """Every variable the config reads: its `${VAR}` references and the key variables of presets whose
    targets set no api_key."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str):
            found.extend(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", value))

    for target in config.get("targets", {}).values():
        preset = PRESETS.get(target.get("preset", ""))
        if preset is not None and preset.api_key_env and "api_key" not in target:
            found.append(preset.api_key_env)
        walk(target)
    for key, section in config.items():
        if key != "targets":
            walk(section)
    return list(dict.fromkeys(found))
