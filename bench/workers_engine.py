"""The engine process of `lifeline serve --workers 2` across a reload, and the cost of its metrics.

    python bench/workers_engine.py [--scrapes 50]

Starts `lifeline serve --workers 2` with one `llamacpp` target (the shipped SmolLM2), reads the PSS of the
engine process and of each worker from /proc, times `--scrapes` scrapes of /metrics (every worker's samples and
the engine process's), then reloads (SIGHUP) a file that adds a second target on the same model file with
another context size and reports how long until both workers serve it and the PSS afterwards. Prints one JSON
line. Not a test; the machine's other load shows in every figure.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from procs import Proc, free_port

LOCAL = {"kind": "llamacpp", "model": "builtin:smollm2", "n_ctx": 512, "n_threads": 1}


def pss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


def processes(supervisor: int) -> dict[str, list[float]]:
    """PSS (MB) of the engine process and of each worker, by what each runs."""
    tasks = Path(f"/proc/{supervisor}/task")
    children = [int(pid) for task in tasks.iterdir() for pid in (task / "children").read_text().split()]
    found: dict[str, list[float]] = {"engine": [], "workers": []}
    for pid in children:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"engine_process" in command:
            found["engine"].append(round(pss_mb(pid), 1))
        elif b"spawn_main" in command:
            found["workers"].append(round(pss_mb(pid), 1))
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scrapes", type=int, default=50)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="bench-workers-engine-"))
    port = free_port()
    config: dict[str, Any] = {
        "server": {"port": port, "log_level": "info"},
        "targets": {"local": LOCAL},
        "aliases": {"chat": {"targets": ["local"]}},
    }
    path = directory / "lifeline.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "lifeline.cli.main", "serve", "--config", str(path), "--workers", "2"]
    proc = Proc("gateway", command, directory / "gateway.log").start()
    url = f"http://127.0.0.1:{port}"
    result: dict[str, Any] = {}
    try:
        for _ in range(1200):
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        time.sleep(3)  # both workers up
        result["pss_before"] = processes(proc.pid)
        started = time.perf_counter()
        for _ in range(args.scrapes):
            httpx.get(f"{url}/metrics")
        result["scrape_ms"] = round((time.perf_counter() - started) / args.scrapes * 1000, 2)
        config["targets"]["small"] = {**LOCAL, "n_ctx": 256}
        config["aliases"]["small"] = {"targets": ["small"]}
        path.write_text(yaml.safe_dump(config))
        started = time.perf_counter()
        proc.popen.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        serving: set[str] = set()
        while len(serving) < 2:  # a new connection each time: the kernel picks a worker
            answer = httpx.get(f"{url}/v1/models", headers={"connection": "close"})
            if "small" in {m["id"] for m in answer.json()["data"]}:
                serving.add(answer.headers["x-lifeline-worker"])
            time.sleep(0.02)
        result["reload_s"] = round(time.perf_counter() - started, 2)
        time.sleep(2)
        result["pss_after"] = processes(proc.pid)
    finally:
        proc.stop(grace=60)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
