"""PNG plots from results.json (run by run.py with bench/.venv-tools, which has matplotlib).

bench/.venv-tools/bin/python bench/plots.py bench/results.json bench/plots
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ORDER = ("direct", "floor", "lifeline", "litellm")
EXTRA = ("lifeline-lean",)
COLORS = {
    "direct": "#555555",
    "floor": "#1f77b4",
    "lifeline": "#2ca02c",
    "litellm": "#d62728",
    "lifeline-noledger": "#bcbd22",
    "lifeline-lean": "#9467bd",
}


def present(results: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    return [k for k in keys if k in results["systems"] and "error" not in results["systems"][k]]


def label(results: dict[str, Any], key: str) -> str:
    return str(results["systems"][key].get("label", key))


def points(results: dict[str, Any], key: str, kind: str, metric: str) -> list[tuple[float, float, float, bool]]:
    """(offered rate, p50, p99, passed) from the fixed-rate runs and (non-streaming) the ramp."""
    s = results["systems"][key]
    bound = results["setup"]["p99_bound_ms"]
    seen: dict[float, tuple[float, float, float, bool]] = {}
    for rate, run in s.get("latency", {}).get(kind, {}).items():
        d = run.get(metric)
        if d and d.get("p50") is not None:
            ok = run["errors"] == 0 and d["p99"] <= bound
            seen[float(rate)] = (float(rate), d["p50"], d["p99"], ok)
    if kind == "json":
        for p in s.get("ramp", {}).get("points", []):
            d = p.get(metric)
            if d and d.get("p50") is not None and p["offered_rate"] not in seen:
                seen[p["offered_rate"]] = (p["offered_rate"], d["p50"], d["p99"], p["pass"])
    return sorted(seen.values())


def latency_vs_load(results: dict[str, Any], out: Path, kind: str, metric: str, title: str, name: str) -> None:
    fig, ax = plt.subplots(figsize=(9, 5.5))
    lowest = float("inf")
    for key in present(results, ORDER + EXTRA):
        pts = points(results, key, kind, metric)
        if not pts:
            continue
        xs = [p[0] for p in pts]
        lowest = min(lowest, xs[0])
        c = COLORS[key]
        ax.plot(xs, [p[1] for p in pts], "--", color=c, alpha=0.7, label=f"{label(results, key)} p50")
        ax.plot(xs, [p[2] for p in pts], "-o", color=c, label=f"{label(results, key)} p99", markersize=4)
        bad = [p for p in pts if not p[3]]
        if bad:
            ax.plot([p[0] for p in bad], [p[2] for p in bad], "x", color=c, markersize=10, mew=2)
    if kind == "json":
        ax.axhline(results["setup"]["p99_bound_ms"], color="black", lw=0.8, ls=":")
        ax.text(
            lowest,
            results["setup"]["p99_bound_ms"] * 1.08,
            f"p99 bound {results['setup']['p99_bound_ms']:g} ms",
            fontsize=8,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered load (requests/s, open loop)")
    ax.set_ylabel("ms (log)")
    ax.set_title(title + "\n(x: a step that failed — errors or p99 over the bound)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)


def added_latency(results: dict[str, Any], out: Path) -> None:
    rates = results["plan"]["rates"]
    keys = present(results, ("floor", "lifeline", "litellm", "lifeline-lean"))
    if not present(results, ("direct",)) or not keys:
        return
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.5), sharey=True)
    for ax, q in zip(axes, ("p50", "p90", "p99"), strict=True):
        width = 0.8 / len(keys)
        for i, key in enumerate(keys):
            vals = []
            for rate in rates:
                mine = results["systems"][key]["latency"]["json"].get(str(rate), {}).get("latency_ms", {})
                base = results["systems"]["direct"]["latency"]["json"].get(str(rate), {}).get("latency_ms", {})
                v = (mine.get(q) or 0) - (base.get(q) or 0)
                vals.append(max(v, 0.01))
            xs = [j + (i - (len(keys) - 1) / 2) * width for j in range(len(rates))]
            bars = ax.bar(xs, vals, width, color=COLORS[key], label=label(results, key))
            for b, v in zip(bars, vals, strict=True):
                ax.text(b.get_x() + b.get_width() / 2, v * 1.1, f"{v:.1f}", ha="center", fontsize=7)
        ax.set_xticks(range(len(rates)))
        ax.set_xticklabels([f"{r}/s" for r in rates])
        ax.set_yscale("log")
        ax.set_title(f"added {q} latency (ms)")
        ax.grid(True, axis="y", which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Added latency over the direct call, non-streaming (log scale; ≤0 shown as 0.01)")
    fig.tight_layout()
    fig.savefig(out / "added_latency.png", dpi=110)
    plt.close(fig)


def rss_soak(results: dict[str, Any], out: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 4.5))
    drawn = False
    for key in present(results, ORDER):
        soak = results["systems"].get(key, {}).get("soak")
        if not soak or not soak.get("rss_series"):
            continue
        xs = [p[0] for p in soak["rss_series"]]
        ys = [p[1] for p in soak["rss_series"]]
        ax.plot(xs, ys, "-", color=COLORS[key], label=f"{label(results, key)} ({soak['requests']:,} requests)")
        drawn = True
    if not drawn:
        plt.close(fig)
        return
    ax.set_xlabel("seconds into the soak")
    ax.set_ylabel("RSS (MB)")
    ax.set_title(f"RSS during the soak (closed loop, {results['plan']['soak_concurrency']} connections)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "rss_soak.png", dpi=110)
    plt.close(fig)


def engine(results: dict[str, Any], out: Path) -> None:
    e = results.get("engine", {}).get("by_threads")
    if not e:
        return
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    threads = list(e)
    for i, side in enumerate(("raw", "lifeline")):
        xs = [j + (i - 0.5) * 0.38 for j in range(len(threads))]
        color = "#777777" if side == "raw" else COLORS["lifeline"]
        name = "raw llama-cpp-python" if side == "raw" else "Lifeline (HTTP)"
        a1.bar(xs, [e[t][side]["decode_tps"] or 0 for t in threads], 0.38, color=color, label=name)
        a2.bar(xs, [e[t][side]["ttft_ms"] or 0 for t in threads], 0.38, color=color, label=name)
    for ax, title in ((a1, "decode tokens/s (higher is better)"), (a2, "time to first token, ms")):
        ax.set_xticks(range(len(threads)))
        ax.set_xticklabels([f"n_threads={t}" for t in threads])
        ax.set_title(title)
        ax.grid(True, axis="y", alpha=0.3)
    a1.legend(fontsize=8)
    fig.suptitle("Embedded engine (SmolLM2-135M Q4_1) vs raw llama-cpp-python")
    fig.tight_layout()
    fig.savefig(out / "engine.png", dpi=110)
    plt.close(fig)


def sweep(results: dict[str, Any], out: Path) -> None:
    keys = [k for k in present(results, ORDER + EXTRA) if results["systems"][k].get("sweep")]
    if not keys:
        return
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key in keys:
        sw = results["systems"][key]["sweep"]
        xs = sorted(int(c) for c in sw)
        ax.plot(xs, [sw[str(c)]["throughput"] for c in xs], "-o", color=COLORS[key], label=label(results, key))
    ax.set_xscale("log", base=2)
    ax.set_xticks(results["plan"]["sweep_concurrency"])
    ax.set_xticklabels([str(c) for c in results["plan"]["sweep_concurrency"]])
    ax.set_xlabel("connections (closed loop)")
    ax.set_ylabel("requests/s")
    ax.set_title("Closed-loop throughput by concurrency (one core per system)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "sweep.png", dpi=110)
    plt.close(fig)


def main() -> None:
    results = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    latency_vs_load(
        results,
        out,
        "json",
        "latency_ms",
        "End-to-end latency against offered load, non-streaming (upstream: fixed 20 ms)",
        "latency_vs_load.png",
    )
    latency_vs_load(
        results,
        out,
        "stream",
        "ttft_ms",
        "Time to first token against offered load, streaming (upstream: first token at 20 ms)",
        "ttft.png",
    )
    added_latency(results, out)
    sweep(results, out)
    rss_soak(results, out)
    engine(results, out)


if __name__ == "__main__":
    main()
