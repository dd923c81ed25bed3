"""Shared fixtures: a fault wall on loopback, configs with fast timeouts, and a real gateway server."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest

from lifeline.config import Config, parse_config
from lifeline.testing import FaultWall
from lifeline.testing.gateway import RunningGateway, run_gateway

# Real PostgreSQL and Redis servers, a headless Chromium and Node.js with the openai npm package, set up on demand
# for the tests that ask for them.
pytest_plugins = ["tests.fixtures.postgres", "tests.fixtures.redis", "tests.fixtures.browser", "tests.fixtures.node"]

# Every gateway a test starts keeps its SQLite ledger in a throw-away directory, never in the home directory.
os.environ["LIFELINE_DATA_DIR"] = tempfile.mkdtemp(prefix="lifeline-test-data-")

#: the upstream key used in tests; it must never appear in a response or a log
UPSTREAM_KEY = "sk-test-upstream-secret-0123456789"

FAST_TIMEOUTS = {"connect": 1.0, "first_byte": 1.0, "response": 2.0, "ttft": 1.0, "idle": 1.0}
FAST_RETRY = {
    "max_retries": 2,
    "rate_limit_retries": 1,
    "backoff_base": 0.05,
    "backoff_max": 0.2,
    "retry_after_cap": 2.0,
}


@pytest.fixture(scope="session")
def wall_server() -> Iterator[FaultWall]:
    with FaultWall().running() as wall:
        yield wall


@pytest.fixture
def wall(wall_server: FaultWall) -> FaultWall:
    wall_server.reset()
    return wall_server


def wall_target(wall: FaultWall, model: str, **extra: Any) -> dict[str, Any]:
    """A target of kind openai pointed at the fault wall; `model` picks the wall's behaviour."""
    timeouts = {**FAST_TIMEOUTS, **extra.pop("timeouts", {})}
    return {
        "kind": "openai",
        "base_url": wall.base_url,
        "api_key": UPSTREAM_KEY,
        "model": model,
        "timeouts": timeouts,
        **extra,
    }


def make_config(
    targets: dict[str, dict[str, Any]],
    aliases: dict[str, list[str] | dict[str, Any]] | None = None,
    **sections: Any,
) -> Config:
    """A config with fast retry and circuit settings; `aliases` defaults to one alias `chat` over all
    targets in order."""
    alias_specs = aliases or {"chat": list(targets)}
    data: dict[str, Any] = {
        "targets": targets,
        "aliases": {k: (v if isinstance(v, dict) else {"targets": v}) for k, v in alias_specs.items()},
        "retry": {**FAST_RETRY, **sections.pop("retry", {})},
        "circuit": {"failure_threshold": 5, "cooldown": 30, "cutoff_cooldown": 600, **sections.pop("circuit", {})},
        **sections,
    }
    return parse_config(data, env={})


GatewayFactory = Callable[[Config], AbstractContextManager[RunningGateway]]


@pytest.fixture
def gateway() -> GatewayFactory:
    """`with gateway(config) as gw:` — a real Lifeline server on 127.0.0.1; gw.base_url for clients."""
    return run_gateway
