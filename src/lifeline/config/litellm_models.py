"""LiteLLM's `model_list` as Lifeline targets, and its model names as aliases with their chains (fallbacks,
context-window and content-policy fallbacks, `model_group_alias`), for config/litellm.py."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lifeline.config.litellm_notes import Converter
from lifeline.config.presets import PRESETS

#: LiteLLM provider prefixes that are one of Lifeline's presets (the rest of `model` is the model id)
_PRESET_OF = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "gemini",
    "deepseek": "deepseek",
    "mistral": "mistral",
    "groq": "groq",
    "together_ai": "together",
    "fireworks_ai": "fireworks",
    "deepinfra": "deepinfra",
    "openrouter": "openrouter",
    "dashscope": "dashscope",
    "moonshot": "moonshot",
    "ollama": "ollama",
    "ollama_chat": "ollama",
    "hosted_vllm": "vllm",
    "lm_studio": "lmstudio",
}

_CLOUD_SIGNED = "Lifeline does not sign requests with cloud credentials (AWS SigV4, Google service accounts)"

#: providers known not to be reachable as any Lifeline target kind, and why
_REFUSED = {
    "bedrock": f"{_CLOUD_SIGNED}; reach the model through its publisher's API (e.g. preset anthropic)",
    "sagemaker": f"{_CLOUD_SIGNED}; a SageMaker endpoint that speaks OpenAI's API can be a kind openai target",
    "vertex_ai": f"{_CLOUD_SIGNED}; Gemini models are reachable with an API key (preset gemini)",
    "vertex_ai_beta": f"{_CLOUD_SIGNED}; Gemini models are reachable with an API key (preset gemini)",
    "text-completion-openai": "legacy text completions: use the chat model through preset openai",
}

#: litellm_params that are default request parameters in LiteLLM; Lifeline forwards the client's as they came
_REQUEST_DEFAULTS = frozenset(
    {
        "temperature",
        "max_tokens",
        "max_completion_tokens",
        "top_p",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "n",
        "response_format",
        "tool_choice",
        "reasoning_effort",
        "drop_params",
    }
)

_SENSITIVE_HEADER = re.compile(r"auth|key|token|secret|cookie|password", re.I)

_STRATEGIES = {"latency-based-routing": "latency", "cost-based-routing": "cost"}


@dataclass
class Deployment:
    """One model_list entry carried over as a target."""

    index: int
    alias: str
    #: LiteLLM's provider (openai, azure, anthropic …), for the target's name
    provider: str
    embeddings: bool
    target: dict[str, Any]
    order: float
    weight: float | None


# --- model_list ------------------------------------------------------------------------------------------


def deployment(conv: Converter, index: int, entry: Any) -> Deployment | None:
    where = f"model_list[{index}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("model_name"), str):
        conv.drop(where, "no model_name")
        return None
    params = entry.get("litellm_params")
    if not isinstance(params, dict) or not isinstance(params.get("model"), str):
        conv.drop(where, "no litellm_params.model")
        return None
    raw_info = entry.get("model_info")
    info: dict[str, Any] = raw_info if isinstance(raw_info, dict) else {}
    mode = info.get("mode", "chat")
    if mode not in ("chat", "completion", "embedding"):
        conv.drop(where, f"mode {mode}: Lifeline serves chat and embeddings aliases only")
        return None
    carried = _target(conv, where, params)
    if carried is None:
        return None
    provider, target = carried
    embeddings = mode == "embedding"
    if embeddings and target.get("kind", PRESETS[target.get("preset", "openai")].kind) != "openai":
        conv.drop(where, "Lifeline embeds only over OpenAI-compatible targets")
        return None
    for key in entry:
        if key not in ("model_name", "litellm_params", "model_info"):
            conv.drop(f"{where}.{key}", "no Lifeline equivalent")
    _params(conv, where, params, target, azure=provider == "azure")
    _info(conv, where, info, target)
    order = params.get("order")
    weight = params.get("weight")
    return Deployment(
        index=index,
        alias=entry["model_name"],
        provider=provider,
        embeddings=embeddings,
        target=target,
        order=float(order) if isinstance(order, int | float) else float("inf"),
        weight=float(weight) if isinstance(weight, int | float) and weight >= 0 else None,
    )


def _split_model(model: str, provider: str | None) -> tuple[str | None, str]:
    """(provider, model id) of a LiteLLM `model`; a bare name's provider is inferred as LiteLLM would for the
    families whose owner is certain."""
    if provider:
        prefix = f"{provider}/"
        return provider, model[len(prefix) :] if model.startswith(prefix) else model
    head, sep, rest = model.partition("/")
    if sep:
        return head, rest
    if re.match(r"(gpt-|chatgpt-|o[1-9]|text-embedding-)", model):
        return "openai", model
    if model.startswith("claude-"):
        return "anthropic", model
    return None, model


def _target(conv: Converter, where: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(LiteLLM's provider, the target) of an entry's litellm_params; None (noted) when there is none."""
    custom = params.get("custom_llm_provider")
    provider, model = _split_model(params["model"], custom if isinstance(custom, str) else None)
    if provider is None:
        conv.drop(where, "the model has no provider prefix (write provider/model, e.g. openai/...)")
        return None
    api_base = conv.value(params.get("api_base"))
    if api_base is not None and not (isinstance(api_base, str) and re.match(r"(https?://|\$\{)", api_base)):
        conv.drop(where, "api_base is not an http:// or https:// URL")
        return None
    key_path = f"{where}.litellm_params.api_key"
    if provider == "azure":
        if api_base is None:
            api_base = "${AZURE_API_BASE}"  # where LiteLLM reads it from when the entry has none
        conv.differs(
            f"{where}.litellm_params.model",
            "Azure OpenAI is reached through its v1 API (api_base + /openai/v1, the deployment name as the "
            "model), which takes no api_version",
        )
        key = conv.secret(params.get("api_key", "os.environ/AZURE_API_KEY"), key_path, "AZURE_API_KEY")
        base_url = f"{api_base.rstrip('/')}/openai/v1"
        return provider, {"kind": "openai", "base_url": base_url, "api_key": key, "model": model}
    preset = _PRESET_OF.get(provider)
    if preset is None:
        why = _REFUSED.get(provider) or (
            f"provider {provider} has no Lifeline equivalent (Lifeline speaks OpenAI's, Anthropic's and Gemini's "
            "APIs); if it serves OpenAI's chat API, declare it as a kind openai target"
        )
        conv.drop(where, why)
        return None
    target: dict[str, Any] = {"preset": preset, "model": model}
    if api_base is not None and not (preset == "openai" and api_base.rstrip("/") == PRESETS["openai"].base_url):
        target["base_url"] = _base_url(preset, api_base)
        if preset == "openai":  # an OpenAI-compatible server of the user's: not OpenAI, no preset key
            target = {"kind": "openai", "base_url": target["base_url"], "model": model}
            if params.get("api_key") is None:
                conv.differs(
                    f"{where}.litellm_params.api_base",
                    "LiteLLM would send OPENAI_API_KEY to this server; Lifeline sends it no key (add api_key to "
                    "the target if it needs one)",
                )
    if params.get("api_key") is not None:
        variable = PRESETS[preset].api_key_env if preset in PRESETS and "kind" not in target else None
        target["api_key"] = conv.secret(params["api_key"], key_path, variable or _variable_for(model))
    return provider, target


def _variable_for(model: str) -> str:
    return re.sub(r"[^A-Z0-9]+", "_", model.upper()).strip("_") + "_API_KEY"


def _base_url(preset: str, api_base: str) -> str:
    """LiteLLM's api_base for a provider, as Lifeline's base_url: Ollama's without /v1 gains it; Anthropic's
    loses the /v1/messages path LiteLLM may hold."""
    url = api_base.rstrip("/")
    if preset == "ollama" and not url.endswith("/v1"):
        return f"{url}/v1"
    if preset == "anthropic":
        return re.sub(r"(/v1)?(/messages)?$", "", url)
    return url


def _params(conv: Converter, where: str, params: dict[str, Any], target: dict[str, Any], *, azure: bool) -> None:
    """Every litellm_params key besides model, api_base and api_key: carried, or noted."""
    timeouts: dict[str, Any] = {}
    for key, raw in params.items():
        path = f"{where}.litellm_params.{key}"
        value = conv.value(raw)
        if key in ("model", "api_base", "api_key", "custom_llm_provider", "order", "weight"):
            continue
        if key == "api_version" and azure:
            continue  # said with the Azure note
        if key in ("rpm", "tpm"):
            conv.drop(
                path, "Lifeline limits requests and tokens per virtual key (lifeline keys create), not per target"
            )
        elif key in ("timeout", "stream_timeout") and positive(value):
            timeouts["response" if key == "timeout" else "first_byte"] = value
        elif key == "max_retries" and isinstance(value, int) and 0 <= value <= 10:
            target["retry"] = {"max_retries": value}
        elif key in ("extra_headers", "headers") and isinstance(value, dict):
            target.setdefault("headers", {}).update(_headers(conv, path, value))
        elif key == "organization" and target.get("preset") == "openai":
            target.setdefault("headers", {})["OpenAI-Organization"] = str(value)
        elif key in ("input_cost_per_token", "output_cost_per_token"):
            _price(conv, path, key, value, target)
        elif key in _REQUEST_DEFAULTS:
            conv.drop(path, "a default request parameter; Lifeline forwards the client's parameters as they came")
        else:
            conv.drop(
                path,
                "no Lifeline equivalent"
                if key not in ("timeout", "stream_timeout", "max_retries")
                else "not a number Lifeline can use here",
            )
    if timeouts:
        target["timeouts"] = timeouts


def positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _headers(conv: Converter, path: str, headers: dict[str, Any]) -> dict[str, str]:
    out = {}
    for name, raw in headers.items():
        if _SENSITIVE_HEADER.search(str(name)):
            variable = re.sub(r"[^A-Z0-9]+", "_", str(name).upper()).strip("_")
            out[str(name)] = conv.secret(raw, f"{path}.{name}", variable) or ""
        else:
            out[str(name)] = str(conv.value(raw))
    return out


def _price(conv: Converter, path: str, key: str, value: Any, target: dict[str, Any]) -> None:
    if not isinstance(value, int | float) or value < 0:
        conv.drop(path, "not a price")
        return
    side = "input" if key.startswith("input") else "output"
    target.setdefault("price", {})[side] = round(value * 1_000_000, 6)  # USD per token → per million


def _info(conv: Converter, where: str, info: dict[str, Any], target: dict[str, Any]) -> None:
    capabilities = {
        "supports_function_calling": "tools",
        "supports_vision": "vision",
        "supports_response_schema": "json_schema",
    }
    for key, value in info.items():
        path = f"{where}.model_info.{key}"
        if key == "mode":
            continue
        if key in capabilities and isinstance(value, bool):
            target.setdefault("capabilities", {})[capabilities[key]] = value
        elif key == "max_input_tokens" and isinstance(value, int) and value > 0:
            target["context_window"] = value
        elif key in ("input_cost_per_token", "output_cost_per_token"):
            _price(conv, path, key, value, target)
        else:
            conv.drop(path, "no Lifeline equivalent")
    price = target.get("price")
    if price is not None and len(price) < 2:
        del target["price"]
        conv.drop(f"{where}: input_cost_per_token, output_cost_per_token", "a price needs both sides")


# --- aliases and fallbacks -------------------------------------------------------------------------------


def _target_names(deployments: list[Deployment]) -> dict[int, str]:
    """A readable, unique target name per deployment: the alias's name, with the provider when the alias has
    several deployments."""
    by_alias: dict[str, list[Deployment]] = {}
    for d in deployments:
        by_alias.setdefault(d.alias, []).append(d)
    names: dict[int, str] = {}
    used: set[str] = set()
    for d in deployments:
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", d.alias).strip("-") or "target"
        if len(by_alias[d.alias]) > 1:
            base += f"-{d.provider}"
        name, n = base, 1
        while name in used:
            n += 1
            name = f"{base}-{n}"
        used.add(name)
        names[d.index] = name
    return names


def build_aliases(
    conv: Converter, deployments: list[Deployment], router: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    names = _target_names(deployments)
    targets = {names[d.index]: d.target for d in deployments}
    groups: dict[str, list[Deployment]] = {}
    for d in deployments:
        group = groups.setdefault(d.alias, [])
        if group and group[0].embeddings != d.embeddings:
            conv.drop(f"model_list[{d.index}]", f"mixes chat and embedding models under {d.alias}")
            del targets[names[d.index]]
            continue
        if d.embeddings and group and group[0].target["model"] != d.target["model"]:
            conv.drop(f"model_list[{d.index}]", f"another embedding model under {d.alias}: their vectors differ")
            del targets[names[d.index]]
            continue
        group.append(d)
    strategy = router.get("routing_strategy", "simple-shuffle")
    aliases: dict[str, dict[str, Any]] = {}
    for alias, group in groups.items():
        ordered = sorted(group, key=lambda d: d.order)  # stable: file order among equals
        spec: dict[str, Any] = {"kind": "embeddings"} if group[0].embeddings else {}
        spec["targets"] = [names[d.index] for d in ordered]
        if len(group) > 1 and not any(d.order != float("inf") for d in group):
            spec["policy"] = _STRATEGIES.get(strategy, "weighted")
            weights = {names[d.index]: d.weight for d in group if d.weight is not None}
            if weights and spec["policy"] == "weighted":
                spec["weights"] = weights
        aliases[alias] = spec
    if strategy not in ("simple-shuffle", *_STRATEGIES):
        conv.drop(
            "router_settings.routing_strategy",
            f"{strategy} has no Lifeline equivalent: aliases with several deployments draw them by weight",
        )
    return targets, aliases


def _fallback_lists(
    conv: Converter, key: str, *sections: tuple[str, dict[str, Any]]
) -> Iterator[tuple[str, str, list[str]]]:
    """(path, alias, fallback aliases) of every `key` entry in the sections, `*` included."""
    for section, settings in sections:
        entries = settings.get(key)
        if entries is None:
            continue
        if not isinstance(entries, list):
            conv.drop(f"{section}.{key}", "not a list of {model: [fallbacks]}")
            continue
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                conv.drop(f"{section}.{key}[{i}]", "not a {model: [fallbacks]} mapping")
                continue
            for alias, chain in entry.items():
                chain = [chain] if isinstance(chain, str) else chain
                if isinstance(chain, list):
                    yield f"{section}.{key}[{i}].{alias}", str(alias), [str(c) for c in chain]
                else:
                    conv.drop(f"{section}.{key}[{i}].{alias}", "not a list of model names")


def add_fallbacks(
    conv: Converter, aliases: dict[str, dict[str, Any]], router: dict[str, Any], module: dict[str, Any]
) -> None:
    """Append each alias's fallbacks' own targets to its chain (general, then context-window, then
    content-policy fallbacks); `*` and litellm_settings.default_fallbacks apply to every chat alias that names
    no fallbacks of its own."""
    own = {name: list(spec["targets"]) for name, spec in aliases.items()}
    sections = (("router_settings", router), ("litellm_settings", module))
    default = module.get("default_fallbacks")
    for key in ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks"):
        chains = [c for c in _fallback_lists(conv, key, *sections)]
        wildcard = [(path, chain) for path, alias, chain in chains if alias == "*"]
        if key == "fallbacks" and isinstance(default, list):
            wildcard.append(("litellm_settings.default_fallbacks", [str(c) for c in default]))
        explicit = {alias for _, alias, _ in chains}
        for path, chain in wildcard:
            for alias, spec in aliases.items():
                if alias not in explicit and spec.get("kind") != "embeddings":
                    chains.append((path, alias, [c for c in chain if c != alias]))
        for path, alias, chain in chains:
            if alias != "*":
                _chain(conv, key, path, alias, chain, aliases, own)
    for name, spec in aliases.items():
        extra = [t for t in spec["targets"] if t not in own[name]]
        if extra and spec.get("policy") == "weighted":  # the fallbacks after every own target, in their order
            spec["weights"] = {**spec.get("weights", {}), **dict.fromkeys(extra, 0)}


def _chain(
    conv: Converter,
    key: str,
    path: str,
    alias: str,
    chain: list[str],
    aliases: dict[str, dict[str, Any]],
    own: dict[str, list[str]],
) -> None:
    spec = aliases.get(alias)
    if spec is None:
        conv.drop(path, f"{alias} is no model carried over from model_list")
        return
    for other in chain:
        _append(conv, path, spec, other, aliases, own)
    if key == "content_policy_fallbacks":
        spec["failover_on_content_filter"] = True
    elif key == "context_window_fallbacks":
        conv.differs(
            path,
            "appended to the chain: Lifeline tries them on any failover, and after a context "
            "overflow only those with a larger context_window",
        )
    if spec.get("policy") in ("latency", "cost") and chain:
        conv.differs(path, f"policy {spec['policy']} orders the fallbacks together with {alias}'s own targets")


def _append(
    conv: Converter,
    path: str,
    spec: dict[str, Any],
    other: str,
    aliases: dict[str, dict[str, Any]],
    own: dict[str, list[str]],
) -> None:
    if other not in own:
        conv.drop(f"{path}: {other}", "that model was not carried over from model_list (see above), or is not in it")
        return
    if aliases[other].get("kind") != spec.get("kind"):
        conv.drop(f"{path}: {other}", "a chat model and an embedding model cannot stand in for each other")
        return
    if spec.get("kind") == "embeddings":
        conv.drop(f"{path}: {other}", "another embedding model: its vectors are not interchangeable")
        return
    spec["targets"] += [t for t in own[other] if t not in spec["targets"]]


def add_group_aliases(conv: Converter, aliases: dict[str, dict[str, Any]], router: dict[str, Any]) -> None:
    groups = router.get("model_group_alias") or {}
    if not isinstance(groups, dict):
        conv.drop("router_settings.model_group_alias", "not a mapping")
        return
    for name, value in groups.items():
        model = value.get("model") if isinstance(value, dict) else value
        path = f"router_settings.model_group_alias.{name}"
        if not isinstance(model, str) or model not in aliases:
            conv.drop(path, "names no model carried over from model_list")
        elif name in aliases:
            conv.drop(path, f"{name} is a model_name already")
        else:
            aliases[str(name)] = copy.deepcopy(aliases[model])
            if isinstance(value, dict) and value.get("hidden"):
                conv.differs(f"{path}.hidden", "Lifeline lists every alias in /v1/models")
