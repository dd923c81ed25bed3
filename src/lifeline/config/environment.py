"""`${VAR}` and `${VAR:-default}` in a config, read from the environment: the variables a config is read
with, and the interpolation over a parsed YAML document. Used by the loader and by the expansion of presets
and open models (which read a host's key variable), so it lives apart from both."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from lifeline.errors import ConfigError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class Environment:
    """The variables a config is read with.

    An unset variable is recorded, not fatal at once, so that one error names every missing variable. With
    `ignore` (`lifeline check --no-env`) no variable is read: a reference with a default takes the default,
    one without stays in place as written, and the paths holding such values are recorded, so that
    validation errors about them can be set aside.
    """

    def __init__(self, values: Mapping[str, str], *, ignore: bool = False) -> None:
        self.values = values
        self.ignore = ignore
        #: (path, variable) of every reference to an unset variable
        self.missing: list[tuple[str, str]] = []
        #: paths whose value still holds an unresolved `${VAR}` (ignore mode only)
        self.unresolved: list[str] = []

    def get(self, name: str, path: str, default: str | None = None) -> str:
        if not self.ignore and name in self.values:
            return self.values[name]
        if default is not None:
            return default
        if self.ignore:
            self.unresolved.append(path)
            return "${" + name + "}"
        self.missing.append((path, name))
        return ""

    def check(self) -> None:
        """Raise one ConfigError naming every unset variable, if any."""
        if self.missing:
            raise ConfigError(
                *(f"{path}: environment variable {name} is not set" for path, name in self.missing),
                missing=list(dict.fromkeys(name for _, name in self.missing)),
            )


#: what the expansion of presets and open models reads variables from
Variables = Mapping[str, str] | Environment


def interpolate(value: Any, env: Variables, path: str = "") -> Any:
    """Replace `${VAR}` and `${VAR:-default}` in every string of a parsed YAML document. Given a plain
    mapping, unset variables are a ConfigError naming all of them."""
    if not isinstance(env, Environment):
        environment = Environment(env)
        result = interpolate(value, environment, path)
        environment.check()
        return result
    if isinstance(value, dict):
        return {k: interpolate(v, env, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, f"{path}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value
    return _VAR.sub(lambda match: env.get(match.group(1), path, match.group(2)), value)
