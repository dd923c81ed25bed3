"""What a request needs and what a target can do, so that the router skips a target that cannot serve a
request (saying why in the attempt log) instead of failing there. Also the alias constraints (open weights
only, licences, publisher countries, self-hosted only), resolved once at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lifeline.attempts import SkipReason
from lifeline.config.schema import Alias, Capabilities, Config, Constraints, TargetMeta
from lifeline.protocol.chat import ChatCompletionRequest
from lifeline.protocol.usage import estimate_usage

#: what each kind can do when the config does not say (OpenAI-compatible servers vary: assume they can,
#: and let the upstream's own 400 say otherwise)
KIND_DEFAULTS: dict[str, Capabilities] = {
    "openai": Capabilities(tools=True, json_schema=True, vision=True, prefill=False),
    "anthropic": Capabilities(tools=True, json_schema=False, vision=True, prefill=True),
    "gemini": Capabilities(tools=True, json_schema=True, vision=True, prefill=False),
    "llamacpp": Capabilities(tools=False, json_schema=True, vision=False, prefill=True),
}


@dataclass(frozen=True, slots=True)
class TargetAbilities:
    tools: bool
    json_schema: bool
    vision: bool
    prefill: bool
    context_window: int | None


def abilities(kind: str, declared: Capabilities, context_window: int | None) -> TargetAbilities:
    base = KIND_DEFAULTS[kind]

    def pick(name: str) -> bool:
        value = getattr(declared, name)
        return bool(getattr(base, name) if value is None else value)

    return TargetAbilities(pick("tools"), pick("json_schema"), pick("vision"), pick("prefill"), context_window)


@dataclass(frozen=True, slots=True)
class Needs:
    tools: bool
    json_schema: bool
    vision: bool
    #: estimated prompt tokens plus the tokens asked for
    tokens: int


def needs_of(request: ChatCompletionRequest, body: dict[str, Any]) -> Needs:
    vision = any(
        isinstance(m.content, list) and any(p.type in ("image_url", "input_image", "image") for p in m.content)
        for m in request.messages
    )
    json_schema = request.response_format is not None and request.response_format.type == "json_schema"
    tools = bool(request.tools) or bool(body.get("functions"))
    tokens = estimate_usage(body, 0)["prompt_tokens"] + (request.token_limit or 0)
    return Needs(tools=tools, json_schema=json_schema, vision=vision, tokens=tokens)


def why_not(needs: Needs, target: TargetAbilities) -> tuple[SkipReason, str] | None:
    """None when the target can serve the request; else the reason it is skipped, with its particulars."""
    if needs.tools and not target.tools:
        return SkipReason.NO_TOOLS, ""
    if needs.json_schema and not target.json_schema:
        return SkipReason.NO_JSON_SCHEMA, ""
    if needs.vision and not target.vision:
        return SkipReason.NO_IMAGES, ""
    if target.context_window is not None and needs.tokens > target.context_window:
        return SkipReason.CONTEXT_WINDOW, f"{target.context_window} < ~{needs.tokens} tokens needed"
    return None


def excluded_by(constraints: Constraints, meta: TargetMeta, kind: str) -> str | None:
    """None when the target satisfies the alias's constraints; else why not. Unknown facts exclude: a
    constraint is a promise, and an unknown licence cannot keep it."""
    self_hosted = meta.self_hosted if meta.self_hosted is not None else kind == "llamacpp"
    if constraints.open_weights_only and meta.open_weights is not True:
        return "not known to be open weights"
    if constraints.licences is not None and (meta.licence or "").lower() not in {
        x.lower() for x in constraints.licences
    }:
        return f"licence {meta.licence or 'unknown'} not allowed"
    country = (meta.country or "").upper()
    if constraints.countries_allow is not None and country not in {c.upper() for c in constraints.countries_allow}:
        return f"publisher country {country or 'unknown'} not allowed"
    if constraints.countries_deny is not None and (
        not country or country in {c.upper() for c in constraints.countries_deny}
    ):
        return f"publisher country {country or 'unknown'} denied"
    if constraints.self_hosted_only and not self_hosted:
        return "not self-hosted"
    return None


def permitted_targets(config: Config, alias: Alias) -> tuple[list[str], dict[str, str]]:
    """The alias's targets its constraints allow, and why each other one is excluded."""
    allowed: list[str] = []
    excluded: dict[str, str] = {}
    for name in alias.targets:
        target = config.targets[name]
        reason = excluded_by(alias.constraints, target.meta, target.kind)
        if reason is None:
            allowed.append(name)
        else:
            excluded[name] = reason
    return allowed, excluded
