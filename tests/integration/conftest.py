"""What the router waits before a retry, as it asks for it: tests assert on these waits (events with their
length) instead of timing the gaps between attempts, which a busy machine stretches. And a gateway with
authentication on and one virtual key scoped to some of its aliases."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import lifeline.routing.router
from lifeline.testing import FaultWall
from lifeline.testing.gateway import RunningGateway
from tests.conftest import GatewayFactory, make_config, wall_target

MASTER = "mk-test-master-key-0123456789"


class _RecordingAsyncio:
    """The asyncio module as the router sees it, with `sleep` recorded (and still waited)."""

    def __init__(self, waits: list[float]) -> None:
        self._waits = waits

    async def sleep(self, delay: float, result: Any = None) -> Any:
        self._waits.append(delay)
        return await asyncio.sleep(delay, result)

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)


@pytest.fixture
def router_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every wait the router asks for between attempts (backoff, Retry-After), in order."""
    waits: list[float] = []
    monkeypatch.setattr(lifeline.routing.router, "asyncio", _RecordingAsyncio(waits))
    return waits


@dataclass(frozen=True)
class KeyedGateway:
    gw: RunningGateway
    secret: str  #: a virtual key that may use the alias "chat" but not "other" (both served by the wall's `ok`)


@pytest.fixture
def keyed_gateway(wall: FaultWall, gateway: GatewayFactory, tmp_path: Path) -> Iterator[KeyedGateway]:
    """A running gateway with authentication on and one virtual key scoped to the alias "chat"."""
    config = make_config(
        {"wall": wall_target(wall, "ok")},
        {"chat": ["wall"], "other": ["wall"]},
        admin={"master_key": MASTER},
        auth={"enabled": True},
        accounting={"data_dir": str(tmp_path)},
    )
    headers = {"authorization": f"Bearer {MASTER}"}
    with gateway(config) as gw, httpx.Client(base_url=f"{gw.url}/admin", headers=headers) as admin:
        secret = admin.post("/keys", json={"name": "a", "aliases": ["chat"]}).json()["secret"]
        yield KeyedGateway(gw, secret)
