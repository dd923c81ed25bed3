"""Audit fixtures: fault-wall targets answering the built-in suite in scripted styles (docs/fault-wall.md)."""

from __future__ import annotations

from typing import Any

from lifeline.config import Config
from lifeline.testing import FaultWall
from tests.conftest import make_config, wall_target

#: 1 USD per completion token: each scripted answer costs its words
PER_TOKEN = {"input": 0.0, "output": 1_000_000.0}


def audit_targets(wall: FaultWall) -> dict[str, dict[str, Any]]:
    return {
        "censor": wall_target(wall, "speech?style=censor"),
        "steer": wall_target(wall, "speech?style=steer"),
        "open": wall_target(wall, "speech?style=open"),
        "refuse": wall_target(wall, "speech?style=refuse"),
        "judge": wall_target(wall, "speech?style=judge"),
        "pricey": wall_target(wall, "speech?style=open", price=PER_TOKEN),
        "dear-judge": wall_target(wall, "speech?style=judge", price=PER_TOKEN),
    }


def audit_config(wall: FaultWall, **aliases: Any) -> Config:
    return make_config(
        audit_targets(wall), {"chat": ["open"], "judge": ["judge"], "dear-judge": ["dear-judge"], **aliases}
    )
