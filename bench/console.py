"""How fast the console's overview data endpoint answers with 100 targets and a ledger of 1M rows.

    python bench/console.py [--rows 1000000] [--targets 100] [--calls 200]

Builds a SQLite ledger of `--rows` rows spread over the last 30 days (an even share of them in the last hour,
which the sparklines read), starts the app in process over `--targets` targets, logs in, and times
`GET /ui/data/overview` `--calls` times through httpx's ASGI transport (the HTTP server is not in the
figure). Prints min, median, p95 and max in milliseconds. Not a test: tests never time anything.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from typing import Any

import httpx

from lifeline.config import parse_config
from lifeline.server.app import create_app

MASTER = "mk-bench-console-0123456789"


def config(targets: int, data_dir: str) -> Any:
    names = [f"t{i:03d}" for i in range(targets)]
    spec = {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
    return parse_config(
        {
            "targets": dict.fromkeys(names, spec),
            "aliases": {f"a{i}": {"targets": names[i : i + 3] or names[:1]} for i in range(0, targets, 3)},
            "admin": {"master_key": MASTER},
            "accounting": {"data_dir": data_dir},
        },
        env={},
    )


def fill(db: Any, rows: int, targets: int) -> None:
    now = time.time()
    span = 30 * 86400.0
    batch: list[tuple[Any, ...]] = []
    sql = (
        "INSERT INTO ledger (id, request_id, key_id, alias, target, model, outcome, status, attempts, prompt_tokens, "
        "completion_tokens, usage_estimated, cost_nusd, ttft_ms, latency_ms, streamed, started_at, finished_at) "
        "VALUES (?, ?, NULL, ?, ?, 'm', ?, 200, '[]', 10, 20, 0, 1000, 50.0, 80.0, 0, ?, ?)"
    )
    for i in range(rows):
        started = now - span * (i / rows)
        outcome = "error" if i % 50 == 0 else "ok"
        batch.append(
            (
                uuid.uuid4().hex,
                f"req-{i}",
                f"a{(i % targets) // 3 * 3}",
                f"t{i % targets:03d}",
                outcome,
                started,
                started + 0.08,
            )
        )
        if len(batch) == 50_000:
            db.executemany(sql, batch)
            batch.clear()
    if batch:
        db.executemany(sql, batch)


async def main(rows: int, targets: int, calls: int) -> None:
    data_dir = tempfile.mkdtemp(prefix="lifeline-bench-console-")
    app = create_app(config(targets, data_dir))
    gateway = app.state.gateway
    await gateway.start()
    try:
        db = gateway.accounting.open_db()
        began = time.perf_counter()
        await asyncio.to_thread(fill, db, rows, targets)
        db.close()
        print(f"ledger: {rows} rows written in {time.perf_counter() - began:.1f} s")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:4000") as client:
            await client.post("/ui/login", data={"master_key": MASTER})
            first = await client.get("/ui/data/overview")
            assert first.status_code == 200 and len(first.json()["targets"]) == targets
            assert sum(first.json()["sparks"]["requests"]) > 0
            times = []
            for _ in range(calls):
                start = time.perf_counter()
                response = await client.get("/ui/data/overview")
                times.append((time.perf_counter() - start) * 1000)
                assert response.status_code == 200
        times.sort()
        p95 = times[int(len(times) * 0.95) - 1]
        print(
            f"GET /ui/data/overview, {targets} targets, {rows} ledger rows, {calls} calls: "
            f"min {times[0]:.1f} ms, median {statistics.median(times):.1f} ms, p95 {p95:.1f} ms, max {times[-1]:.1f} ms"
        )
    finally:
        await gateway.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--targets", type=int, default=100)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.rows, args.targets, args.calls))
