"""RSS of every process of `lifeline serve --workers N` over 100,000 requests: supervisor, each worker, engine.

    python bench/soak_workers.py [--workers 2] [--count 100000] [--chunk 20000] [--concurrency 32] [--out F]

One gateway (ledger on, SQLite) with two targets: the fault wall (`ok`, answering at once) and the embedded
model (`builtin:smollm2`, so `serve --workers N` starts its one engine process). A few embedded-model answers
warm the engine, then a warm-up of wall requests; RSS by process is read ("before"), then `--count`
non-streaming requests to the wall in a closed loop (bench/loadgen.py), `--chunk` at a time with RSS by process
after each chunk; a few embedded-model answers again, and RSS once more ("after"). Growth over the soak is the
leak signal. Writes one JSON file. Not a test.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402
import scale  # noqa: E402
from procs import cpu_seconds, post_json  # noqa: E402

LOCAL = {"model": "local", "messages": [{"role": "user", "content": "Name three colours."}], "max_tokens": 24}


def local_answers(port: int, n: int) -> list[int]:
    return [post_json("127.0.0.1", port, "/v1/chat/completions", LOCAL, timeout=120)[0] for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=5_000)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    foreign = run.ForeignLoad().start()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lifeline-bench-soak-") as tmp:
        directory = Path(tmp)
        wall, wall_port = scale.start_wall(directory)
        gateway = None
        try:
            gateway, port, _ = scale.start_gateway(
                directory,
                args.workers,
                targets={
                    "wall": {"kind": "openai", "base_url": f"http://127.0.0.1:{wall_port}/v1", "model": "ok"},
                    "local": {"kind": "llamacpp", "model": "builtin:smollm2", "n_threads": 1, "n_ctx": 512},
                },
                aliases={"bench": {"targets": ["wall"]}, "local": {"targets": ["local"]}},
                server={},
            )
            idle = scale.roles(gateway.pid)
            warm_local = local_answers(port, 3)
            load = [
                sys.executable, str(HERE / "loadgen.py"), "--url", f"http://127.0.0.1:{port}/v1/chat/completions",
                "--mode", "closed", "--concurrency", str(args.concurrency), "--time-limit", "300",
            ]  # fmt: skip

            def closed(count: int) -> dict[str, Any]:
                out = subprocess.run([*load, "--count", str(count)], check=True, capture_output=True, text=True)
                return json.loads(out.stdout)  # type: ignore[no-any-return]

            closed(args.warmup)
            before = scale.roles(gateway.pid)
            cpu_before = cpu_seconds(gateway.pid)
            chunks = []
            done = 0
            while done < args.count:
                count = min(args.chunk, args.count - done)
                t = time.monotonic()
                summary = closed(count)
                done += count
                chunks.append(
                    {
                        "after_requests": done,
                        "ok": summary["ok"],
                        "errors": summary["errors"],
                        "error_kinds": summary["error_kinds"],
                        "throughput_rps": summary.get("throughput"),
                        "foreign_load_pct": foreign.mean(t),
                        "rss_mb": scale.roles(gateway.pid),
                    }
                )
                print(json.dumps(chunks[-1]), flush=True)
            cpu_used = cpu_seconds(gateway.pid) - cpu_before
            after_soak = scale.roles(gateway.pid)
            late_local = local_answers(port, 3)
            time.sleep(2)
            after = scale.roles(gateway.pid)
            result = {
                **scale.context(foreign, started, sys.argv),
                "workers": args.workers,
                "upstream": "ok (the fault wall, answering at once), non-streaming, max_tokens 16",
                "embedded": "builtin:smollm2, n_threads 1, n_ctx 512, max_tokens 24",
                "requests": done,
                "ok": sum(c["ok"] for c in chunks),
                "errors": sum(c["errors"] for c in chunks),
                "cpu_ms_per_request_tree": round(cpu_used / done * 1000, 4),
                "embedded_answers": {"before": warm_local, "after": late_local},
                "rss_mb": {"idle": idle, "before": before, "after_soak": after_soak, "after": after},
                "growth_mb": {k: round(after_soak[k] - before[k], 2) for k in before if k in after_soak},
                "chunks": chunks,
            }
        finally:
            if gateway is not None:
                gateway.stop(90)
            wall.stop()
            foreign.stop()
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
