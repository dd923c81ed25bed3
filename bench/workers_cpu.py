"""Total CPU per request of `lifeline serve --workers N` (supervisor and workers together), side by side.

    python bench/workers_cpu.py [--workers 1,2] [--count 20000] [--concurrency 32] [--limited]

For each N: the fault wall and `lifeline serve --workers N` as their own processes, the ledger on (SQLite);
after a warm-up, `--count` requests in a closed loop (bench/loadgen.py), and the CPU time of the gateway's
whole process tree (supervisor, workers, their threads) read from /proc before and after. With `--limited`
every request carries a key with RPM and TPM limits, so each one also admits through the supervisor
(server/worker_state.py) when N > 1, or in memory when N = 1. Prints one JSON line per N, with the CPU per
request of each process (by role) and the foreign load (other processes' CPU, % of one core) during the
measured loop; `--workers 1,2,2,1` alternates. Not a test.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from procs import Proc, cpu_seconds, free_port, post_json, rss_mb, wait_ready
from run import ForeignLoad
from scale import cpu_roles

MASTER = "mk-bench-workers-0123456789"
BODY = {"model": "bench", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}


def one_run(workers: int, args: argparse.Namespace, directory: Path, foreign: ForeignLoad) -> dict[str, Any]:
    directory.mkdir(parents=True, exist_ok=True)
    wall = Proc("wall", [sys.executable, "bench/wall_server.py", "--port", "0"], directory / "wall.log").start()
    gateway: Proc | None = None
    try:
        wall_port = int(wall.wait_line("READY", 30).split()[1])
        port = free_port()
        config = {
            "server": {"port": port, "log_level": "warning", "max_connections": 4000},
            "admin": {"master_key": MASTER},
            "auth": {"enabled": args.limited},
            "accounting": {"data_dir": str(directory / f"data{workers}")},
            "targets": {"t": {"kind": "openai", "base_url": f"http://127.0.0.1:{wall_port}/v1", "model": "ok"}},
            "aliases": {"bench": {"targets": ["t"]}},
        }
        path = directory / f"gateway{workers}.yaml"
        path.write_text(yaml.safe_dump(config))
        cmd = [sys.executable, "-m", "lifeline.cli.main", "serve", "--config", str(path), "--workers", str(workers)]
        gateway = Proc(f"gateway{workers}", cmd, directory / f"gateway{workers}.log").start()
        headers: dict[str, str] = {}
        deadline, last = time.monotonic() + 120, ""
        while True:
            try:
                status, _, data = post_json(
                    "127.0.0.1",
                    port,
                    "/admin/keys",
                    {"name": "bench", "rpm": 10**9, "tpm": 2 * 10**9},
                    {"authorization": f"Bearer {MASTER}"},
                )
                last = f"{status} {data[:300]!r}"
                if status in (200, 201):
                    headers = {"authorization": f"Bearer {json.loads(data)['secret']}"} if args.limited else {}
                    break
            except OSError as exc:
                last = repr(exc)
            if time.monotonic() > deadline:
                raise RuntimeError(f"no key ({last}):\n{gateway.log_tail()}")
            time.sleep(0.2)
        time.sleep(1.0 + workers)  # every worker has started and refreshed its keys
        wait_ready(gateway, port, "/v1/chat/completions", BODY, headers)
        load = [
            sys.executable, "bench/loadgen.py", "--url", f"http://127.0.0.1:{port}/v1/chat/completions",
            "--mode", "closed", "--concurrency", str(args.concurrency),
            *(f"--header=authorization:{v}" for v in headers.values()),
        ]  # fmt: skip
        subprocess.run([*load, "--count", str(args.count // 5)], check=True, capture_output=True)  # warm-up
        before, by_role, started = cpu_seconds(gateway.pid), cpu_roles(gateway.pid), time.monotonic()
        out = subprocess.run([*load, "--count", str(args.count)], check=True, capture_output=True, text=True)
        used = cpu_seconds(gateway.pid) - before
        after = cpu_roles(gateway.pid)
        summary = json.loads(out.stdout)
        return {
            "workers": workers,
            "limited": args.limited,
            "requests": args.count,
            "errors": summary.get("errors"),
            "throughput_rps": summary.get("achieved_rate"),
            "cpu_ms_per_request": round(used / args.count * 1000, 4),
            "cpu_ms_per_request_by_process": {
                role: round((after[role] - by_role.get(role, 0.0)) / args.count * 1000, 4) for role in after
            },
            "foreign_load_pct": foreign.mean(started),
            "rss_mb_total": round(rss_mb(gateway.pid), 1),
        }
    finally:
        if gateway is not None:
            gateway.stop(90)
        wall.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--limited", action="store_true")
    args = parser.parse_args()
    foreign = ForeignLoad().start()
    with tempfile.TemporaryDirectory(prefix="lifeline-bench-workers-") as tmp:
        for i, n in enumerate(int(x) for x in args.workers.split(",")):
            print(json.dumps(one_run(n, args, Path(tmp) / str(i), foreign)), flush=True)
    foreign.stop()


if __name__ == "__main__":
    main()
