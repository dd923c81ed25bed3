"""The catalogue of models (data/catalogue.yaml) and the expansion of `open_model` aliases over it.

An alias written `{open_model: deepseek-r1, targets: [local]}` becomes, at load, one target per configured
host (`hosts:`, in config order) that the catalogue lists as serving the model, named `<model>@<host>`,
followed by the alias's own targets. `expand` is the one entry point used by the loader: target presets
first, then open models.
"""

from __future__ import annotations

import datetime
import difflib
import importlib.resources
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lifeline.config.environment import Variables
from lifeline.config.presets import PRESETS, Preset, expand_target_presets, key_from_env, resolve_preset
from lifeline.errors import ConfigError

#: capability names accepted by `filter(supports=…)` and `lifeline models catalogue --supports`
CAPABILITIES = ("tools", "json", "vision", "prefill")
_CAPABILITY_FIELDS = {
    "tools": "tools",
    "json": "json_mode",
    "json_mode": "json_mode",
    "vision": "vision",
    "prefill": "prefill",
}

Usd = Annotated[float, Field(ge=0)]


class HostRow(BaseModel):
    """One host serving a model: its id there and what it supports there (None = unknown)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: a preset name (presets.yaml)
    preset: str
    #: the model id the host expects
    model: str
    quantisation: str | None = None
    context: Annotated[int, Field(gt=0)] | None = None
    tools: bool | None = None
    json_mode: bool | None = None
    vision: bool | None = None
    #: continuing a partial assistant message (prefix / partial mode / prefill)
    prefill: bool | None = None
    #: USD per one million tokens
    price_in: Usd | None = None
    price_out: Usd | None = None
    #: false when a value in the row could not be confirmed from a document (the note says which)
    verified: bool
    note: str | None = None
    #: the page the values were read from, and when
    source: str
    date: datetime.date

    def supports(self, capability: str) -> bool:
        return getattr(self, _CAPABILITY_FIELDS[capability]) is True


class LocalFile(BaseModel):
    """The GGUF file `lifeline models pull` downloads for the embedded engine: a file of a hub repository."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: the hub repository, OWNER/NAME
    repo: Annotated[str, Field(pattern=r"^[\w.-]+/[\w.-]+$")]
    #: the file in it (a path inside the repository when it sits in a folder)
    file: Annotated[str, Field(pattern=r"(?i)^[\w./-]+\.gguf$")]
    quantisation: str
    #: the file's size in megabytes (10^6 bytes), as the repository lists it
    size_mb: Annotated[int, Field(gt=0)]
    #: false when the file name or size could not be read on the repository's page (the note says which)
    verified: bool
    note: str | None = None
    source: Annotated[str, Field(pattern=r"^https://")]

    @property
    def spec(self) -> str:
        """The embedded engine's model spec for this file (`model:` of a `llamacpp` target)."""
        return f"hf:{self.repo}/{self.file}"


class QualityFigure(BaseModel):
    """A benchmark figure the model's publisher reported, for the checkpoint it names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    benchmark: str
    #: percent
    score: Annotated[float, Field(ge=0, le=100)]
    #: how it was measured and on which checkpoint, as the publisher says (e.g. "5-shot, the base model")
    setting: str
    #: the model card or report the figure is read from
    source: Annotated[str, Field(pattern=r"^https://")]


class CatalogueModel(BaseModel):
    """A model and the facts a routing constraint may ask about."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    name: str
    open_weights: bool
    #: an SPDX-like id or the model's own licence name (apache-2.0, mit, qwen, llama3.3-community …)
    licence: str
    publisher: str
    #: ISO 3166 alpha-2 country of the publisher
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
    #: e.g. "671B (37B active)"; None when undisclosed
    parameters: str | None = None
    context: Annotated[int, Field(gt=0)]
    status: Literal["active", "deprecated", "retired"] = "active"
    #: the embedded engine's model spec when Lifeline ships this model (kind llamacpp)
    embedded: str | None = None
    #: a GGUF of the model that `lifeline models pull` downloads for the embedded engine
    local: LocalFile | None = None
    #: published benchmark figures (empty when none was found with a source)
    quality: list[QualityFigure] = Field(default_factory=list)
    #: false when a value in the row could not be confirmed from a document (the note says which)
    verified: bool
    note: str | None = None
    #: the page the values were read from, and when
    source: str
    date: datetime.date
    hosts: list[HostRow] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_row_per_host(self) -> CatalogueModel:
        seen: set[str] = set()
        for row in self.hosts:
            if row.preset in seen:
                raise ValueError(f"model {self.id!r} lists host {row.preset!r} twice")
            seen.add(row.preset)
        return self

    def host(self, preset: str) -> HostRow | None:
        return next((row for row in self.hosts if row.preset == preset), None)

    def supports(self, capability: str, host: str | None = None) -> bool:
        """True when the given host (or, without one, any host) is known to support the capability."""
        rows = [r for r in self.hosts if host is None or r.preset == host]
        return any(row.supports(capability) for row in rows)


class CatalogueFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    models: list[CatalogueModel]


def load_catalogue(text: str, presets: Mapping[str, Preset] = PRESETS) -> Mapping[str, CatalogueModel]:
    """Parse and validate a catalogue file: unique ids, hosts that name existing presets."""
    parsed = CatalogueFile.model_validate(yaml.safe_load(text))
    table: dict[str, CatalogueModel] = {}
    for model in parsed.models:
        if model.id in table:
            raise ValueError(f"model {model.id!r} is listed twice")
        for row in model.hosts:
            if row.preset not in presets:
                raise ValueError(f"model {model.id!r} names unknown preset {row.preset!r}")
        table[model.id] = model
    return MappingProxyType(table)


def _read_shipped() -> Mapping[str, CatalogueModel]:
    return load_catalogue(importlib.resources.files("lifeline.data").joinpath("catalogue.yaml").read_text("utf-8"))


#: every catalogued model by id, in file order (read-only, loaded once at import)
CATALOGUE: Mapping[str, CatalogueModel] = _read_shipped()


def find(model_id: str) -> CatalogueModel | None:
    """The catalogued model with that id, or None."""
    return CATALOGUE.get(model_id)


def local_models() -> list[CatalogueModel]:
    """The models recommended for the embedded engine: the one Lifeline ships, then those it can pull."""
    return [m for m in CATALOGUE.values() if m.embedded or m.local]


def find_local(name: str) -> CatalogueModel:
    """The recommended local model of that id; ValueError naming close matches otherwise."""
    known = {m.id: m for m in local_models()}
    if name in known:
        return known[name]
    hint = _suggest(name, known) or f" (known: {', '.join(known)})"
    raise ValueError(f"no recommended local model {name!r}{hint}")


def filter(
    open_weights: bool | None = None,
    licence: str | None = None,
    supports: Iterable[str] = frozenset(),
    min_context: int | None = None,
    country: str | None = None,
    publisher: str | None = None,
    host: str | None = None,
) -> list[CatalogueModel]:
    """Catalogue models matching every given criterion, in catalogue order.

    `supports` takes capability names (tools, json, vision, prefill): a model qualifies when some host (or
    the given `host`) is known to support each of them. With `host`, only models that host serves qualify and
    `min_context` reads that host's context where it states one. Text criteria ignore case.
    """
    wanted = set(supports)
    unknown = wanted - set(_CAPABILITY_FIELDS)
    if unknown:
        raise ValueError(f"unknown capability {', '.join(sorted(unknown))} (known: {', '.join(CAPABILITIES)})")
    matches = []
    for model in CATALOGUE.values():
        row = model.host(host) if host is not None else None
        if host is not None and row is None:
            continue
        if open_weights is not None and model.open_weights != open_weights:
            continue
        if licence is not None and model.licence.lower() != licence.lower():
            continue
        if country is not None and model.country != country.upper():
            continue
        if publisher is not None and publisher.lower() not in model.publisher.lower():
            continue
        context = (row.context if row is not None else None) or model.context
        if min_context is not None and context < min_context:
            continue
        if not all(model.supports(cap, host) for cap in wanted):
            continue
        matches.append(model)
    return matches


def _suggest(name: object, known: Iterable[str]) -> str:
    matches = difflib.get_close_matches(str(name), list(known), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(matches)}?" if matches else ""


def _target_for(
    model: CatalogueModel, row: HostRow, host: str, spec: Mapping[str, Any], preset: Preset, env: Variables
) -> dict[str, Any]:
    """The target config (before validation) for `model` at one configured host."""
    target: dict[str, Any] = {
        "kind": preset.kind,
        "base_url": spec.get("base_url") or preset.base_url,
        "model": row.model,
        "context_window": row.context or model.context,
    }
    if "api_key" in spec:
        if spec["api_key"] is not None:
            target["api_key"] = spec["api_key"]
    else:
        key = key_from_env(preset, env, f"hosts.{host}.api_key")
        if key is not None:
            target["api_key"] = key
    for field in ("headers", "timeouts", "max_connections"):
        if spec.get(field) is not None:
            target[field] = spec[field]
    capabilities = {"tools": row.tools, "json_schema": row.json_mode, "vision": row.vision, "prefill": row.prefill}
    target["capabilities"] = {k: v for k, v in capabilities.items() if v is not None}
    if row.prefill is not False and preset.kind == "openai" and preset.prefill_mode is not None:
        # each host family continues a partial assistant message in its own dialect (presets.yaml)
        target["prefill_mode"] = preset.prefill_mode
    if preset.responses == "native":
        target["responses"] = "native"
        target["responses_tools"] = list(preset.responses_tools)
    target["meta"] = {
        "open_weights": model.open_weights,
        "licence": model.licence,
        "publisher": model.publisher,
        "country": model.country,
        "self_hosted": preset.self_hosted,
    }
    if row.price_in is not None and row.price_out is not None:
        target["price"] = {"input": row.price_in, "output": row.price_out}
    return target


def _hosts(data: Mapping[str, Any]) -> dict[str, tuple[dict[str, Any], Preset]]:
    """Every `hosts:` entry with its preset, in config order; unknown presets are errors at `hosts.X.preset`."""
    hosts = data.get("hosts")
    if hosts is None:
        return {}
    if not isinstance(hosts, dict):
        raise ConfigError("hosts: expected a mapping of host name to settings (preset, base_url, api_key …)")
    resolved: dict[str, tuple[dict[str, Any], Preset]] = {}
    for name, spec in hosts.items():
        spec = {} if spec is None else spec
        if not isinstance(spec, dict):
            raise ConfigError(f"hosts.{name}: expected a mapping (preset, base_url, api_key …)")
        preset_name = spec.get("preset") or name
        try:
            preset = resolve_preset(preset_name, f"hosts.{name}.preset")
        except ConfigError as exc:
            if "preset" in spec:
                raise
            raise ConfigError(
                f"{exc} (a host without `preset:` is taken to be the preset of its name, {name})"
            ) from None
        resolved[str(name)] = (spec, preset)
    return resolved


def expand_open_models(data: dict[str, Any], env: Variables) -> dict[str, Any]:
    """Expand every alias with `open_model` into generated targets placed before its own. Returns new data."""
    hosts = _hosts(data)
    if any(spec is None for spec in (data.get("hosts") or {}).values()):
        # `deepseek:` with nothing under it is a host that takes every default
        data = {**data, "hosts": {name: spec for name, (spec, _) in hosts.items()}}
    aliases = data.get("aliases")
    if not isinstance(aliases, dict) or not any(isinstance(a, dict) and a.get("open_model") for a in aliases.values()):
        return data
    targets = data.get("targets")
    own_targets: dict[str, Any] = dict(targets) if isinstance(targets, dict) else {}
    generated: dict[str, dict[str, Any]] = {}
    new_aliases: dict[str, Any] = {}
    for alias_name, alias in aliases.items():
        if not (isinstance(alias, dict) and alias.get("open_model")):
            new_aliases[alias_name] = alias
            continue
        path = f"aliases.{alias_name}.open_model"
        model_id = alias["open_model"]
        model = find(model_id) if isinstance(model_id, str) else None
        if model is None:
            raise ConfigError(f"{path}: unknown catalogue model{_suggest(model_id, CATALOGUE)}")
        if model.status == "retired":
            raise ConfigError(f"{path}: {model.id} is retired by its publisher and no host serves it any more")
        names: list[str] = []
        for host, (spec, preset) in hosts.items():
            row = model.host(preset.name)
            if row is None:
                continue
            name = f"{model.id}@{host}"
            if name in own_targets:
                raise ConfigError(
                    f"{path}: the generated target {name!r} clashes with targets.{name}; rename that target"
                )
            if name not in generated:
                generated[name] = _target_for(model, row, host, spec, preset, env)
            names.append(name)
        if not names:
            serving = ", ".join(row.preset for row in model.hosts) or "none"
            configured = ", ".join(hosts) or "none"
            raise ConfigError(
                f"{path}: no configured host serves {model.id} (configured hosts: {configured}); "
                f"hosts that serve it: {serving}"
            )
        listed = alias.get("targets") or []
        if not isinstance(listed, list):
            raise ConfigError(f"aliases.{alias_name}.targets: expected a list of target names")
        # a generated target the alias also lists by name keeps its generated place
        chain = [*names, *(t for t in listed if t not in names)]
        new_aliases[alias_name] = {**alias, "targets": chain}
    return {**data, "targets": {**own_targets, **generated}, "aliases": new_aliases}


def expand(data: dict[str, Any], env: Variables) -> dict[str, Any]:
    """Target presets, then open-model aliases: the config as the schema expects it. Raises ConfigError."""
    return expand_open_models(expand_target_presets(data, env), env)
