"""What a request needs and what a target can do, so that the router skips a target that cannot serve a
request (saying why in the attempt log) instead of failing there. (The alias constraints — open weights
only, licences, publisher countries, self-hosted only — are the config's: `Config.permitted_targets`.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lifeline.attempts import SkipReason
from lifeline.config.schema import Capabilities
from lifeline.protocol.chat import ChatCompletionRequest
from lifeline.protocol.usage import estimate_usage

#: what each kind can do when the config does not say (OpenAI-compatible servers vary: assume they can,
#: and let the upstream's own 400 say otherwise). Prefill None: unknown — an OpenAI-compatible server is
#: asked to continue a broken stream, and its refusal (a 400) is remembered (`Health.refuse_prefill`).
KIND_DEFAULTS: dict[str, Capabilities] = {
    "openai": Capabilities(tools=True, json_schema=True, vision=True, prefill=None),
    "anthropic": Capabilities(tools=True, json_schema=False, vision=True, prefill=True),
    "gemini": Capabilities(tools=True, json_schema=True, vision=True, prefill=False),
    "llamacpp": Capabilities(tools=True, json_schema=True, vision=False, prefill=True),
}


@dataclass(frozen=True, slots=True)
class TargetAbilities:
    tools: bool
    json_schema: bool
    vision: bool
    #: continuing an assistant prefix: True yes, False no, None unknown (tried, and learnt from its answer)
    prefill: bool | None
    context_window: int | None
    #: the built-in Responses tools the target runs (a native Responses target's `responses_tools`)
    builtin_tools: frozenset[str] = frozenset()


def abilities(
    kind: str, declared: Capabilities, context_window: int | None, builtin_tools: frozenset[str] = frozenset()
) -> TargetAbilities:
    base = KIND_DEFAULTS[kind]

    def pick(name: str) -> bool:
        value = getattr(declared, name)
        return bool(getattr(base, name) if value is None else value)

    prefill = base.prefill if declared.prefill is None else declared.prefill
    return TargetAbilities(pick("tools"), pick("json_schema"), pick("vision"), prefill, context_window, builtin_tools)


@dataclass(frozen=True, slots=True)
class Needs:
    tools: bool
    json_schema: bool
    vision: bool
    #: estimated prompt tokens plus the tokens asked for
    tokens: int
    #: the built-in tools a Responses request offers (web_search …), which only native targets run
    builtin_tools: frozenset[str] = frozenset()


def needs_of(request: ChatCompletionRequest, body: dict[str, Any], responses: dict[str, Any] | None = None) -> Needs:
    """What a chat request needs; `responses`, a Responses request's own body (ChatCall.responses), adds the
    built-in tools it offers."""
    vision = any(
        isinstance(m.content, list) and any(p.type in ("image_url", "input_image", "image") for p in m.content)
        for m in request.messages
    )
    json_schema = request.response_format is not None and request.response_format.type == "json_schema"
    tools = bool(request.tools) or bool(body.get("functions"))
    tokens = estimate_usage(body, 0)["prompt_tokens"] + (request.token_limit or 0)
    builtin = builtin_tools_of(responses) if responses is not None else frozenset()
    return Needs(tools=tools, json_schema=json_schema, vision=vision, tokens=tokens, builtin_tools=builtin)


def builtin_tools_of(responses: dict[str, Any]) -> frozenset[str]:
    """The types of the tools in a Responses body that are not function tools: the API's built-in ones."""
    tools = responses.get("tools")
    return frozenset(str(t.get("type")) for t in (tools if isinstance(tools, list) else []) if isinstance(t, dict)) - {
        "function"
    }


def why_not(needs: Needs, target: TargetAbilities) -> tuple[SkipReason, str] | None:
    """None when the target can serve the request; else the reason it is skipped, with its particulars."""
    if needs.builtin_tools and not needs.builtin_tools <= target.builtin_tools:
        return SkipReason.NO_BUILTIN_TOOLS, ", ".join(sorted(needs.builtin_tools - target.builtin_tools))
    if needs.tools and not target.tools:
        return SkipReason.NO_TOOLS, ""
    if needs.json_schema and not target.json_schema:
        return SkipReason.NO_JSON_SCHEMA, ""
    if needs.vision and not target.vision:
        return SkipReason.NO_IMAGES, ""
    if target.context_window is not None and needs.tokens > target.context_window:
        return SkipReason.CONTEXT_WINDOW, f"{target.context_window} < ~{needs.tokens} tokens needed"
    return None
