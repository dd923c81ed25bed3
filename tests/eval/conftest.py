"""Eval fixtures: a config of fault-wall targets that answer deterministically well or badly, the items
they answer, and — until the report module is merged — a stand-in for `lifeline.reports` (tests only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from lifeline.config import Config
from lifeline.testing import FaultWall
from tests.conftest import make_config, wall_target

#: 1 USD per completion token, nothing for the prompt: each answer's cost is its words (the wall's tokens)
PER_TOKEN = {"input": 0.0, "output": 1_000_000.0}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


def eval_config(wall: FaultWall, **extra_targets: dict[str, Any]) -> Config:
    targets, aliases = eval_config_data(wall, **extra_targets)
    return make_config(targets, aliases)


def eval_config_data(
    wall: FaultWall, **extra_targets: dict[str, Any]
) -> tuple[dict[str, dict[str, Any]], dict[str, list[str] | dict[str, Any]]]:
    """The targets and aliases of the eval tests' config (make_config adds fast retries)."""
    targets = {
        "good": wall_target(wall, "scripted", price=PER_TOKEN),
        "jsonbreak": wall_target(wall, "scripted?json_break=2", price=PER_TOKEN),
        "notools": wall_target(wall, "scripted?tools=never", price=PER_TOKEN),
        "pricey": wall_target(wall, "scripted?latency_ms=5", price={"input": 0.0, "output": 2_000_000.0}),
        "judge-longer": wall_target(wall, "judge?prefer=longer", price={"input": 0.0, "output": 100_000.0}),
        "judge-first": wall_target(wall, "judge?prefer=first", price={"input": 0.0, "output": 100_000.0}),
        **extra_targets,
    }
    aliases: dict[str, list[str] | dict[str, Any]] = {
        "chat": ["good"],
        "judge": ["judge-longer"],
        "biased": ["judge-first"],
        "open": ["jsonbreak", "notools"],
    }
    return targets, aliases


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


#: four items: plain text with a reference, a json_schema answer, a json_object answer, a tool call
ITEMS: list[dict[str, Any]] = [
    {"id": "capital", "request": {"messages": user("Capital of France? SAY: Paris")},
     "reference": {"answer": "paris", "match": "normalised"}},
    {"id": "schema", "request": {"messages": user('Give a. SAY: {"a": 1}'), "response_format":
     {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}}}},
    {"id": "object", "request": {"messages": user('Give b. SAY: {"b": 2}'),
     "response_format": {"type": "json_object"}}},
    {"id": "weather", "request": {"messages": user("Weather in Paris?"), "tools": [WEATHER]}},
]  # fmt: skip


def write_items(path: Path, items: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"\n".join(orjson.dumps(i) for i in items) + b"\n")
    return path


@pytest.fixture
def items_file(tmp_path: Path) -> Path:
    return write_items(tmp_path / "items.jsonl", ITEMS)
