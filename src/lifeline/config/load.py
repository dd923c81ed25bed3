"""Reading a config file: YAML, `${VAR}` / `${VAR:-default}` interpolation from the environment, validation.

Errors are raised as `ConfigError` with the path of the offending key (`targets.openai.base_url: ...`), so
the CLI can print one clear line instead of a traceback.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lifeline.config.schema import Config

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """The configuration could not be read or is invalid; the message says where and why."""


def interpolate(value: Any, env: Mapping[str, str], path: str = "") -> Any:
    """Replace `${VAR}` and `${VAR:-default}` in every string of a parsed YAML document."""
    if isinstance(value, dict):
        return {k: interpolate(v, env, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, f"{path}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"{path}: environment variable {name} is not set")

    return _VAR.sub(substitute, value)


def parse_config(data: Any, env: Mapping[str, str] | None = None) -> Config:
    if not isinstance(data, dict):
        raise ConfigError("the config must be a mapping (targets:, aliases: …)")
    env = os.environ if env is None else env
    data = interpolate(data, env)
    # Presets and open-model aliases become plain targets here; catalogue imports this module, hence late.
    from lifeline.config.catalogue import expand

    data = expand(data, env)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        return parse_config(data, env)
    except ConfigError as exc:
        message = str(exc)
        line = line_of(text, message.split(": ", 1)[0])
        raise ConfigError(f"{path}:{line}: {message}" if line else f"{path}: {message}") from None


def line_of(text: str, dotted: str) -> int | None:
    """The line of the YAML key that a dotted path (`targets.x.preset`, `aliases.a.targets[0]`) names.
    Path parts that are not keys (a union's tag, like `openai` in `targets.x.openai.model`) are passed over."""
    try:
        node: yaml.Node | None = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line: int | None = None
    for part in dotted.replace("[", ".").replace("]", "").split("."):
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == part:
                    node, line = value, key.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
    return line


def describe_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        # Discriminated unions put the tag in the location ("targets.x.openai.model"); keep it, it helps.
        where = ".".join(str(part) for part in err["loc"]) or "config"
        lines.append(f"{where}: {err['msg']}")
    return "; ".join(lines)
