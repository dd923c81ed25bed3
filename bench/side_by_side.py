"""Two Lifelines side by side at one rate: the same bench rig (fault wall, open-loop generator, pinning,
CPU per request from /proc) for Lifeline run from two source trees, in alternating rounds so that a shared
machine's drifting load falls on both alike, with the direct call measured in each round.

    git archive <before-commit> src | tar -x -C /tmp/before      # the "before" source tree
    python bench/side_by_side.py --variants before=/tmp/before/src,after=src --rounds 3 --out out/ab.json

Each round: the direct call, then each variant (in turn reversed every other round) started with its tree
first on PYTHONPATH, non-streaming then streaming at `--rate` for `--duration` s after a 2 s warm-up. Per
run it prints and keeps CPU ms per request, latency percentiles, streaming TTFT, errors and the foreign
load (other processes' CPU, % of one core). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402
from procs import Proc, pinned  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", required=True, help="name=src-dir,name=src-dir")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    variants = [(name, str(Path(src).resolve())) for name, src in (v.split("=", 1) for v in args.variants.split(","))]
    run.OUT.mkdir(parents=True, exist_ok=True)
    plan = run.Plan()
    foreign = run.ForeignLoad().start()
    wall = Proc(
        "wall",
        pinned([str(run.MAIN_PY), str(HERE / "wall_server.py"), "--port", "0"], run.GEN_CORE),
        run.OUT / "wall.log",
    )
    wall.start()
    rows: list[dict[str, Any]] = []

    def measure(system: run.System, name: str, round_: int) -> None:
        for stream in (False, True):
            started = time.monotonic()
            result = run.open_run(
                system,
                args.rate,
                stream=stream,
                duration=args.duration,
                warmup=2.0,
                timeout=10.0,
                tag=f"{name}{round_}",
            )
            row = {"round": round_, "system": name, **run.slim(result), "foreign_pct": foreign.mean(started)}
            rows.append(row)
            lat = result["latency_ms"]
            ttft = result.get("ttft_ms", {}).get("p99") if stream else None
            print(
                f"round {round_} {name} {'stream' if stream else 'json'}: cpu {result.get('sut_cpu_s_per_1k')} ms/req "
                f"p50 {lat['p50']} p99 {lat['p99']} ms, ttft p99 {ttft}, errors {result['errors']}, "
                f"foreign {row['foreign_pct']}%",
                flush=True,
            )

    try:
        port = int(wall.wait_line("READY", 30).split()[1])
        direct = run.start_system("direct", port, plan)
        for round_ in range(args.rounds):
            measure(direct, "direct", round_)
            for name, src in variants if round_ % 2 == 0 else variants[::-1]:
                os.environ["PYTHONPATH"] = src
                system = run.start_system("lifeline", port, plan)
                try:
                    measure(system, name, round_)
                finally:
                    system.stop()
            Path(args.out).write_text(json.dumps(rows, indent=1))
    finally:
        wall.stop()
        foreign.stop()
    Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
