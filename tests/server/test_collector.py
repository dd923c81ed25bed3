"""Once started, `lifeline serve` leaves the objects of starting to the collector's permanent generation
(server/serving.py `freeze_startup_objects`), so that no later collection walks them again."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from lifeline.config import load_config
from lifeline.providers.registry import ProviderRegistry
from lifeline.server.app import create_app
from tests.server.fakes import FakeProvider, make_config


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """The test process's collector with nothing frozen, before and after (a frozen test is never freed)."""
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()


def collected(obj: object) -> bool:
    """Whether the collector's generations (not the permanent one) hold `obj`."""
    return any(o is obj for o in gc.get_objects())


def start(freeze: bool) -> tuple[int, bool, bool]:
    """The app started as `lifeline serve` starts it (its lifespan): the freeze count once started, and
    whether its gateway was in the collector's generations before and after starting."""
    registry = ProviderRegistry()
    registry.register("openai", lambda name, target: FakeProvider(name, target.model))
    app = create_app(make_config("m1"), registry, freeze=freeze)
    gateway: Any = app.state.gateway
    before = collected(gateway)

    async def main() -> tuple[int, bool]:
        async with app.router.lifespan_context(app):
            return gc.get_freeze_count(), collected(gateway)

    count, after = asyncio.run(main())
    return count, before, after


def test_a_started_app_freezes_what_starting_left_alive(unfrozen: None) -> None:
    count, before, after = start(freeze=True)
    assert count > 0
    assert before and not after  # the gateway went to the permanent generation


def test_an_app_not_asked_to_freeze_leaves_the_collector_as_it_was(unfrozen: None) -> None:
    count, before, after = start(freeze=False)
    assert count == 0
    assert before and after


def test_a_reload_frees_the_replaced_gateway_and_freezes_again_once_it_has_closed(
    unfrozen: None, tmp_path: Path
) -> None:
    """The first gateway was frozen with the objects of starting; once a reload has replaced it and it has
    closed, what it held in reference cycles is freed (not kept in the permanent generation for good) and
    the objects serving now are frozen again."""
    path = tmp_path / "lifeline.yaml"
    path.write_bytes(orjson.dumps(make_config("m1").model_dump(mode="json", exclude_defaults=True)))
    registry = ProviderRegistry()
    registry.register("openai", lambda name, target: FakeProvider(name, target.model))
    app = create_app(load_config(path), registry, config_path=path, freeze=True)
    first = weakref.ref(app.state.gateway)

    async def main() -> tuple[bool, bool, int]:
        async with app.router.lifespan_context(app):
            reloader = app.state.reloader
            await reloader.reload()
            while reloader._retiring:
                await asyncio.sleep(0.05)
            for _ in range(3):  # the turn of the loop that freezes again
                await asyncio.sleep(0)
            return first() is None, collected(app.state.gateway), gc.get_freeze_count()

    freed, new_collected, count = asyncio.run(main())
    assert freed
    assert not new_collected and count > 0
