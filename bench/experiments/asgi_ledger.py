"""Side by side on one machine: Lifeline before and after the #13 ASGI and ledger changes, and after on the
standard library's event loop instead of uvloop. Uses the harness's rig (bench/run.py): the fault wall and
the load generator on core 1, each Lifeline alone on core 0, the ledger on (SQLite), open-loop load.

    python bench/experiments/asgi_ledger.py --before /tmp/base/src --after src [--rounds 1] [--profile]

`--before` / `--after`: the `src` directories of the two Lifelines (e.g. `git archive <commit> src` unpacked).
Per system and round: 200 and 1,000 req/s (2 s warm-up, 8 s measured), then a ladder of rates (1 s + 5 s
each) until a step fails (an error, a request unanswered or p99 > 100 ms). `--profile`: py-spy `--gil` at
1,600 req/s on before and after (separate runs; no figure above is taken under the profiler). Writes
bench/out/asgi_ledger.json (`--out`) and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
sys.path.insert(0, str(BENCH))

import run as harness  # noqa: E402
from procs import Proc, free_port, pinned, wait_ready  # noqa: E402

PY = Path(sys.executable)
LADDER = [1500, 2000, 2500, 3000, 3500, 4000]


def start(key: str, src: str, loop: str, wall_port: int) -> harness.System:
    port = free_port()
    config = harness.OUT / f"ab-{key}.yaml"
    harness.lifeline_config(config, port, f"http://127.0.0.1:{wall_port}/v1", 0, True)
    cmd = [str(PY), str(HERE / "serve_loop.py"), "--loop", loop, "--config", str(config)]
    system = harness.System(key, key, port, "bench")
    system.proc = Proc(key, pinned(cmd, harness.SUT_CORE), harness.OUT / f"ab-{key}.log", env={"PYTHONPATH": src})
    system.proc.start()
    body = {"model": "bench", "messages": [{"role": "user", "content": "ready?"}], "max_tokens": 4}
    wait_ready(system.proc, port, harness.CHAT_PATH, body, timeout=120)
    return system


def measure(system: harness.System, ladder: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rate in (200, 1000):
        run = harness.open_run(system, rate, stream=False, duration=8, warmup=2, timeout=10)
        out[str(rate)] = harness.slim(run)
        harness.log(f"  {system.key} @{rate}/s: p50 {run['latency_ms']['p50']} p99 {run['latency_ms']['p99']} ms, "
                    f"errors {run['errors']}, cpu {run.get('sut_cpu_s_per_1k')} s/1k")  # fmt: skip
        if not harness.passes(run):
            harness.settle(system)
    if ladder:
        steps = []
        for rate in LADDER:
            run = harness.open_run(system, rate, stream=False, duration=5, warmup=1, timeout=5, tag="ramp")
            ok = harness.passes(run)
            steps.append({**harness.slim(run), "pass": ok})
            harness.log(f"  {system.key} ramp @{rate}/s: {'pass' if ok else 'FAIL'} p99 {run['latency_ms']['p99']}")
            if not ok:
                harness.settle(system)
                break
        out["ladder"] = steps
        out["sustained"] = max((s["offered_rate"] for s in steps if s["pass"]), default=None)
    return out


def profile(system: harness.System, rate: int, seconds: int) -> dict[str, Any]:
    spy = PY.parent / "py-spy"
    raw = harness.OUT / f"ab-profile-{system.key}-{rate}.txt"
    raw.unlink(missing_ok=True)
    cmd = [str(spy), "record", "--pid", str(system.pid), "--duration", str(seconds), "--rate", "200",
           "--format", "raw", "--output", str(raw), "--nonblocking", "--gil", "--threads"]  # fmt: skip
    spy_proc = subprocess.Popen(pinned(cmd, harness.GEN_CORE), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    run = harness.open_run(system, rate, stream=False, duration=seconds, warmup=0.5, timeout=10, tag="profile")
    spy_proc.wait(seconds + 30)
    harness.settle(system)
    analysis = harness.analyse_profile(raw) if raw.exists() else {"error": "py-spy wrote nothing"}
    # GIL-holding samples taken in the writer thread (its frames are the ledger's and the database layer's)
    writer = total = 0
    if raw.exists():
        for line in raw.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if count.isdigit():
                total += int(count)
                if "Writer._run" in stack:
                    writer += int(count)
    analysis["writer_thread_pct"] = round(100 * writer / total, 1) if total else None
    analysis["latency_ms_under_profiler"] = run["latency_ms"]
    analysis["errors_under_profiler"] = run["errors"]
    return analysis


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True)
    parser.add_argument("--after", required=True)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", default="asgi_ledger.json", help="under bench/out/")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--profile-rate", type=int, default=1600)
    parser.add_argument("--systems", default="before,after,after-asyncio", help="a subset, comma-separated")
    parser.add_argument("--ladder", default=",".join(map(str, LADDER)), help="the rates to climb, req/s")
    args = parser.parse_args()
    LADDER[:] = [int(rate) for rate in args.ladder.split(",")]
    harness.MAIN_PY = PY
    systems = {
        "before": (os.path.abspath(args.before), "auto"),
        "after": (os.path.abspath(args.after), "auto"),
        "after-asyncio": (os.path.abspath(args.after), "asyncio"),
    }
    systems = {key: systems[key] for key in args.systems.split(",")}
    foreign = harness.ForeignLoad().start()
    wall = Proc("wall", pinned([str(PY), str(BENCH / "wall_server.py"), "--port", "0"], harness.GEN_CORE),
                harness.OUT / "ab-wall.log")  # fmt: skip
    wall.start()
    results: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rounds": []}
    try:
        wall_port = int(wall.wait_line("READY", 30).split()[1])
        direct = harness.System("direct", "direct", wall_port, harness.OK_SPEC)
        for r in range(args.rounds):
            order = list(systems) if r % 2 == 0 else list(reversed(systems))
            this: dict[str, Any] = {}
            t = time.monotonic()
            this["direct"] = measure(direct, ladder=False)
            this["direct"]["foreign_cpu_pct"] = foreign.mean(t)
            for key in order:
                src, loop = systems[key]
                t = time.monotonic()
                system = start(key, src, loop, wall_port)
                try:
                    this[key] = measure(system, ladder=True)
                    if args.profile and r == 0 and key in ("before", "after"):
                        this[key]["profile"] = profile(system, args.profile_rate, 10)
                finally:
                    system.stop()
                this[key]["foreign_cpu_pct"] = foreign.mean(t)
            results["rounds"].append(this)
            (harness.OUT / args.out).write_text(json.dumps(results, indent=1))
    finally:
        wall.stop()
        foreign.stop()
    summary(results)


def summary(results: dict[str, Any]) -> None:
    rounds = results["rounds"]

    def med(values: list[float | None]) -> float | None:
        clean = [v for v in values if v is not None]
        return round(statistics.median(clean), 2) if clean else None

    columns = ["system", "p99 @200", "added p99 @200", "CPU ms/req @200", "p99 @1000", "added p99 @1000"]
    print("| " + " | ".join([*columns, "sustained", "foreign"]) + " |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for key in [k for k in ("direct", "before", "after", "after-asyncio") if k in rounds[0]]:
        p200 = med([r[key]["200"]["latency_ms"]["p99"] for r in rounds])
        p1000 = med([r[key]["1000"]["latency_ms"]["p99"] for r in rounds])
        d200 = med([r["direct"]["200"]["latency_ms"]["p99"] for r in rounds])
        d1000 = med([r["direct"]["1000"]["latency_ms"]["p99"] for r in rounds])
        cpu = med([r[key]["200"].get("sut_cpu_s_per_1k") for r in rounds])
        sus = med([r[key].get("sustained") for r in rounds])
        fl = med([r[key].get("foreign_cpu_pct") for r in rounds])
        a200 = None if key == "direct" or p200 is None or d200 is None else round(p200 - d200, 2)
        a1000 = None if key == "direct" or p1000 is None or d1000 is None else round(p1000 - d1000, 2)
        print(f"| {key} | {p200} | {a200} | {cpu} | {p1000} | {a1000} | {sus} | {fl}% |")


if __name__ == "__main__":
    main()
