"""Per-request fallbacks as the clients of other gateways send them: OpenRouter's `models` and LiteLLM's
`fallbacks` name further aliases to try, in order, when the requested one cannot answer.

`take_fallbacks` reads the field off the client's body once, before the body is validated: the field is
removed (it is never passed upstream), and a body that names no `model` asks for the first name of the list,
as OpenRouter allows. Duplicates and the requested alias itself are dropped. Whether each name is a known
alias of the right kind is the router's to say; whether the key may use it, the exchange's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lifeline.errors import InvalidRequest

#: the most names a request's list may hold (OpenRouter allows three; one more leaves room for the
#: requested model itself when `model` is omitted)
MAX_FALLBACKS = 4
#: OpenRouter's field and LiteLLM's
FIELDS = ("models", "fallbacks")


@dataclass(frozen=True, slots=True)
class Fallbacks:
    """The further aliases a request named, in order, and the body's field that named them (for errors)."""

    field: str = ""
    names: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.names)


#: a request that names none (most)
NO_FALLBACKS = Fallbacks()


def take_fallbacks(body: dict[str, Any]) -> Fallbacks:
    """The fallbacks `body` names, removed from it (a `model` filled in from them when it has none)."""
    if "models" not in body and "fallbacks" not in body:  # the hot path: one look per field, nothing built
        return NO_FALLBACKS
    present = [f for f in FIELDS if f in body]
    if len(present) > 1:
        raise InvalidRequest(
            "Send either 'models' (OpenRouter's fallbacks) or 'fallbacks' (LiteLLM's), not both.", param="fallbacks"
        )
    field = present[0]
    raw = body.pop(field)
    if raw is None:
        return Fallbacks(field)
    if not isinstance(raw, list):
        raise InvalidRequest(f"'{field}' must be a list of model names.", param=field)
    if len(raw) > MAX_FALLBACKS:
        raise InvalidRequest(f"'{field}' may name at most {MAX_FALLBACKS} models; it names {len(raw)}.", param=field)
    names = [_name(entry, field) for entry in raw]
    if body.get("model") is None and names:
        body["model"] = names[0]
    requested = body.get("model")
    return Fallbacks(field, tuple(n for n in dict.fromkeys(names) if n != requested))


def _name(entry: Any, field: str) -> str:
    """One entry: a model name, or {"model": name} (the shape OpenRouter's Messages API and LiteLLM's SDK use)."""
    if isinstance(entry, dict):
        if set(entry) != {"model"}:
            raise InvalidRequest(
                f"Each entry of '{field}' is a model name or {{\"model\": name}}; per-fallback overrides "
                f"({', '.join(sorted(k for k in entry if k != 'model')) or 'no model'}) are not supported.",
                param=field,
            )
        entry = entry["model"]
    if not isinstance(entry, str) or not entry:
        raise InvalidRequest(f"Each entry of '{field}' must be a model name (a non-empty string).", param=field)
    return entry
