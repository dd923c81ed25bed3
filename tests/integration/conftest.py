"""What the router waits before a retry, as it asks for it: tests assert on these waits (events with their
length) instead of timing the gaps between attempts, which a busy machine stretches."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import lifeline.routing.router


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
