"""Prices and cost: USD per one million input and output tokens, per target.

A target's `price` in the config wins; otherwise the built-in table below is looked up by the target's
model id. Each row says when it was taken from the provider's price page: prices change, so check them and
set `price:` in your config for anything that matters. A target with no known price costs nothing; the
unpriced targets are listed in one log line at start-up. Costs are integers in nano-USD, so sums and
budgets are exact.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from lifeline.config.schema import Config, Price

log = logging.getLogger("lifeline.accounting")


@dataclass(frozen=True, slots=True)
class TablePrice:
    input: float
    output: float
    taken: str  # the date the row was read off the provider's price page


#: model id → price (USD per 1M tokens, standard tier, no caching or batch discounts)
BUILTIN_PRICES: dict[str, TablePrice] = {
    "gpt-4o": TablePrice(2.50, 10.00, "2025-06-01"),
    "gpt-4o-mini": TablePrice(0.15, 0.60, "2025-06-01"),
    "gpt-4.1": TablePrice(2.00, 8.00, "2025-06-01"),
    "gpt-4.1-mini": TablePrice(0.40, 1.60, "2025-06-01"),
    "gpt-4.1-nano": TablePrice(0.10, 0.40, "2025-06-01"),
    "o3-mini": TablePrice(1.10, 4.40, "2025-06-01"),
    "deepseek-chat": TablePrice(0.27, 1.10, "2025-06-01"),
    "deepseek-reasoner": TablePrice(0.55, 2.19, "2025-06-01"),
    "qwen-max": TablePrice(1.60, 6.40, "2025-06-01"),
    "qwen-plus": TablePrice(0.40, 1.20, "2025-06-01"),
    "qwen-turbo": TablePrice(0.05, 0.20, "2025-06-01"),
    "glm-4-plus": TablePrice(0.70, 0.70, "2025-06-01"),
    "moonshot-v1-8k": TablePrice(1.65, 1.65, "2025-06-01"),
    "mistral-large-latest": TablePrice(2.00, 6.00, "2025-06-01"),
    "mistral-small-latest": TablePrice(0.10, 0.30, "2025-06-01"),
    "llama-3.3-70b-versatile": TablePrice(0.59, 0.79, "2025-06-01"),
}


def cost_nusd(price: Price | TablePrice | None, prompt_tokens: int, completion_tokens: int) -> int:
    """Cost in nano-USD: USD per 1M tokens is nano-USD per 1000th of a token, hence the factor 1000."""
    if price is None:
        return 0
    return round(price.input * prompt_tokens * 1000 + price.output * completion_tokens * 1000)


class PriceBook:
    """Each target's price, resolved once at start-up."""

    def __init__(self, config: Config) -> None:
        self._prices: dict[str, Price | TablePrice | None] = {}
        for name, target in config.targets.items():
            price: Price | TablePrice | None = target.price
            if price is None:
                model = getattr(target, "model", "")
                price = BUILTIN_PRICES.get(model) or BUILTIN_PRICES.get(model.rsplit("/", 1)[-1])
            self._prices[name] = price
        unpriced = sorted(name for name, price in self._prices.items() if price is None)
        if unpriced:  # one line for all of them: a catalogue config can have dozens
            log.info(
                "%d target%s no known price, so their answers cost 0: %s; set `price:` in the config",
                len(unpriced),
                "s have" if len(unpriced) > 1 else " has",
                ", ".join(unpriced),
            )

    def price(self, target: str) -> Price | TablePrice | None:
        return self._prices.get(target)

    def cost(self, target: str | None, prompt_tokens: int, completion_tokens: int) -> int:
        return cost_nusd(self._prices.get(target) if target else None, prompt_tokens, completion_tokens)

    def worst_case(self, targets: list[str], prompt_tokens: int, completion_tokens: int) -> int:
        """The most any of these targets could charge: what a budget reserves before the call."""
        return max((self.cost(t, prompt_tokens, completion_tokens) for t in targets), default=0)
