"""The per-request work of the request path below the server, in process, for two source trees side by side:
parse and validate the body, admit it (no key), look up the alias's cache, route it to a fake target that
answers at once, and finish it (ledger record queued, metrics counted). No sockets, no ASGI, no upstream
transport: what remains is the CPU of routing/, accounting/, metrics.py and protocol/parse.py per request.

    python bench/experiments/request_chain.py --variants before=/tmp/before/src,after=src [--rounds 3]

Each round runs every variant in its own process (the order reversed every other round), non-streaming then
streaming (the fake target streams four chunks), `--requests` requests in each of 7 repeats; a repeat's
figure is process CPU time per request (µs) and the run's figure the lowest repeat. The configuration is
bench/run.py's: one alias of one OpenAI-compatible target, ledger on (SQLite, its writer not started, so only
the request path's share is measured), no auth, no tracing, log level warning.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from typing import Any


def measure(stream: bool, requests: int) -> float:
    import orjson

    from lifeline.accounting.service import Accounting, Finish
    from lifeline.attempts import Outcome
    from lifeline.config import parse_config
    from lifeline.metrics import Metrics
    from lifeline.protocol.fallbacks import NO_FALLBACKS
    from lifeline.protocol.parse import parse_json_object, validate_chat_request
    from lifeline.protocol.usage import answer_usage, delta_chars
    from lifeline.providers.base import ChatCall, Chunk, Completion, Deadline, inspect_chunk
    from lifeline.routing.health import Health
    from lifeline.routing.router import Router

    def chunk(delta: dict[str, Any], finish: str | None = None) -> Chunk:
        data = {"id": "c", "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return inspect_chunk(data, orjson.dumps(data))

    chunks = [
        chunk({"role": "assistant"}),
        chunk({"content": "Hello"}),
        chunk({"content": " there"}),
        chunk({}, "stop"),
    ]
    answer = {"id": "x", "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there"}}]}
    usage = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}

    class Target:
        name, model, context_window, supports_n = "wall", "m", None, True

        async def complete(self, call: ChatCall) -> Completion:
            return Completion(body=answer, model="m", usage=usage)

        async def stream(self, call: ChatCall) -> AsyncIterator[Chunk]:
            for c in chunks:
                yield c

    async def run() -> float:
        config = parse_config(
            {
                "server": {"log_level": "warning"},
                "accounting": {"data_dir": tempfile.mkdtemp(), "ledger": {"enabled": True}},
                "targets": {"wall": {"kind": "openai", "base_url": "http://wall.invalid/v1", "model": "m"}},
                "aliases": {"bench": {"targets": ["wall"]}},
            },
            env={},
        )
        accounting = Accounting(config, Metrics())
        router = Router(config, {"wall": Target()}, Health(config.circuit))  # type: ignore[dict-item]
        raw = orjson.dumps(
            {
                "model": "bench",
                "messages": [{"role": "user", "content": "Say hello."}],
                "max_tokens": 16,
                "stream": stream,
            }
        )

        async def one(n: int) -> None:
            request_id = f"r{n}"
            body = parse_json_object(raw)
            chat = validate_chat_request(body)
            router.alias(chat.model, "chat")
            fallbacks = router.fallbacks(NO_FALLBACKS, "chat")
            call = ChatCall(body=body, request=chat, request_id=request_id, deadline=Deadline.after(60))
            admission = await accounting.admit(
                None, chat.model, body, chat.token_limit, request_id, fallbacks=fallbacks
            )
            accounting.cache.lookup(chat.model, None, body, chat)
            if stream:
                opened = await router.open_stream(chat.model, call, fallbacks)
                async for _ in opened.result.rest:
                    pass
                end = Finish(200, "ok", True, target=opened.target, model="m", usage=usage, ttft=0.01,
                             attempts=opened.attempts.ended(Outcome.OK))  # fmt: skip
            else:
                done = await router.complete(chat.model, call, fallbacks)
                used, estimated = answer_usage(body, done.result.usage, delta_chars(done.result.body))
                end = Finish(200, "ok", False, target=done.target, model=done.result.model, attempts=done.attempts,
                             usage=used, usage_estimated=estimated)  # fmt: skip
            await accounting.finish(admission, end)

        best = float("inf")
        for _ in range(7):
            assert accounting.ledger is not None
            accounting.ledger._buffer.clear()  # the writer is not started: keep the buffer from filling
            started = time.process_time()
            for n in range(requests):
                await one(n)
            best = min(best, (time.process_time() - started) / requests * 1e6)
        return best

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", help="name=src-dir,name=src-dir")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--child", choices=["json", "stream"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(f"{measure(args.child == 'stream', args.requests):.1f}")
        return
    variants = [(name, os.path.abspath(src)) for name, src in (v.split("=", 1) for v in args.variants.split(","))]
    results: dict[tuple[str, str], list[float]] = {}
    for round_ in range(args.rounds):
        for name, src in variants if round_ % 2 == 0 else variants[::-1]:
            for mode in ("json", "stream"):
                out = subprocess.run(
                    [sys.executable, __file__, "--child", mode, "--requests", str(args.requests)],
                    env={**os.environ, "PYTHONPATH": src},
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                results.setdefault((name, mode), []).append(float(out))
                print(f"round {round_} {name} {mode}: {float(out):.1f} µs/request", flush=True)
    for (name, mode), values in results.items():
        print(f"{name} {mode}: {' '.join(f'{v:.1f}' for v in values)} (lowest {min(values):.1f}) µs/request")


if __name__ == "__main__":
    main()
