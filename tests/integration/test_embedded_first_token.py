"""The embedded engine takes the alias's first-token failover limit like an HTTP target: a first token later
than the limit — the engine busy with another request, or its own generation not started — fails over when
another target remains, and the last target of a chain is not cut short. The engine is held by a gate the
test opens (its generation blocks until then), so nothing depends on how fast this machine is."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from lifeline.providers.llamacpp import LlamaCppProvider
from lifeline.testing import FaultWall, wall_text
from lifeline.testing.gateway import RunningGateway
from tests.conftest import GatewayFactory, make_config, wall_target
from tests.integration.test_continuity_defaults import ledger_attempts
from tests.integration.test_embedded import HELLO, local_target, provider, wait_until_idle

pytestmark = pytest.mark.embedded


class Gate:
    """Every generation of the engine waits at the gate until the test opens it."""

    def __init__(self, engine: LlamaCppProvider) -> None:
        self.open = threading.Event()
        self.entered = threading.Semaphore(0)
        generate = engine._llm.create_chat_completion

        def gated(**kwargs: Any) -> Iterator[Any]:
            self.entered.release()
            assert self.open.wait(60), "the test never opened the gate"
            yield from generate(**kwargs)

        engine._llm.create_chat_completion = gated

    def wait_entered(self) -> None:
        assert self.entered.acquire(timeout=60), "no generation reached the engine"


def config(wall: FaultWall, tmp_path: Path, backup: str) -> Any:
    return make_config(
        {"local": local_target(), "backup": wall_target(wall, backup), "down": wall_target(wall, "status?code=503")},
        {
            "chat": {"targets": ["local", "backup"], "first_token_failover_ms": 50},
            "local": {"targets": ["local"], "first_token_failover_ms": 50},
            "last": {"targets": ["down", "local"], "first_token_failover_ms": 1},
        },
        accounting={"data_dir": str(tmp_path)},
    )


def stream(gw: RunningGateway, alias: str) -> tuple[str, str]:
    """The streamed text and the target that answered. A 20-second deadline: far less than the engine's
    default ttft (30 s), so only the alias's first-token limit answers in time."""
    body = {"model": alias, "messages": HELLO, "max_tokens": 4, "stream": True}
    headers = {"x-lifeline-timeout": "20"}
    with httpx.stream("POST", f"{gw.base_url}/chat/completions", json=body, headers=headers, timeout=60) as r:
        assert r.status_code == 200, r.read()
        events = [orjson.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
        target = r.headers["x-lifeline-target"]
    assert not any("error" in e for e in events), events
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices"))
    return text, target


def test_a_busy_engine_fails_over_at_the_alias_limit(wall: FaultWall, gateway: GatewayFactory, tmp_path: Path) -> None:
    with gateway(config(wall, tmp_path, "ok?t=busy")) as gw, ThreadPoolExecutor(1) as pool:
        engine = provider(gw)
        gate = Gate(engine)
        holder = pool.submit(stream, gw, "local")  # the engine's only target: it waits as long as it takes
        gate.wait_entered()
        text, target = stream(gw, "chat")
        gate.open.set()
        held_text, held_by = holder.result(timeout=60)
        wait_until_idle(engine)
        attempts = ledger_attempts(gw, 2)
    assert (text, target) == (wall_text(4), "backup")
    assert held_by == "local" and held_text
    assert sorted(attempts) == [[("local", "ok")], [("local", "overloaded"), ("backup", "ok")]]
    assert len(wall.attempts_for("ok?t=busy")) == 1


def test_a_late_first_token_fails_over_without_waiting_for_the_engine(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    with gateway(config(wall, tmp_path, "ok?t=late")) as gw:
        engine = provider(gw)
        gate = Gate(engine)
        # the engine starts this request's generation and is stuck in it: its first token is late
        text, target = stream(gw, "chat")
        gate.wait_entered()
        assert engine._admitted == 1  # the abandoned generation holds the engine until it stops
        gate.open.set()
        wait_until_idle(engine)
        # the engine is free again and answers its own alias
        gate.open.clear()
        with ThreadPoolExecutor(1) as pool:
            after = pool.submit(stream, gw, "last")
            gate.wait_entered()
            time.sleep(0.2)  # longer than the alias's 1 ms: the last target still gets its answer
            gate.open.set()
            last_text, last_by = after.result(timeout=60)
        attempts = ledger_attempts(gw, 2)
    assert (text, target) == (wall_text(4), "backup")
    assert last_by == "local" and last_text
    assert attempts[0] == [("local", "silent"), ("backup", "ok")]
    assert attempts[1][-1] == ("local", "ok")
    assert attempts[1][0][0] == "down"
