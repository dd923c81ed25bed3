"""A lean asyncio load generator for OpenAI-compatible chat completions, over raw keep-alive sockets.

Three modes, each bounded in count and time:

- ``open`` (default): requests are *scheduled* at fixed intervals (``--rate`` per second for
  ``--warmup + --duration`` seconds) whatever the responses do, so a slow system cannot hide behind its own
  back-pressure. Latency is measured from each request's scheduled time, so any delay in the generator or in
  getting a connection counts against the system (no coordinated omission). A request goes out on an idle
  pooled connection, or a new one up to ``--max-conns``; beyond that it waits (and the wait is counted).
- ``closed``: ``--concurrency`` connections each send the next request as soon as the previous answer
  ended, until ``--count`` requests or ``--time-limit`` seconds (used for the 100,000-request soak).
- ``sequence``: one request at a time for each model in ``--models`` (used for first-request-after-a-cut),
  with per-request samples and the answering target's header.

Recorded per request: scheduled time, send time, first response byte, first streamed content token (the
first SSE payload whose delta has non-empty ``content``), end time, status, error kind. The summary (JSON)
has percentiles of latency (end - scheduled), TTFB and TTFT, the generator's own send lag, error counts and
the achieved throughput. With ``--api responses`` the body is a Responses API request (``input``,
``max_output_tokens``) and a streamed token is a ``response.output_text.delta`` event. Standard library only
(uses uvloop when importable).

    python bench/loadgen.py --url http://127.0.0.1:4000/v1/chat/completions --model bench --rate 200 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import sys
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

import contextlib

from http1 import ProtocolError, ResponseParser, chat_request

now = time.perf_counter

# A streamed chunk whose delta carries text: `"content":"x` (JSON may put a space after the colon).
_CONTENT = re.compile(rb'"content":\s?"(?:[^"\\]|\\.)')
_ERROR_EVENT = re.compile(rb'data:\s?\{"error"')
# The same for the Responses API's stream (--api responses): a text delta event, or a failure event.
_RESPONSES_CONTENT = re.compile(rb'"type":\s?"response\.output_text\.delta"')
_RESPONSES_ERROR = re.compile(rb'"type":\s?"(?:response\.failed|error)"')
IDLE_DROP_S = 2.0  # pooled connections idle longer than this are closed rather than reused


class Req:
    __slots__ = ("end", "error", "first_byte", "first_content", "measured", "sched", "sent", "status", "target")

    def __init__(self, sched: float, measured: bool) -> None:
        self.sched = sched
        self.measured = measured
        self.sent = 0.0
        self.first_byte = 0.0
        self.first_content = 0.0
        self.end = 0.0
        self.status = 0
        self.error: str | None = None
        self.target: str | None = None


class Conn(asyncio.Protocol):
    __slots__ = ("gen", "idle_since", "parser", "req", "tail", "transport")

    def __init__(self, gen: Generator) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.req: Req | None = None
        self.idle_since = 0.0
        self.tail = b""
        self.parser = ResponseParser(self._on_body if gen.stream else None)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, req: Req) -> None:
        self.req = req
        self.parser.reset()
        self.tail = b""
        req.sent = now()
        self.transport.write(self.gen.payload)  # type: ignore[union-attr]

    def _on_body(self, data: bytes) -> None:
        req = self.req
        if req is None:
            return
        scan = self.tail + data
        if not req.first_content and self.gen.content_event.search(scan):
            req.first_content = now()
        if self.gen.error_event.search(scan):
            req.error = "stream_error"
        self.tail = scan[-64:]

    def data_received(self, data: bytes) -> None:
        req = self.req
        if req is None:
            return  # bytes nobody asked for: ignore
        if not req.first_byte:
            req.first_byte = now()
        try:
            complete = self.parser.feed(data)
        except (ProtocolError, ValueError):
            self._fail("protocol")
            return
        if complete:
            self._complete()

    def _complete(self) -> None:
        req = self.req
        assert req is not None
        req.end = now()
        req.status = self.parser.status
        if req.status != 200 and req.error is None:
            req.error = f"status_{req.status}"
        if self.gen.want_target:
            value = self.parser.header(b"x-lifeline-target")
            req.target = value.decode() if value else None
        self.req = None
        close = self.parser.close_after
        if close:
            self.transport.close()  # type: ignore[union-attr]
        self.gen.finished(req, None if close else self)

    def _fail(self, kind: str) -> None:
        req = self.req
        self.req = None
        if self.transport is not None:
            self.transport.abort()
        if req is not None:
            req.end = now()
            req.error = req.error or kind
            self.gen.finished(req, None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gen.conn_lost(self)
        req = self.req
        if req is not None:
            if self.parser.eof():
                self._complete()
            else:
                self.req = None
                req.end = now()
                req.error = req.error or ("reset" if req.first_byte else "closed")
                self.gen.finished(req, None)

    def timeout(self) -> None:
        self._fail("timeout")


class Generator:
    def __init__(
        self,
        url: str,
        model: str,
        *,
        stream: bool,
        max_tokens: int,
        headers: dict[str, str],
        timeout: float,
        max_conns: int,
        want_target: bool = False,
        prompt: str = "Say hello to the benchmark.",
        api: str = "chat",
    ) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.path = parts.path or "/"
        self.stream = stream
        self.headers = headers
        self.max_tokens = max_tokens
        self.prompt = prompt
        self.api = api
        responses = api == "responses"
        self.content_event = _RESPONSES_CONTENT if responses else _CONTENT
        self.error_event = _RESPONSES_ERROR if responses else _ERROR_EVENT
        self.payload = b""
        self.set_model(model)
        self.timeout = timeout
        self.max_conns = max_conns
        self.want_target = want_target
        self.idle: list[Conn] = []
        self.busy: set[Conn] = set()
        self.opening = 0
        self.pending: deque[Req] = deque()
        self.done: list[Req] = []
        self.outstanding = 0
        self.all_done: asyncio.Event | None = None
        self.on_free: Any = None  # closed-loop hook: called with a free connection
        self.connects = 0
        self.connect_errors = 0
        self._tasks: set[asyncio.Task[None]] = set()  # connection attempts in flight (referenced until done)

    def set_model(self, model: str) -> None:
        body: dict[str, Any] = (
            {"model": model, "input": self.prompt, "max_output_tokens": self.max_tokens}
            if self.api == "responses"
            else {"model": model, "messages": [{"role": "user", "content": self.prompt}], "max_tokens": self.max_tokens}
        )
        if self.stream:
            body["stream"] = True
        self.payload = chat_request(
            self.host, self.port, self.path, json.dumps(body, separators=(",", ":")).encode(), self.headers
        )

    # -- dispatch ------------------------------------------------------------------------------------------

    def submit(self, req: Req) -> None:
        self.outstanding += 1
        conn = self._take_idle()
        if conn is not None:
            self.busy.add(conn)
            conn.send(req)
            return
        self.pending.append(req)
        if len(self.busy) + len(self.idle) + self.opening < self.max_conns:
            self.opening += 1
            self._spawn_open()

    def _spawn_open(self) -> None:
        task = asyncio.ensure_future(self._open())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _take_idle(self) -> Conn | None:
        t = now()
        while self.idle:
            conn = self.idle.pop()  # LIFO: hot connections are reused, cold ones age out
            if t - conn.idle_since > IDLE_DROP_S:
                conn.transport.close()  # type: ignore[union-attr]
                continue
            return conn
        return None

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(lambda: Conn(self), self.host, self.port)
        except OSError:
            self.opening -= 1
            self.connect_errors += 1
            if self.pending:
                req = self.pending.popleft()
                req.end = now()
                req.error = "connect"
                self.finished(req, None)
            return
        self.opening -= 1
        self.connects += 1
        self._release(conn)

    def _release(self, conn: Conn) -> None:
        if self.pending:
            self.busy.add(conn)
            conn.send(self.pending.popleft())
        elif self.on_free is not None and self.on_free(conn):
            return
        else:
            conn.idle_since = now()
            self.idle.append(conn)

    def finished(self, req: Req, conn: Conn | None) -> None:
        self.done.append(req)
        self.outstanding -= 1
        if conn is not None:
            self.busy.discard(conn)
            self._release(conn)
        elif self._wants_connection():
            self.opening += 1
            self._spawn_open()
        if self.outstanding == 0 and self.all_done is not None:
            self.all_done.set()

    def _wants_connection(self) -> bool:
        """A connection has gone (an error, or the server's `connection: close`): open another for what waits,
        and in the closed loop for the lane it carried, which would otherwise end with it."""
        room = len(self.busy) + len(self.idle) + self.opening < self.max_conns
        return room and (bool(self.pending) or self.on_free is not None)

    def conn_lost(self, conn: Conn) -> None:
        self.busy.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)

    async def watchdog(self) -> None:
        """Fail requests older than the timeout (measured from their scheduled time)."""
        while True:
            await asyncio.sleep(0.1)
            limit = now() - self.timeout
            for conn in list(self.busy):
                req = conn.req
                if req is not None and req.sched < limit:
                    conn.timeout()
            while self.pending and self.pending[0].sched < limit:
                req = self.pending.popleft()
                req.end = now()
                req.error = "timeout"
                self.finished(req, None)

    async def drain(self, limit: float) -> None:
        if self.outstanding == 0:
            return
        self.all_done = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_done.wait(), limit)

    def close(self) -> None:
        for conn in [*self.idle, *self.busy]:
            if conn.transport is not None:
                conn.transport.abort()


# -- modes ---------------------------------------------------------------------------------------------------


async def open_loop(gen: Generator, rate: float, duration: float, warmup: float) -> dict[str, Any]:
    watchdog = asyncio.ensure_future(gen.watchdog())
    total = round((warmup + duration) * rate)
    n_warm = round(warmup * rate)
    interval = 1.0 / rate
    t0 = now() + 0.02
    i = 0
    while i < total:
        t = now()
        due = t0 + i * interval
        if due > t:
            await asyncio.sleep(due - t)
            t = now()
        while i < total and t0 + i * interval <= t:
            gen.submit(Req(t0 + i * interval, i >= n_warm))
            i += 1
    send_end = now()
    await gen.drain(gen.timeout + 1.0)
    watchdog.cancel()
    gen.close()
    measured = [r for r in gen.done if r.measured]
    window_start = t0 + n_warm * interval
    out = summarize(measured, gen.stream)
    out.update(
        mode="open",
        offered_rate=rate,
        duration=duration,
        warmup=warmup,
        scheduled=total - n_warm,
        scheduled_total=total,
        completed_total=len(gen.done),
        unfinished=total - len(gen.done),
        send_overrun=round(send_end - (t0 + total * interval), 4),
        window=round(duration, 3),
        window_start=window_start,
        connections=gen.connects,
        connect_errors=gen.connect_errors,
    )
    return out


async def closed_loop(gen: Generator, concurrency: int, count: int, time_limit: float) -> dict[str, Any]:
    watchdog = asyncio.ensure_future(gen.watchdog())
    started = now()
    deadline = started + time_limit
    issued = 0

    def on_free(conn: Conn) -> bool:
        nonlocal issued
        t = now()
        if issued >= count or t > deadline:
            return False
        issued += 1
        gen.outstanding += 1
        gen.busy.add(conn)
        conn.send(Req(t, True))
        return True

    gen.on_free = on_free
    for _ in range(min(concurrency, count)):
        issued += 1
        gen.submit(Req(now(), True))
    while (issued < count and now() < deadline) or gen.outstanding:
        await asyncio.sleep(0.1)
        if now() > deadline + gen.timeout + 1.0:
            break
    elapsed = now() - started
    watchdog.cancel()
    gen.close()
    out = summarize(gen.done, gen.stream)
    out.update(
        mode="closed",
        concurrency=concurrency,
        count=len(gen.done),
        requested=count,
        elapsed=round(elapsed, 3),
        throughput=round(len(gen.done) / elapsed, 2) if elapsed else 0.0,
        connections=gen.connects,
    )
    return out


async def sequence(gen: Generator, models: list[str], gap: float, warm_model: str | None) -> dict[str, Any]:
    watchdog = asyncio.ensure_future(gen.watchdog())
    samples = []
    if warm_model:  # one unrecorded request first, so no sample pays for opening the connection
        gen.set_model(warm_model)
        gen.submit(Req(now(), False))
        await gen.drain(gen.timeout + 1.0)
        gen.done.clear()
    for model in models:
        gen.set_model(model)
        req = Req(now(), True)
        gen.submit(req)
        await gen.drain(gen.timeout + 1.0)
        samples.append(
            {
                "model": model,
                "latency_ms": round((req.end - req.sched) * 1000, 3),
                "ttft_ms": round((req.first_content - req.sched) * 1000, 3) if req.first_content else None,
                "status": req.status,
                "error": req.error,
                "target": req.target,
            }
        )
        if gap:
            await asyncio.sleep(gap)
    watchdog.cancel()
    gen.close()
    return {"mode": "sequence", "samples": samples}


# -- statistics ----------------------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, int(-(-q * len(sorted_values) // 100)))  # ceil(q/100 * n)
    return sorted_values[min(rank, len(sorted_values)) - 1]


def dist(values: list[float]) -> dict[str, float | None]:
    values = sorted(values)
    ms = 1000.0

    def pick(q: float) -> float | None:
        v = percentile(values, q)
        return None if v is None else round(v * ms, 3)

    return {
        "n": len(values),
        "mean": round(sum(values) / len(values) * ms, 3) if values else None,
        "p50": pick(50),
        "p90": pick(90),
        "p99": pick(99),
        "p999": pick(99.9),
        "max": round(values[-1] * ms, 3) if values else None,
    }


def summarize(reqs: list[Req], stream: bool) -> dict[str, Any]:
    ok = [r for r in reqs if r.error is None]
    errors = Counter(r.error for r in reqs if r.error is not None)
    out: dict[str, Any] = {
        "requests": len(reqs),
        "ok": len(ok),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "latency_ms": dist([r.end - r.sched for r in ok]),
        "service_ms": dist([r.end - r.sent for r in ok]),
        "ttfb_ms": dist([r.first_byte - r.sched for r in ok if r.first_byte]),
        "send_lag_ms": dist([r.sent - r.sched for r in reqs if r.sent]),
    }
    if stream:
        out["ttft_ms"] = dist([r.first_content - r.sched for r in ok if r.first_content])
        out["no_content"] = sum(1 for r in ok if not r.first_content)
    if ok:
        span = max(r.end for r in ok) - min(r.sched for r in ok)
        out["achieved_rate"] = round(len(ok) / span, 2) if span > 0 else None
    return out


# -- entry ---------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="full URL of the chat-completions (or responses) endpoint")
    p.add_argument("--api", choices=("chat", "responses"), default="chat", help="the body and stream events to expect")
    p.add_argument("--model", default="bench")
    p.add_argument("--models", default="", help="sequence mode: comma-separated models, one request each")
    p.add_argument("--mode", choices=("open", "closed", "sequence"), default="open")
    p.add_argument("--stream", action="store_true")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--rate", type=float, default=100.0, help="open loop: requests per second offered")
    p.add_argument("--duration", type=float, default=10.0, help="open loop: measured seconds")
    p.add_argument("--warmup", type=float, default=1.0, help="open loop: unmeasured seconds first")
    p.add_argument("--concurrency", type=int, default=32, help="closed loop: connections")
    p.add_argument("--count", type=int, default=1000, help="closed loop: requests")
    p.add_argument("--time-limit", type=float, default=120.0, help="closed loop: seconds at most")
    p.add_argument("--warm-model", help="sequence: send one unrecorded request to this model first")
    p.add_argument("--gap", type=float, default=0.05, help="sequence: pause between requests (s)")
    p.add_argument("--timeout", type=float, default=10.0, help="per request, from its scheduled time (s)")
    p.add_argument("--max-conns", type=int, default=1000)
    p.add_argument("--header", action="append", default=[], help="NAME:VALUE, repeatable")
    p.add_argument("--out", help="write the JSON summary here (default: stdout)")
    p.add_argument("--samples-out", help="also write every measured request as CSV: sched_s,latency_ms,error")
    p.add_argument("--no-uvloop", action="store_true")
    return p.parse_args(argv)


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    headers = {}
    for h in args.header:
        name, _, value = h.partition(":")
        headers[name.strip()] = value.strip()
    gen = Generator(
        args.url,
        args.model,
        stream=args.stream,
        max_tokens=args.max_tokens,
        headers=headers,
        timeout=args.timeout,
        max_conns=args.max_conns,
        want_target=args.mode == "sequence",
        api=args.api,
    )
    if args.mode == "open":
        result = await open_loop(gen, args.rate, args.duration, args.warmup)
        if args.samples_out:
            t0 = result["window_start"]
            rows = sorted((r.sched - t0, (r.end - r.sched) * 1000, r.error or "") for r in gen.done if r.measured)
            Path(args.samples_out).write_text("".join(f"{a:.4f},{b:.3f},{c}\n" for a, b, c in rows))
    elif args.mode == "closed":
        result = await closed_loop(gen, args.concurrency, args.count, args.time_limit)
    else:
        models = [m for m in args.models.split(",") if m] or [args.model]
        result = await sequence(gen, models, args.gap, args.warm_model)
    result["stream"] = args.stream
    result["model"] = args.model
    result["event_loop"] = type(asyncio.get_running_loop()).__module__.split(".")[0]
    return result


def run(coro: Any, *, use_uvloop: bool = True) -> Any:
    """Run a coroutine on uvloop when it is importable, else on asyncio's default loop."""
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(coro)
    return asyncio.run(coro)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = run(amain(args), use_uvloop=not args.no_uvloop)
    text = json.dumps(result)
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
