"""1,000 concurrent slow streams through one `lifeline serve`: RSS over time, completeness, stalls, health.

    python bench/slow_streams.py [--workers 1] [--streams 1000] [--tokens 60] [--tps 2] [--waves 2] [--out F]

The fault wall streams `--tokens` tokens at `--tps` tokens/s (model `ok?tokens=60&tps=2`: 30 s, an event
every 500 ms) behind `lifeline serve --workers N` with the ledger on (SQLite). Each wave opens `--streams`
streaming requests over `--ramp` seconds, each on its own connection, and holds them all until they end.
Per stream it records the time of every content event, the tokens, whether `[DONE]` came and the status;
the gaps between content events are set against the upstream's pace (1/tps): a stall is a gap far above it.
Alongside, `--control` streams go straight to the wall: the gaps the rig itself makes at that moment (client
and wall share the machine with the gateway and whatever else runs). While the streams are held, a probe
asks `/healthz` and a small non-streaming chat (a fast alias) every 2 s.
RSS of every process of the gateway (by role) is sampled each second: idle, through each wave, and after.
Client and server limits are set for the count: `server.max_connections` and the slow target's
`max_connections` (its upstream pool) above `--streams`, the descriptor limit raised for this process.
Writes one JSON file. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402
import scale  # noqa: E402
from http1 import ResponseParser, chat_request  # noqa: E402
from loadgen import _CONTENT, dist, percentile  # noqa: E402
from loadgen import run as run_loop  # noqa: E402
from procs import post_json  # noqa: E402

now = time.perf_counter


class Stream:
    __slots__ = ("done", "ended", "error", "events", "sent", "status", "tokens")

    def __init__(self) -> None:
        self.sent = 0.0
        self.ended = 0.0
        self.events: list[float] = []  # arrival of each content event
        self.tokens = 0
        self.done = False
        self.status = 0
        self.error: str | None = None


async def one_stream(port: int, payload: bytes, stream: Stream, timeout: float) -> None:
    pending = b""

    def on_body(data: bytes) -> None:
        nonlocal pending
        t = now()
        pending += data
        *events, pending = pending.split(b"\n\n")
        for event in events:
            if _CONTENT.search(event):
                stream.tokens += 1
                stream.events.append(t)
            elif event.strip() == b"data: [DONE]":
                stream.done = True

    parser = ResponseParser(on_body)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 30)
    except (OSError, TimeoutError) as exc:
        stream.error = f"connect:{type(exc).__name__}"
        return
    try:
        stream.sent = now()
        writer.write(payload)
        async with asyncio.timeout(timeout):
            while True:
                data = await reader.read(65536)
                if not data:
                    stream.error = stream.error or "closed"
                    break
                if parser.feed(data):
                    break
        stream.status = parser.status
    except TimeoutError:
        stream.error = "timeout"
    except OSError as exc:
        stream.error = f"reset:{type(exc).__name__}"
    finally:
        stream.ended = now()
        writer.close()


def get(port: int, path: str) -> tuple[int, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    started = time.perf_counter()
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status, time.perf_counter() - started
    finally:
        conn.close()


async def probe(port: int, until: asyncio.Event, out: list[dict[str, Any]], held: Any) -> None:
    """Every 2 s while the streams are held: /healthz and a small non-streaming chat, each on a new connection."""
    body = {"model": "fast", "messages": [{"role": "user", "content": "ping"}], "max_tokens": 4}
    while not until.is_set():
        row: dict[str, Any] = {"held": held()}
        for name, call in (
            ("healthz", lambda: get(port, "/healthz")),
            ("chat", lambda: post_json("127.0.0.1", port, "/v1/chat/completions", body, timeout=10)[:2]),
        ):
            try:
                status, seconds = await asyncio.to_thread(call)
                row[name] = {"status": status, "ms": round(seconds * 1000, 1)}
            except OSError as exc:
                row[name] = {"status": 0, "error": type(exc).__name__}
        out.append(row)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(until.wait(), 2.0)


def stream_body(model: str, args: argparse.Namespace) -> bytes:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "stream slowly"}],
        "max_tokens": args.tokens + 8,
        "stream": True,
    }
    return json.dumps(body).encode()


def summary(streams: list[Stream], args: argparse.Namespace, started: float, all_open: float) -> dict[str, Any]:
    """Completeness and the gaps between content events, against the upstream's pace; `all_open`: when every
    stream had its first event (the hold proper, after the ramp)."""
    pace = 1.0 / args.tps
    complete = [s for s in streams if s.error is None and s.status == 200 and s.done and s.tokens == args.tokens]
    gaps = [b - a for s in streams for a, b in zip(s.events, s.events[1:], strict=False)]
    worst = [
        max(zip(s.events[1:], s.events, strict=False), key=lambda ab: ab[0] - ab[1], default=None) for s in streams
    ]
    max_gaps = sorted((w[0] - w[1]) if w else 0.0 for w in worst)
    # when the long gaps ended (s into the wave): all at one moment is a pause of the whole process (or machine)
    stalled_at = sorted(round(w[0] - started) for w in worst if w and w[0] - w[1] > 1.5 * pace)
    durations = [s.events[-1] - s.events[0] for s in streams if len(s.events) > 1]
    held = [
        max((b - a for a, b in zip(s.events, s.events[1:], strict=False) if a >= all_open), default=0.0)
        for s in streams
    ]
    return {
        "streams": len(streams),
        "complete": len(complete),
        "incomplete": len(streams) - len(complete),
        "errors": sorted({s.error or f"status_{s.status}" for s in streams if s not in complete}),
        "short_of_tokens": sum(1 for s in streams if s.tokens != args.tokens),
        "without_done": sum(1 for s in streams if not s.done),
        "pace_ms": round(pace * 1000, 1),
        "gap_ms": dist(gaps),
        "max_gap_per_stream_ms": dist(max_gaps),
        "streams_max_gap_over_1.5x_pace": sum(1 for g in max_gaps if g > 1.5 * pace),
        "streams_max_gap_over_2x_pace": sum(1 for g in max_gaps if g > 2 * pace),
        "streams_max_gap_over_pace_plus_5s": sum(1 for g in max_gaps if g > pace + 5),
        "over_1.5x_pace_ended_at_s": dict(Counter(stalled_at).most_common(5)),
        "all_open_at_s": round(all_open - started, 2),
        "max_gap_per_stream_once_all_open_ms": dist(held),
        "streams_max_gap_once_all_open_over_1.5x_pace": sum(1 for g in held if g > 1.5 * pace),
        "first_to_last_event_s": {
            "expected": round((args.tokens - 1) * pace, 2),
            "p50": round(percentile(sorted(durations), 50) or 0, 2),
            "max": round(max(durations, default=0), 2),
        },
        "ttft_ms": dist([s.events[0] - s.sent for s in streams if s.events]),
    }


async def wave(port: int, wall_port: int, args: argparse.Namespace) -> dict[str, Any]:
    """`--streams` through the gateway and, at the same time, `--control` straight to the wall."""
    pace = 1.0 / args.tps
    timeout = args.tokens * pace * 3 + 60
    spec = f"ok?tokens={args.tokens}&tps={args.tps:g}"
    path = "/v1/chat/completions"
    through = chat_request("127.0.0.1", port, path, stream_body("slow", args))
    direct = chat_request("127.0.0.1", wall_port, path, stream_body(spec, args))
    streams = [Stream() for _ in range(args.streams)]
    controls = [Stream() for _ in range(args.control)]
    every = args.streams // args.control if args.control else 0
    tasks: list[asyncio.Task[None]] = []
    started = now()
    for i, stream in enumerate(streams):
        due = started + args.ramp * i / args.streams
        if due > now():
            await asyncio.sleep(due - now())
        tasks.append(asyncio.create_task(one_stream(port, through, stream, timeout)))
        if every and i % every == 0 and i // every < len(controls):
            tasks.append(asyncio.create_task(one_stream(wall_port, direct, controls[i // every], timeout)))
    ramped = now()

    def held() -> int:
        return sum(1 for s in streams if s.events and not s.ended)

    finished = asyncio.Event()
    probes: list[dict[str, Any]] = []
    peak, all_open = 0, 0.0
    probing = asyncio.create_task(probe(port, finished, probes, held))
    while not all(t.done() for t in tasks):
        peak = max(peak, held())
        if not all_open and all(s.events for s in streams):
            all_open = now()
        await asyncio.sleep(0.25)
    finished.set()
    await probing
    ended = now()
    probes_during = [p for p in probes if p["held"] >= args.streams * 0.9]
    return {
        "ramp_s": round(ramped - started, 2),
        "wave_s": round(ended - started, 1),
        "peak_held": peak,
        **summary(streams, args, started, all_open or ended),
        "control_direct_to_wall": summary(controls, args, started, all_open or ended) if controls else None,
        "probes": len(probes),
        "probes_while_90pct_held": len(probes_during),
        "probes_answered_200": sum(1 for p in probes if p["healthz"]["status"] == 200 and p["chat"]["status"] == 200),
        "probe_ms_while_held": {
            "healthz": dist([p["healthz"]["ms"] / 1000 for p in probes_during if "ms" in p["healthz"]]),
            "chat": dist([p["chat"]["ms"] / 1000 for p in probes_during if "ms" in p["chat"]]),
        },
    }


def ramp_profiler(pid: int, raw: Path, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    """py-spy, from the venv of this Python, on the process serving the streams (one process: `--workers 1`)
    for the ramp and 3 s after, sampling only while the GIL is held (what the loop spends its time on)."""
    raw.parent.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).parent / "py-spy"
    seconds = str(int(args.ramp + 3))
    cmd = [str(spy), "record", "--pid", str(pid), "--duration", seconds, "--rate", "200", "--format", "raw"]
    # --native: C frames too (a garbage collection shows as gc_collect_*); py-spy then pauses the process
    # for each sample, so the run's gaps are not figures
    mode = ["--native"] if args.native else ["--nonblocking"]
    return subprocess.Popen([*cmd, *mode, "--output", str(raw), "--gil"], stdout=subprocess.DEVNULL)


def ramp_profile(spy: subprocess.Popen[bytes], raw: Path, args: argparse.Namespace) -> dict[str, Any]:
    spy.wait(60)
    if not raw.exists():
        return {"error": "py-spy wrote nothing"}
    found = run.analyse_profile(raw)
    return {
        "seconds": int(args.ramp + 3),
        "samples": found["samples"],
        "gil_held_pct": round(found["samples"] / (200 * int(args.ramp + 3)) * 100, 1),
        "component_self": found["component_self"][:10],
        "self_top": found["self_top"][:15],
        "inclusive_top": found["inclusive_top"][:25],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=60)
    parser.add_argument("--tps", type=float, default=2.0)
    parser.add_argument("--ramp", type=float, default=5.0, help="seconds over which a wave opens its streams")
    parser.add_argument("--waves", type=int, default=2)
    parser.add_argument("--settle", type=float, default=10.0, help="idle seconds before, between and after waves")
    parser.add_argument("--control", type=int, default=100, help="streams straight to the wall, alongside")
    parser.add_argument("--profile", help="a folder: py-spy (--gil) on the gateway through each wave's ramp")
    parser.add_argument("--native", action="store_true", help="with --profile: native frames too (py-spy --native)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    scale.raise_descriptor_limit(args.streams * 2 + 500)
    foreign = run.ForeignLoad().start()
    started = time.monotonic()
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="lifeline-bench-streams-") as tmp:
        directory = Path(tmp)
        wall, wall_port = scale.start_wall(directory)
        gateway = None
        try:
            base = f"http://127.0.0.1:{wall_port}/v1"
            limits = {
                "server.max_connections": args.streams + 200,
                "targets.slow.max_connections (upstream pool, per process)": args.streams + 100,
            }
            gateway, port, _ = scale.start_gateway(
                directory,
                args.workers,
                targets={
                    "fast": {"kind": "openai", "base_url": base, "model": "ok"},
                    "slow": {
                        "kind": "openai",
                        "base_url": base,
                        "model": f"ok?tokens={args.tokens}&tps={args.tps:g}",
                        "max_connections": args.streams + 100,
                    },
                },
                aliases={"fast": {"targets": ["fast"]}, "slow": {"targets": ["slow"]}},
                server={"max_connections": args.streams + 200},
            )
            sampler = scale.RssSampler(gateway.pid).start()
            time.sleep(args.settle)
            waves = []
            for n in range(1, args.waves + 1):
                sampler.phase = f"wave {n}"
                spy = ramp_profiler(gateway.pid, Path(args.profile) / f"wave{n}.txt", args) if args.profile else None
                w = run_loop(wave(port, wall_port, args))
                w["foreign_load_pct"] = foreign.mean(time.monotonic() - w["wave_s"])
                if spy is not None:
                    w["ramp_profile"] = ramp_profile(spy, Path(args.profile) / f"wave{n}.txt", args)
                waves.append(w)
                print(json.dumps({"workers": args.workers, "wave": n, **w}), flush=True)
                sampler.phase = f"after wave {n}"
                time.sleep(args.settle)
            samples = sampler.stop()
            result = {
                **scale.context(foreign, started, sys.argv),
                "workers": args.workers,
                "limits": limits,
                "upstream": f"ok?tokens={args.tokens}&tps={args.tps:g}",
                "waves": waves,
                "rss_by_phase_mb": sampler.by_phase(),
                "rss_roles_first_last_mb": {"first": samples[0], "last": samples[-1]},
                "rss_samples": samples[:: max(1, len(samples) // 120)],
            }
        finally:
            if gateway is not None:
                gateway.stop(60)
            wall.stop()
            foreign.stop()
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
