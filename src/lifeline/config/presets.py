"""Host presets: the base URL, wire kind and key variable of each known host, read once from data/presets.yaml.

A target may name a preset instead of spelling the host out:

    targets:
      ds:
        preset: deepseek          # kind, base_url and api_key (${DEEPSEEK_API_KEY}) come from the preset
        model: deepseek-flash

`expand_target_presets` fills those fields in before validation; the target's own fields win.
"""

from __future__ import annotations

import datetime
import difflib
import importlib.resources
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, field_validator

from lifeline.config.environment import Environment, Variables
from lifeline.errors import ConfigError

HostKind = Literal["openai", "anthropic", "gemini"]


class Preset(BaseModel):
    """One host: where it answers and how it is reached."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: HostKind
    base_url: str
    #: the environment variable conventionally holding the key; None for engines you run yourself
    api_key_env: str | None
    #: an engine on your own machines (vLLM, SGLang, Ollama, llama.cpp server, LM Studio)
    self_hosted: bool
    region: str | None = None
    notes: str | None = None
    #: whether the host continues a partial assistant message (None: unknown — a target is asked, and a
    #: refusal is remembered); OpenAI-compatible hosts only
    prefill: bool | None = None
    #: the dialect it is asked in (OpenAITarget.prefill_mode)
    prefill_mode: Literal["prefix", "partial", "continue_final_message"] | None = None
    #: false when a value in the row could not be confirmed from a document (the notes say which)
    verified: bool
    #: the page the values were read from
    source: str
    #: when they were read
    date: datetime.date
    #: how /v1/responses reaches a target at this host by default (kind openai): "native" for a host that
    #: serves the Responses API itself, with the built-in tools it runs (docs/responses.md)
    responses: Literal["translated", "native"] = "translated"
    responses_tools: tuple[str, ...] = ()

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value


class PresetFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    presets: list[Preset]


def load_presets(text: str) -> Mapping[str, Preset]:
    """Parse and validate a presets file; names must be unique."""
    parsed = PresetFile.model_validate(yaml.safe_load(text))
    table: dict[str, Preset] = {}
    for preset in parsed.presets:
        if preset.name in table:
            raise ValueError(f"preset {preset.name!r} is listed twice")
        table[preset.name] = preset
    return MappingProxyType(table)


def _read_shipped() -> Mapping[str, Preset]:
    return load_presets(importlib.resources.files("lifeline.data").joinpath("presets.yaml").read_text("utf-8"))


#: every shipped preset by name, in file order (read-only, loaded once at import)
PRESETS: Mapping[str, Preset] = _read_shipped()


def get_preset(name: str) -> Preset:
    """The preset of that name; KeyError (with close matches in the message) if there is none."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}{suggest(name, PRESETS)}") from None


def suggest(name: object, known: Mapping[str, object]) -> str:
    """'; did you mean a, b?' for close matches, else the list of known names (for error messages)."""
    matches = difflib.get_close_matches(str(name), list(known), n=3, cutoff=0.6)
    if matches:
        return f"; did you mean {', '.join(matches)}?"
    return f" (known: {', '.join(known) or 'none'})"


def resolve_preset(name: object, path: str) -> Preset:
    """The preset named at `path` in the config, or a ConfigError naming the path (not the value: config
    errors quote no value)."""
    if not isinstance(name, str) or name not in PRESETS:
        raise ConfigError(f"{path}: unknown preset{suggest(name, PRESETS)}")
    return PRESETS[name]


def key_from_env(preset: Preset, env: Variables, path: str) -> str | None:
    """The key held in the preset's variable. An unset variable is recorded by an `Environment` (which
    reports them all at once), or is a ConfigError naming `path` and the variable."""
    if preset.api_key_env is None:
        return None
    if isinstance(env, Environment):
        return env.get(preset.api_key_env, path)
    if preset.api_key_env not in env:
        raise ConfigError(f"{path}: environment variable {preset.api_key_env} is not set")
    return env[preset.api_key_env]


def expand_target_presets(data: dict[str, Any], env: Variables) -> dict[str, Any]:
    """Fill in every `targets.X` that names a preset: kind, base_url, api_key, meta.self_hosted, the prefill
    support and dialect the preset knows, and for a host that serves the Responses API natively `responses`
    and `responses_tools`.

    The target's own fields win, including an explicit `api_key: null` (no key sent). Returns a new mapping;
    `data` is not changed.
    """
    targets = data.get("targets")
    if not isinstance(targets, dict) or not any(isinstance(t, dict) and "preset" in t for t in targets.values()):
        return data
    expanded: dict[str, Any] = {}
    for name, spec in targets.items():
        if not (isinstance(spec, dict) and "preset" in spec):
            expanded[name] = spec
            continue
        own = {k: v for k, v in spec.items() if k != "preset"}
        preset = resolve_preset(spec["preset"], f"targets.{name}.preset")
        target: dict[str, Any] = {"kind": preset.kind, "base_url": preset.base_url}
        if preset.responses == "native" and own.get("responses", "native") == "native":
            target["responses"] = "native"
            target["responses_tools"] = list(preset.responses_tools)
        if "api_key" not in own:
            key = key_from_env(preset, env, f"targets.{name}.api_key")
            if key is not None:
                target["api_key"] = key
        if preset.prefill_mode is not None:
            target["prefill_mode"] = preset.prefill_mode
        if preset.prefill is not None:
            target["capabilities"] = {"prefill": preset.prefill}
        target.update(own)
        capabilities = own.get("capabilities")
        if preset.prefill is not None and isinstance(capabilities, dict) and "prefill" not in capabilities:
            target["capabilities"] = {**capabilities, "prefill": preset.prefill}
        meta = target.get("meta")
        if meta is None:
            target["meta"] = {"self_hosted": preset.self_hosted}
        elif isinstance(meta, dict) and "self_hosted" not in meta:
            target["meta"] = {**meta, "self_hosted": preset.self_hosted}
        expanded[name] = target
    return {**data, "targets": expanded}
