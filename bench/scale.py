"""What bench/slow_streams.py and bench/soak_workers.py share: the fault wall and `lifeline serve --workers N`
as their own processes, the RSS of each process of the gateway's tree by role (server or supervisor,
workers, the engine process), sampled over time, and the run's context (date, machine, foreign load).
Built on procs.py and run.py; not a test.
"""

from __future__ import annotations

import datetime as dt
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402
from procs import Proc, cpu_each, free_port, rss_each, wait_ready  # noqa: E402


def start_wall(directory: Path) -> tuple[Proc, int]:
    wall = Proc("wall", [sys.executable, str(HERE / "wall_server.py"), "--port", "0"], directory / "wall.log").start()
    return wall, int(wall.wait_line("READY", 30).split()[1])


def start_gateway(
    directory: Path, workers: int, targets: dict[str, Any], aliases: dict[str, Any], server: dict[str, Any]
) -> tuple[Proc, int, Path]:
    """`lifeline serve --workers N` (ledger on, SQLite under `directory`), ready on its first alias and with
    all N workers started; returns the process, its port and its config file."""
    port = free_port()
    config = {
        "server": {"port": port, "log_level": "warning", **server},
        "accounting": {"data_dir": str(directory / f"data{workers}")},
        "targets": targets,
        "aliases": aliases,
    }
    path = directory / f"gateway{workers}.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "lifeline.cli.main", "serve", "--config", str(path), "--workers", str(workers)]
    gateway = Proc(f"gateway{workers}", cmd, directory / f"gateway{workers}.log").start()
    first = next(iter(aliases))
    body = {"model": first, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    wait_ready(gateway, port, "/v1/chat/completions", body, timeout=300)
    deadline = time.monotonic() + 120
    while sum(1 for role in roles(gateway.pid) if role.startswith("worker")) < (workers if workers > 1 else 0):
        if time.monotonic() > deadline:
            raise RuntimeError(f"not every worker started:\n{gateway.log_tail()}")
        time.sleep(0.2)
    time.sleep(1.0 if workers == 1 else 2.0)  # every worker has bound and is serving
    return gateway, port, path


def roles(pid: int) -> dict[str, float]:
    """RSS (MB) of each process of the gateway's tree, by role: `server` (one process) or `supervisor`,
    `worker-1`.. (in pid order), `engine` (the embedded model's process), `resource-tracker`, `other`."""
    return by_role(pid, rss_each(pid))


def cpu_roles(pid: int) -> dict[str, float]:
    """CPU seconds of each process of the gateway's tree so far, by role (as `roles`)."""
    return by_role(pid, cpu_each(pid))


def by_role(pid: int, each: dict[int, tuple[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    workers = 0
    for p in sorted(each):
        cmd, value = each[p]
        if p == pid:
            role = "server" if cmd.endswith("--workers 1") else "supervisor"
        elif "engine_process" in cmd:
            role = "engine"
        elif "resource_tracker" in cmd:
            role = "resource-tracker"
        elif "multiprocessing" in cmd:
            workers += 1
            role = f"worker-{workers}"
        else:
            role = "other"
        out[role] = round(out.get(role, 0.0) + value, 2)
    out["total"] = round(sum(out.values()), 2)
    return out


class RssSampler:
    """RSS by role every `interval` seconds, in a thread, with a label for the phase of the run."""

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        self.pid = pid
        self.interval = interval
        self.phase = "idle"
        self.started = time.monotonic()
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(
                {"t": round(time.monotonic() - self.started, 1), "phase": self.phase, **roles(self.pid)}
            )
            self._stop.wait(self.interval)

    def stop(self) -> list[dict[str, Any]]:
        self._stop.set()
        self._thread.join()
        return self.samples

    def by_phase(self) -> dict[str, dict[str, float]]:
        """Per phase: the total RSS at its first and last sample and its highest."""
        out: dict[str, dict[str, float]] = {}
        for s in self.samples:
            row = out.setdefault(s["phase"], {"first": s["total"], "last": s["total"], "max": s["total"]})
            row["last"] = s["total"]
            row["max"] = max(row["max"], s["total"])
        return out


def context(foreign: run.ForeignLoad, started: float, command: list[str]) -> dict[str, Any]:
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": run.machine(),
        "git": run.git_state(),
        "command": " ".join(["python", *command]),
        "ulimit_n": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "foreign_load_pct_of_a_core": foreign.mean(started),
        "foreign_load_max_pct": max((v for t, v in foreign.samples if t >= started), default=None),
    }


def raise_descriptor_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
