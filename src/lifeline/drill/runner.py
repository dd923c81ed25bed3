"""The drill itself: start the gateway, cut targets off, replay prompts through it, record every request.

`run_drill` starts a real gateway on loopback (the real targets behind it are contacted for real), injects
the plan's fault in front of the cut targets (`Health.cut`, as `lifeline admin cut` does), optionally runs
a baseline pass first without the cut, then sends the requests `concurrency` at a time and heals the cut.
Each request is measured from the client's side — as an application would see it — into a plain
`RequestResult`; nothing here formats or aggregates (drill/summary.py and drill/report.py do).

A request's outcome is one of:

- **answered**: the answer is complete (a finish reason, and for a stream `[DONE]`);
- **error**: the client was told it failed — an error status, an error event in the stream (which the
  `openai` SDK raises), or a transport failure;
- **incomplete**: a 200 whose answer stopped without a finish reason or `[DONE]` and *without* telling the
  client — a silent truncation, which the gateway promises never to produce: a bug, reported as such.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import httpx
import orjson

from lifeline.config.schema import Config
from lifeline.drill.prompts import Messages, cycle
from lifeline.errors import DrillError
from lifeline.jobs import Watcher, job_gateway
from lifeline.providers.faults import Fault

Outcome = Literal["answered", "error", "incomplete"]

#: the client waits this much longer than the gateway's own deadline, so a 504 from the gateway is seen
#: as such rather than as the client giving up first
CLIENT_GRACE = 30.0


@dataclass(frozen=True, slots=True)
class DrillPlan:
    """What to rehearse: which alias, which targets cut off and how, and how much traffic."""

    alias: str
    cut: tuple[str, ...]
    fault: Fault
    requests: int
    concurrency: int
    stream: bool = True
    max_tokens: int = 64
    baseline: bool = False
    #: sent as `Authorization: Bearer …` (a virtual key, when the config turns auth on)
    api_key: str | None = None
    #: for the report only: where the config and the prompts came from
    config_file: str | None = None
    prompts_file: str | None = None


@dataclass(frozen=True, slots=True)
class Continuation:
    """One seam in a continued stream, as the final chunk's `x_lifeline.continued` lists it."""

    source: str
    to: str
    after_chars: int | None
    reason: str | None


@dataclass(slots=True)
class RequestResult:
    """One request as the client saw it. Times are seconds; `started` counts from the start of its pass."""

    index: int
    started: float
    latency: float
    outcome: Outcome
    #: the HTTP status; None when no response arrived at all
    status: int | None = None
    #: x-lifeline-target: the target that answered (for a continued stream, the one that began it)
    target: str | None = None
    #: x-lifeline-attempts: upstream attempts before the answer began (skipped targets not counted)
    attempts: int | None = None
    #: streams: from sending the request to the first event with content
    ttft: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    finish_reason: str | None = None
    #: streams: the `[DONE]` sentinel arrived
    done: bool = False
    continued: list[Continuation] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    usage_estimated: bool = False
    request_id: str | None = None
    text: str = ""

    @property
    def finished_by(self) -> str | None:
        """The target that wrote the end of the answer: the last continuation's, else the one that began it."""
        return self.continued[-1].to if self.continued else self.target

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["continued"] = [
            {"from": c.source, "to": c.to, "after_chars": c.after_chars, "reason": c.reason} for c in self.continued
        ]
        data["finished_by"] = self.finished_by
        return data


@dataclass(slots=True)
class PassResult:
    """One pass of traffic: every request in the order it was sent, and how long the pass took."""

    name: str
    results: list[RequestResult]
    duration: float


@dataclass(slots=True)
class DrillResult:
    plan: DrillPlan
    #: the alias's targets, in its configured order
    chain: list[str]
    started_at: dt.datetime
    drill: PassResult
    baseline: PassResult | None
    #: every target's circuit (as /admin/targets shows it) when the drill's traffic ended, before healing
    circuits: list[dict[str, Any]]


# --- checking the plan -------------------------------------------------------------------------------


def check_plan(config: Config, plan: DrillPlan) -> list[str]:
    """The alias's chain, or DrillError saying what is wrong with the plan for this config."""
    chat_aliases = [name for name, alias in config.aliases.items() if alias.kind == "chat"]
    alias = config.aliases.get(plan.alias)
    if alias is None or alias.kind != "chat":
        known = ", ".join(chat_aliases) or "none"
        raise DrillError(f"there is no chat alias '{plan.alias}'; chat aliases: {known}")
    unknown = [t for t in plan.cut if t not in config.targets]
    if unknown:
        names = ", ".join(f"'{t}'" for t in unknown)
        raise DrillError(f"--cut names unknown target(s) {names}; targets: {', '.join(config.targets)}")
    if not plan.cut:
        raise DrillError("--cut names no target")
    if plan.requests < 1:
        raise DrillError("--requests must be 1 or more")
    if plan.concurrency < 1:
        raise DrillError("--concurrency must be 1 or more")
    if plan.max_tokens < 1:
        raise DrillError("--max-tokens must be 1 or more")
    if config.auth.enabled and not plan.api_key:
        raise DrillError("the config turns auth on: pass a virtual key with --api-key (or $LIFELINE_API_KEY)")
    return list(alias.targets)


def first_chat_alias(config: Config) -> str | None:
    return next((name for name, alias in config.aliases.items() if alias.kind == "chat"), None)


# --- the drill -----------------------------------------------------------------------------------------


def run_drill(
    config: Config, plan: DrillPlan, prompts: Sequence[Messages], *, watcher: Watcher | None = None
) -> DrillResult:
    """Run the whole drill against a gateway started for it; blocks until the gateway has stopped."""
    chain = check_plan(config, plan)
    if not prompts:
        raise DrillError("no prompts to send")
    client_timeout = config.server.request_timeout + CLIENT_GRACE
    started_at = dt.datetime.now(dt.UTC)
    with job_gateway(config, DrillError) as gw:
        health = gw.gateway.health
        baseline = None
        if plan.baseline:
            baseline = asyncio.run(
                run_pass(gw.base_url, plan, prompts, name="baseline", watcher=watcher, timeout=client_timeout)
            )
        # No request is running between the passes, so changing the circuits from this thread cannot
        # race the gateway's loop; a fault applies to attempts that start after it is set.
        for target in plan.cut:
            health.cut(target, plan.fault)
        try:
            drill = asyncio.run(
                run_pass(gw.base_url, plan, prompts, name="drill", watcher=watcher, timeout=client_timeout)
            )
            shown = chain + [t for t in plan.cut if t not in chain]
            circuits = health.snapshot(shown)
        finally:
            for target in plan.cut:
                health.heal(target)
    return DrillResult(plan, chain, started_at, drill, baseline, circuits)


async def run_pass(
    base_url: str,
    plan: DrillPlan,
    prompts: Sequence[Messages],
    *,
    name: str = "drill",
    watcher: Watcher | None = None,
    timeout: float = 300.0 + CLIENT_GRACE,
    transport: httpx.AsyncBaseTransport | None = None,
) -> PassResult:
    """Send `plan.requests` requests to the gateway at `base_url`, `plan.concurrency` at a time."""
    headers = {"authorization": f"Bearer {plan.api_key}"} if plan.api_key else {}
    limits = httpx.Limits(max_connections=plan.concurrency, max_keepalive_connections=plan.concurrency)
    results: list[RequestResult | None] = [None] * plan.requests
    indices = itertools.count()
    if watcher is not None:
        watcher.begin(name, plan.requests)
    # The whole-request bound is ours (asyncio.timeout); httpx's own timeouts only catch a dead socket.
    http_timeout = httpx.Timeout(timeout, connect=10.0)
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, timeout=http_timeout, limits=limits, transport=transport
    ) as client:
        origin = time.perf_counter()

        async def worker() -> None:
            while (index := next(indices)) < plan.requests:
                result = await send_one(client, plan, cycle(prompts, index), index, origin, timeout)
                results[index] = result
                if watcher is not None:
                    watcher.update(result)

        try:
            await asyncio.gather(*(worker() for _ in range(min(plan.concurrency, plan.requests))))
        finally:
            if watcher is not None:
                watcher.end()
        duration = time.perf_counter() - origin
    return PassResult(name, [r for r in results if r is not None], duration)


async def send_one(
    client: httpx.AsyncClient, plan: DrillPlan, messages: Messages, index: int, origin: float, timeout: float
) -> RequestResult:
    body: dict[str, Any] = {"model": plan.alias, "messages": messages, "max_tokens": plan.max_tokens}
    if plan.stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    sent = time.perf_counter()
    result = RequestResult(index=index, started=sent - origin, latency=0.0, outcome="error")
    try:
        async with asyncio.timeout(timeout):
            async with client.stream("POST", "/chat/completions", content=orjson.dumps(body), headers=_JSON) as reply:
                result.status = reply.status_code
                result.target = reply.headers.get("x-lifeline-target")
                result.attempts = _int(reply.headers.get("x-lifeline-attempts"))
                result.request_id = reply.headers.get("x-request-id")
                if reply.status_code != 200:
                    _read_error(result, await reply.aread())
                elif plan.stream:
                    await _read_stream(result, reply, sent)
                else:
                    _read_whole(result, await reply.aread())
    except TimeoutError:
        _fail(result, "client_timeout", f"no complete answer within {timeout:g} s")
    except httpx.HTTPError as exc:
        # The gateway dropped the connection or could not be reached: the client was told, by an exception.
        _fail(result, "connection_error", f"{type(exc).__name__}: {exc}")
    except ValueError as exc:  # an answer that is not the JSON it should be
        _fail(result, "malformed_response", str(exc))
    result.latency = time.perf_counter() - sent
    return result


_JSON = {"content-type": "application/json"}


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def _fail(result: RequestResult, code: str, message: str) -> None:
    result.outcome = "error"
    result.error_code = code
    result.error_message = message[:500]


def _read_error(result: RequestResult, raw: bytes) -> None:
    """An error answer, in OpenAI's envelope when the gateway sent one."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        code = error.get("code") or error.get("type") or f"http_{result.status}"
        _fail(result, str(code), str(error.get("message") or ""))
    else:
        _fail(result, f"http_{result.status}", raw[:200].decode("utf-8", "replace"))


def _read_whole(result: RequestResult, raw: bytes) -> None:
    data = orjson.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("the answer is not a JSON object")
    choices = data.get("choices") or []
    first = choices[0] if choices and isinstance(choices[0], dict) else {}
    message = first.get("message") or {}
    result.text = str(message.get("content") or "")
    result.finish_reason = first.get("finish_reason")
    _read_usage(result, data)
    extension = data.get("x_lifeline") or {}
    result.continued = _continuations(extension.get("continued"))
    # A whole answer without a finish reason claims to be complete while it may not be.
    finished = bool(choices) and all(isinstance(c, dict) and c.get("finish_reason") for c in choices)
    result.outcome = "answered" if finished else "incomplete"


async def _read_stream(result: RequestResult, reply: httpx.Response, sent: float) -> None:
    pieces: list[str] = []
    async for line in reply.aiter_lines():
        if not line.startswith("data:"):
            continue  # blank separators, SSE comments (keep-alives)
        payload = line[5:].strip()
        if payload == "[DONE]":
            result.done = True
            continue
        event = orjson.loads(payload)
        if not isinstance(event, dict):
            raise ValueError("a stream event is not a JSON object")
        error = event.get("error")
        if isinstance(error, dict):
            # The error event the openai SDK raises: the client knows the answer failed.
            _fail(result, str(error.get("code") or error.get("type") or "stream_error"), str(error.get("message")))
            result.text = "".join(pieces)
            return
        _read_usage(result, event)
        extension = event.get("x_lifeline") or {}
        if extension.get("continued"):
            result.continued = _continuations(extension["continued"])
        for choice in event.get("choices") or ():
            delta = choice.get("delta") or {}
            if result.ttft is None and _has_content(delta):
                result.ttft = time.perf_counter() - sent
            if choice.get("index", 0) == 0 and delta.get("content"):
                pieces.append(str(delta["content"]))
            if choice.get("finish_reason"):
                result.finish_reason = str(choice["finish_reason"])
    result.text = "".join(pieces)
    result.outcome = "answered" if result.finish_reason and result.done else "incomplete"
    if result.outcome == "incomplete":
        missing = "finish_reason" if not result.finish_reason else "[DONE]"
        result.error_message = f"the stream ended without {missing} and without an error"


def _has_content(delta: dict[str, Any]) -> bool:
    return any(delta.get(k) for k in ("content", "reasoning_content", "refusal", "tool_calls"))


def _read_usage(result: RequestResult, data: dict[str, Any]) -> None:
    usage = data.get("usage")
    if isinstance(usage, dict):
        result.prompt_tokens = _maybe_int(usage.get("prompt_tokens"))
        result.completion_tokens = _maybe_int(usage.get("completion_tokens"))
        extension = data.get("x_lifeline") or {}
        result.usage_estimated = bool(extension.get("usage_estimated"))


def _maybe_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _continuations(value: Any) -> list[Continuation]:
    if not isinstance(value, list):
        return []
    return [
        Continuation(
            source=str(item.get("from")),
            to=str(item.get("to")),
            after_chars=_maybe_int(item.get("after_chars")),
            reason=str(item["reason"]) if item.get("reason") is not None else None,
        )
        for item in value
        if isinstance(item, dict)
    ]
