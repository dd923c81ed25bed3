"""What a reload carries from the old gateway to the new one."""

from __future__ import annotations

from typing import Any

from lifeline.config import parse_config
from lifeline.server.gateway import Gateway
from lifeline.server.reload import carry_over


def build(**targets: dict[str, Any]) -> Gateway:
    config = parse_config({"targets": targets, "aliases": {"chat": {"targets": list(targets)}}}, env={})
    return Gateway.build(config)


def test_a_refused_prefix_is_remembered_across_a_reload_while_the_target_is_unchanged() -> None:
    same = {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
    old = build(kept=same, changed=same, dropped=same)
    for target in ("kept", "changed", "dropped"):
        old.health.refuse_prefill(target)
    new = build(kept=same, changed={**same, "base_url": "http://127.0.0.1:9/beta"})
    carry_over(old, new)
    assert new.health.prefill_support("kept") is False
    assert new.health.prefill_support("changed") is None  # its settings changed: unknown again
    assert new.health.prefill_refused == {"kept"}
