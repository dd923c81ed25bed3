"""What the offline jobs that drive a real gateway share (the drill, the eval, the audit): the gateway they
start on loopback, the config it runs, the requests they send through it, and the progress they report as
requests finish.

A job starts its own gateway from the user's config (`job_gateway`) — the real router, providers, circuits
and price book — so that what it measures is what an application would see. It sends its requests with
`run_jobs` (bounded concurrency, each one's worst case reserved under the cost cap by a `CostGate` before it
is sent), each a chat request read whole or streamed by `post_chat`. Its progress goes to a `Watcher`
(cli/progress.py draws it as a bar on a terminal and as plain lines otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import httpx
import orjson

from lifeline.config.schema import Config
from lifeline.testing.gateway import RunningGateway, run_gateway


class Finished(Protocol):
    """A finished request as a watcher sees it: whether it was answered."""

    @property
    def outcome(self) -> str: ...


class Costed(Finished, Protocol):
    """A finished request as `run_jobs` sees it: whether it was answered, and what it cost (USD)."""

    @property
    def cost_usd(self) -> float: ...


R = TypeVar("R", bound=Costed)


class Watcher(Protocol):
    """Told about progress as requests finish (a progress bar); called on the job's event loop."""

    def begin(self, phase: str, total: int) -> None: ...

    def update(self, result: Finished) -> None: ...

    def end(self) -> None: ...


def isolated(config: Config) -> Config:
    """The config a job's gateway runs: without Redis, so that the circuits it opens stay in this process and
    are not broadcast to the replicas serving production (nor are its rate-limit windows and budget
    reservations shared with theirs)."""
    if config.accounting.redis_url is None:
        return config
    accounting = config.accounting.model_copy(update={"redis_url": None})
    return config.model_copy(update={"accounting": accounting})


@contextlib.contextmanager
def job_gateway(config: Config, error: type[ValueError]) -> Iterator[RunningGateway]:
    """A gateway serving `isolated(config)` on loopback for the block; `error` (the job's own) when it cannot
    start — a model that cannot load, a port, a database."""
    try:
        manager = run_gateway(isolated(config))
        running = manager.__enter__()
    except Exception as exc:
        raise error(f"the gateway could not start: {exc}") from exc
    try:
        yield running
    finally:
        manager.__exit__(None, None, None)


# --- sending -----------------------------------------------------------------------------------------------


class CostGate:
    """The cost cap: a request is sent only if what was spent, what requests in flight may still cost and its
    own worst case all fit under the cap. Costs in USD."""

    def __init__(self, cap: float | None, spent: float) -> None:
        self.cap = cap
        self.spent = spent
        self.reserved = 0.0
        self.stopped = False

    def reserve(self, estimate: float) -> bool:
        if self.stopped:
            return False
        if self.cap is not None and self.spent + self.reserved + estimate > self.cap:
            self.stopped = True
            return False
        self.reserved += estimate
        return True

    def settle(self, estimate: float, cost: float) -> None:
        self.reserved -= estimate
        self.spent += cost


async def run_jobs(
    base_url: str,
    phase: str,
    jobs: Sequence[tuple[float, Callable[[httpx.AsyncClient], Awaitable[R]]]],
    concurrency: int,
    timeout: float,
    gate: CostGate,
    finished: Callable[[R], None],
    watcher: Watcher | None = None,
) -> None:
    """Run `jobs` (each its worst-case cost and what sends it) `concurrency` at a time against the job's
    gateway; each is sent only if the gate reserves its worst case, and `finished` gets its record at once
    (a results file appends it)."""
    if not jobs:
        return
    if watcher is not None:
        watcher.begin(phase, len(jobs))
    queue = iter(jobs)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    http_timeout = httpx.Timeout(timeout, connect=10.0)
    async with httpx.AsyncClient(base_url=base_url, timeout=http_timeout, limits=limits) as client:

        async def worker() -> None:
            for cost, job in queue:
                if not gate.reserve(cost):
                    return
                record: R | None = None
                try:
                    record = await job(client)
                finally:
                    gate.settle(cost, record.cost_usd if record is not None else 0.0)
                finished(record)
                if watcher is not None:
                    watcher.update(record)

        try:
            await asyncio.gather(*(worker() for _ in range(min(concurrency, len(jobs)))))
        finally:
            if watcher is not None:
                watcher.end()


@dataclass(slots=True)
class Reply:
    status: int | None = None
    target: str | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    response: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


_JSON = {"content-type": "application/json"}


async def post_chat(client: httpx.AsyncClient, body: dict[str, Any], timeout: float) -> Reply:
    """One chat request as a client sees it; a failure is an error object, never an exception."""
    reply = Reply()
    sent = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            async with client.stream("POST", "/chat/completions", content=orjson.dumps(body), headers=_JSON) as answer:
                reply.status = answer.status_code
                reply.target = answer.headers.get("x-lifeline-target")
                if answer.status_code == 200 and body.get("stream"):
                    await read_stream(reply, answer, sent)
                else:
                    read_whole(reply, orjson.loads(await answer.aread()))
    except TimeoutError:
        reply.error = {"status": None, "code": "client_timeout", "message": f"no answer within {timeout:g} s"}
    except httpx.HTTPError as exc:
        reply.error = {"status": None, "code": "connection_error", "message": f"{type(exc).__name__}: {exc}"[:500]}
    except (orjson.JSONDecodeError, TypeError) as exc:
        reply.error = {"status": reply.status, "code": "malformed_response", "message": str(exc)[:500]}
    reply.latency_ms = (time.perf_counter() - sent) * 1000
    return reply


def read_whole(reply: Reply, data: Any) -> None:
    if reply.status == 200 and isinstance(data, dict):
        reply.response = data
        return
    error = data.get("error") if isinstance(data, dict) else None
    error = error if isinstance(error, dict) else {}
    reply.error = {
        "status": reply.status,
        "code": error.get("code") or error.get("type"),
        "message": str(error.get("message") or "")[:500],
    }


async def read_stream(reply: Reply, answer: httpx.Response, sent: float) -> None:
    """A streamed answer put back together as the chat.completion it stands for (text, tool calls, finish
    reason, usage); the time to its first content is its TTFT."""
    pieces: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    finish: str | None = None
    usage: Any = None
    async for line in answer.aiter_lines():
        if not line.startswith("data:") or line[5:].strip() == "[DONE]":
            continue
        event = orjson.loads(line[5:].strip())
        if not isinstance(event, dict):
            raise TypeError("a stream event is not a JSON object")
        if isinstance(event.get("error"), dict):
            read_whole(reply, {"error": event["error"]})
            reply.error = reply.error or {}
            reply.error["status"] = None  # the answer began (200) and then failed
            return
        usage = event.get("usage") or usage
        for choice in event.get("choices") or ():
            delta = choice.get("delta") or {}
            if reply.ttft_ms is None and (delta.get("content") or delta.get("tool_calls")):
                reply.ttft_ms = (time.perf_counter() - sent) * 1000
            if delta.get("content"):
                pieces.append(str(delta["content"]))
            for call in delta.get("tool_calls") or ():
                slot = calls.setdefault(
                    call.get("index", 0), {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
                )
                slot["id"] = call.get("id") or slot["id"]
                function = call.get("function") or {}
                slot["function"]["name"] += function.get("name") or ""
                slot["function"]["arguments"] += function.get("arguments") or ""
            finish = choice.get("finish_reason") or finish
    message: dict[str, Any] = {"role": "assistant", "content": "".join(pieces) if pieces or not calls else None}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    reply.response = {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }
    if isinstance(usage, dict):
        reply.response["usage"] = usage


def int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
