"""SIGTERM under load: the gateway, a real `lifeline serve` process, finishes what it accepted and the ledger
holds a record for every answer a client received."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path

import httpx

from lifeline.testing import FaultWall
from tests.integration.processes import replica


def test_sigterm_under_load_loses_no_ledger_record(wall: FaultWall, tmp_path: Path) -> None:
    config = {
        "accounting": {"data_dir": str(tmp_path), "ledger": {"commit_interval": 2.0}},
        "targets": {"slow": {"kind": "openai", "base_url": wall.base_url, "model": "ok?latency_ms=300"}},
        "aliases": {"chat": {"targets": ["slow"]}},
    }
    with replica(config, tmp_path) as gateway:

        async def load() -> list[int]:
            async with httpx.AsyncClient(timeout=30) as client:

                async def one() -> int:
                    try:
                        response = await client.post(
                            f"{gateway.base_url}/chat/completions",
                            json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
                        )
                        return response.status_code
                    except httpx.TransportError:
                        return 0

                tasks = [asyncio.create_task(one()) for _ in range(40)]
                await asyncio.sleep(0.15)  # every request is in flight, waiting on the slow upstream
                gateway.process.send_signal(signal.SIGTERM)
                return list(await asyncio.gather(*tasks))

        statuses = asyncio.run(load())
        # uvicorn re-raises the SIGTERM it handled once its shutdown is complete
        assert gateway.process.wait(timeout=30) in (0, -signal.SIGTERM)
    answered = statuses.count(200)
    assert answered >= 1
    # commit_interval is 2 s and the process exited well within it: only the drain on SIGTERM wrote these
    rows = sqlite3.connect(tmp_path / "lifeline.db").execute("SELECT count(*) FROM ledger WHERE status = 200")
    assert rows.fetchone()[0] == answered
