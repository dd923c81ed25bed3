"""SIGTERM under load: the gateway, a real `lifeline serve` process, finishes what it accepted and the ledger
holds a record for every answer a client received."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from lifeline.testing import FaultWall


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_sigterm_under_load_loses_no_ledger_record(wall: FaultWall, tmp_path: Path) -> None:
    port = free_port()
    config = {
        "server": {"port": port, "log_level": "warning"},
        "accounting": {"data_dir": str(tmp_path), "ledger": {"commit_interval": 2.0}},
        "targets": {"slow": {"kind": "openai", "base_url": wall.base_url, "model": "ok?latency_ms=300"}},
        "aliases": {"chat": {"targets": ["slow"]}},
    }
    path = tmp_path / "lifeline.yaml"
    path.write_text(yaml.safe_dump(config))
    process = subprocess.Popen(
        [sys.executable, "-m", "lifeline.cli.main", "serve", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the gateway did not start"
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            time.sleep(0.1)

        async def load() -> list[int]:
            async with httpx.AsyncClient(timeout=30) as client:

                async def one() -> int:
                    try:
                        response = await client.post(
                            f"http://127.0.0.1:{port}/v1/chat/completions",
                            json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
                        )
                        return response.status_code
                    except httpx.TransportError:
                        return 0

                tasks = [asyncio.create_task(one()) for _ in range(40)]
                await asyncio.sleep(0.15)  # every request is in flight, waiting on the slow upstream
                process.send_signal(signal.SIGTERM)
                return list(await asyncio.gather(*tasks))

        statuses = asyncio.run(load())
        # uvicorn re-raises the SIGTERM it handled once shutdown is complete
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
    answered = statuses.count(200)
    assert answered >= 1
    # commit_interval is 2 s and the process exited well within it: only the drain on SIGTERM wrote these
    rows = (
        sqlite3.connect(tmp_path / "lifeline.db")
        .execute("SELECT count(*) FROM ledger WHERE status = 200")
        .fetchone()[0]
    )
    assert rows == answered
