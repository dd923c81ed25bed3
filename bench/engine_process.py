"""The engine process (#13): memory of one engine process serving two workers against two workers that each load
the model, and what the socket between a worker and the engine costs per token.

- memory: two `lifeline serve` processes with an in-process `llamacpp` target, then one engine process
  (server/engine_host.py) with two `lifeline serve` workers attached to it; each process's RSS and PSS after a
  warm-up answer. RSS counts the model file's pages in every process that maps them; PSS shares them out, so
  the PSS sums are what the machine really spends.
- tokens/s: streamed answers (greedy, the same prompt and max_tokens) from a worker with the model in process
  and from a worker attached to the engine process, runs alternating, timed chunk by chunk over HTTP (SSE);
- the socket alone: a stand-in engine process that sends N chunk frames (a real chunk's JSON) as fast as it
  can, read by the worker's provider (providers/engine_client.py): the cost per chunk, with no model.

    python bench/engine_process.py --runs 7 --max-tokens 128 --threads 2

writes bench/engine_process.json; `python bench/report.py` renders it into RESULTS.md (its #13 section).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from engine import PROMPT, stream_body, stream_once  # noqa: E402
from procs import Proc, free_port, post_json, wait_ready  # noqa: E402
from run import git_state, machine  # noqa: E402

N_CTX = 2048


def memory_of(pid: int) -> dict[str, float]:
    """RSS and PSS of one process (not its children), in MB (10^6 bytes)."""
    found: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key = line.split(":")[0]
        if key in ("Rss", "Pss"):
            found[key.lower() + "_mb"] = round(int(line.split()[1]) * 1024 / 1e6, 1)
    return found


def serve(name: str, target: str, lifeline_bin: str, workdir: Path) -> tuple[Proc, int]:
    port = free_port()
    config = workdir / f"{name}.yaml"
    config.write_text(
        f"server: {{host: 127.0.0.1, port: {port}, log_level: warning}}\n"
        f"targets:\n  engine: {target}\n"
        "aliases:\n  local: {targets: [engine]}\n"
    )
    proc = Proc(name, [lifeline_bin, "serve", "--config", str(config)], workdir / f"{name}.log").start()
    warm = {"model": "local", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 8, "temperature": 0}
    wait_ready(proc, port, "/v1/chat/completions", warm, timeout=180)
    post_json("127.0.0.1", port, "/v1/chat/completions", warm, timeout=60)
    return proc, port


def decode_runs(port: int, runs: int, max_tokens: int) -> list[dict[str, Any]]:
    return [stream_once(port, stream_body(max_tokens)) for _ in range(runs)]


def med(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(values), 3) if values else None


def through_the_socket(chunks: int) -> dict[str, Any]:
    """The stand-in engine in its own process sends `chunks` chunk frames; the provider reads them."""
    import subprocess
    import tempfile

    from lifeline.config.schema import LlamaCppTarget
    from lifeline.protocol.parse import validate_chat_request
    from lifeline.providers.base import ChatCall, Deadline
    from lifeline.providers.engine_client import EngineClientProvider

    path = str(Path(tempfile.mkdtemp(prefix="lifeline-bench-")) / "e.sock")
    child = subprocess.Popen(
        [sys.executable, __file__, "--stand-in", path, "--chunks", str(chunks)], stdout=subprocess.PIPE
    )
    assert child.stdout is not None
    child.stdout.readline()  # listening
    provider = EngineClientProvider("engine", LlamaCppTarget(kind="llamacpp", engine_socket=path, served_name="m"))
    body = {"model": "local", "messages": [{"role": "user", "content": "hi"}]}

    async def read_all() -> tuple[int, float]:
        call = ChatCall(body=body, request=validate_chat_request(body), request_id="b", deadline=Deadline.after(600))
        started = time.perf_counter()
        count = 0
        async for _ in provider.stream(call):
            count += 1
        return count, time.perf_counter() - started

    try:
        rounds = [asyncio.run(read_all()) for _ in range(5)]
    finally:
        child.terminate()
        child.wait()
    per_chunk = sorted(seconds / count * 1e6 for count, seconds in rounds)
    return {"chunks": chunks, "rounds": 5, "us_per_chunk_median": round(statistics.median(per_chunk), 2)}


def stand_in(path: str, chunks: int) -> None:
    """A stand-in engine process: every call is answered with `chunks` copies of a real chunk, then the end."""
    import orjson

    from lifeline.providers.engine_wire import CHUNK, END, frame, read_frame

    data = {
        "id": "chatcmpl-0123456789abcdef0123456789abcdef",
        "object": "chat.completion.chunk",
        "created": 1796084291,
        "model": "smollm2-135m-instruct",
        "choices": [{"index": 0, "delta": {"content": " lighthouse"}, "finish_reason": None}],
    }
    one = frame(CHUNK, orjson.dumps(data))

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_frame(reader)
        for _ in range(chunks):  # one write and a drain per chunk, as the engine process does
            writer.write(one)
            await writer.drain()
        writer.write(frame(END))
        await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_unix_server(answer, path=path)
        print("listening", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--chunks", type=int, default=20000)
    parser.add_argument("--stand-in", help=argparse.SUPPRESS)  # child mode: the stand-in engine on this socket
    parser.add_argument("--lifeline", default=str(Path(sys.executable).parent / "lifeline"))
    parser.add_argument("--workdir", default=str(HERE / "out"))
    parser.add_argument("--out", default=str(HERE / "engine_process.json"))
    args = parser.parse_args()
    if args.stand_in:
        stand_in(args.stand_in, args.chunks)
        return

    from lifeline.config import parse_config
    from lifeline.server.engine_host import EngineHost

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    local = f"{{kind: llamacpp, model: 'builtin:smollm2', n_threads: {args.threads}, n_ctx: {N_CTX}}}"
    result: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        # the options that shape the figures (not where the logs went)
        "command": f"python bench/engine_process.py --runs {args.runs} --max-tokens {args.max_tokens} "
        f"--threads {args.threads} --chunks {args.chunks}",
        "machine": machine(),
        "git": git_state(),
        "threads": args.threads,
        "n_ctx": N_CTX,
        "runs": args.runs,
        "max_tokens": args.max_tokens,
    }

    inproc = [serve(f"inproc-{i}", local, args.lifeline, workdir) for i in (1, 2)]
    result["two_in_process_engines"] = {p.name: memory_of(p.pid) for p, _ in inproc}
    target = {"kind": "llamacpp", "model": "builtin:smollm2", "n_threads": args.threads, "n_ctx": N_CTX}
    host = EngineHost(
        parse_config({"targets": {"engine": target}, "aliases": {"local": {"targets": ["engine"]}}}, env={})
    )
    host.start()
    try:
        attached = f"{{kind: llamacpp, model: 'builtin:smollm2', n_threads: {args.threads}, n_ctx: {N_CTX}, "
        attached += f"engine_socket: '{host.socket_path}', served_name: '{host.served['engine']}'}}"
        workers = [serve(f"worker-{i}", attached, args.lifeline, workdir) for i in (1, 2)]
        assert host.pid is not None
        result["one_engine_process"] = {"engine": memory_of(host.pid), **{p.name: memory_of(p.pid) for p, _ in workers}}
        # tokens/s: in process and through the socket, alternating; one worker side at a time
        inproc[1][0].stop()
        workers[1][0].stop()
        direct: list[dict[str, Any]] = []
        socket_side: list[dict[str, Any]] = []
        for _ in range(args.runs):
            direct += decode_runs(inproc[0][1], 1, args.max_tokens)
            socket_side += decode_runs(workers[0][1], 1, args.max_tokens)
        for proc, _ in (inproc[0], workers[0]):
            proc.stop()
    finally:
        host.stop()
    result["decode"] = {
        "in_process": {k: med(direct, k) for k in ("decode_tps", "ttft_ms", "completion_tokens")},
        "engine_process": {k: med(socket_side, k) for k in ("decode_tps", "ttft_ms", "completion_tokens")},
        "runs": {"in_process": direct, "engine_process": socket_side},
    }
    result["socket_alone"] = through_the_socket(args.chunks)
    for side in ("two_in_process_engines", "one_engine_process"):
        rows = result[side].values()
        result[side]["total"] = {k: round(sum(r[k] for r in rows), 1) for k in ("rss_mb", "pss_mb")}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
