from __future__ import annotations

import pytest

from lifeline.accounting.pricing import BUILTIN_PRICES, PriceBook, cost_nusd
from lifeline.accounting.records import NANO, usd
from lifeline.config import parse_config
from lifeline.config.schema import Price


def test_cost_is_exact_in_nano_usd() -> None:
    # $0.15 per 1M input, $0.60 per 1M output: 1000 in + 500 out = $0.00015 + $0.0003
    assert cost_nusd(Price(input=0.15, output=0.60), 1000, 500) == 450_000
    assert usd(450_000) == 0.00045
    assert cost_nusd(Price(input=2.5, output=10), 1_000_000, 1_000_000) == 12.5 * NANO
    assert cost_nusd(None, 10, 10) == 0


def test_config_price_wins_over_the_table_and_unknown_models_cost_nothing() -> None:
    config = parse_config(
        {
            "targets": {
                "table": {"kind": "openai", "base_url": "http://x/v1", "model": "gpt-4o-mini"},
                "own": {
                    "kind": "openai",
                    "base_url": "http://x/v1",
                    "model": "gpt-4o-mini",
                    "price": {"input": 1, "output": 2},
                },
                "unknown": {"kind": "openai", "base_url": "http://x/v1", "model": "my-finetune"},
                "hosted-path": {"kind": "openai", "base_url": "http://x/v1", "model": "deepseek-ai/deepseek-chat"},
                "local": {"kind": "llamacpp"},
            },
            "aliases": {"a": {"targets": ["table", "own", "unknown", "hosted-path", "local"]}},
        },
        env={},
    )
    book = PriceBook(config)
    mini = BUILTIN_PRICES["gpt-4o-mini"]
    assert book.cost("table", 1_000_000, 0) == round(mini.input * NANO)
    assert book.cost("own", 1_000_000, 1_000_000) == 3 * NANO
    assert book.cost("unknown", 1_000_000, 1_000_000) == 0
    assert book.cost("hosted-path", 1_000_000, 0) == round(BUILTIN_PRICES["deepseek-chat"].input * NANO)
    assert book.cost("local", 1_000_000, 1_000_000) == 0
    assert book.worst_case(["table", "own", "local"], 1000, 1000) == book.cost("own", 1000, 1000)


def test_every_table_row_has_the_date_it_was_taken() -> None:
    for model, price in BUILTIN_PRICES.items():
        assert len(price.taken) == 10 and price.taken[4] == "-", model
        assert price.input >= 0 and price.output >= 0


def test_unpriced_targets_are_summed_up_in_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    """#15.24: one INFO line per unpriced target was start-up noise."""
    caplog.set_level("INFO", logger="lifeline.accounting")
    targets = {name: {"kind": "openai", "base_url": "http://x/v1", "model": f"{name}-model"} for name in "cab"}
    targets["priced"] = {"kind": "openai", "base_url": "http://x/v1", "model": "gpt-4o-mini"}
    config = parse_config({"targets": targets, "aliases": {"a": {"targets": list(targets)}}}, env={})
    PriceBook(config)
    lines = [r.getMessage() for r in caplog.records if "price" in r.getMessage()]
    assert lines == ["3 targets have no known price, so their answers cost 0: a, b, c; set `price:` in the config"]
    caplog.clear()
    PriceBook(parse_config({"targets": {"p": targets["priced"]}, "aliases": {"a": {"targets": ["p"]}}}, env={}))
    assert caplog.records == []
