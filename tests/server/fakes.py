"""An in-process gateway for the tests of the routes: the real app over fake providers, driven through an ASGI
transport (no sockets), with every ledger record and every call of `Accounting.finish` kept for the test.

A fake target behaves as its `model` says: "ok" (answers, reporting usage), "quiet" (answers without usage),
"down" (fails before any content), "cut" (fails after "Hello"), "hang" (sends "Hello", or for a whole answer
nothing, then waits until cancelled).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from starlette.applications import Starlette
from starlette.types import Message

from lifeline.accounting.records import LedgerRecord
from lifeline.accounting.service import Admission, Finish
from lifeline.config import Config, parse_config
from lifeline.errors import UpstreamCutOff, UpstreamModelNotFound
from lifeline.providers.base import ChatCall, Chunk, Completion, EmbeddingCall, inspect_chunk
from lifeline.providers.registry import ProviderRegistry
from lifeline.server.app import create_app
from lifeline.server.gateway import Gateway

USAGE = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
PROMPT = [{"role": "user", "content": "Say hello."}]


class FakeProvider:
    """One target whose behaviour is its model's name (see the module docstring)."""

    supports_n = True
    context_window: int | None = None

    def __init__(self, name: str, model: str) -> None:
        self.name = name
        self.model = model
        self.called = asyncio.Event()

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def complete(self, call: ChatCall) -> Completion:
        await self._begin()
        message = {"role": "assistant", "content": "Hello there"}
        body = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": self.model}
        body["choices"] = [{"index": 0, "message": message, "finish_reason": "stop"}]
        usage = None if self.model == "quiet" else USAGE
        if usage is not None:
            body["usage"] = usage
        return Completion(body=body, model=self.model, usage=usage)

    async def stream(self, call: ChatCall) -> AsyncIterator[Chunk]:
        self.called.set()
        if self.model == "down":
            raise UpstreamModelNotFound("no such model", target=self.name, upstream_status=404)
        yield _chunk(self.model, {"role": "assistant"})
        text = "Hello" if call.prefill is None else " there"
        yield _chunk(self.model, {"content": text})
        if self.model == "cut":
            raise UpstreamCutOff("the connection was cut", target=self.name)
        if self.model == "hang":
            await asyncio.Event().wait()
        if call.prefill is None:
            yield _chunk(self.model, {"content": " there"})
        yield _chunk(self.model, {}, "stop")
        if self.model != "quiet" and call.request.wants_usage:
            yield _chunk(self.model, None, usage=USAGE)

    async def embed(self, call: EmbeddingCall) -> Completion:
        await self._begin()
        body: dict[str, Any] = {"object": "list", "model": self.model}
        body["data"] = [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5]}]
        usage = None if self.model == "quiet" else {"prompt_tokens": 3, "total_tokens": 3}
        if usage is not None:
            body["usage"] = usage
        return Completion(body=body, model=self.model, usage=usage)

    async def _begin(self) -> None:
        self.called.set()
        if self.model == "down":
            raise UpstreamModelNotFound("no such model", target=self.name, upstream_status=404)
        if self.model == "hang":
            await asyncio.Event().wait()
        assert self.model in ("ok", "quiet"), f"a whole answer from {self.model!r}"


def _chunk(
    model: str, delta: dict[str, Any] | None, finish: str | None = None, usage: dict[str, Any] | None = None
) -> Chunk:
    data: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model}
    data["choices"] = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    if usage is not None:
        data["usage"] = usage
    return inspect_chunk(data, orjson.dumps(data))


@dataclass
class InProcess:
    """A started app over fake targets, and what its accounting was asked to do."""

    app: Starlette
    providers: dict[str, FakeProvider]
    records: list[LedgerRecord] = field(default_factory=list)
    finishes: list[Finish] = field(default_factory=list)

    def client(self) -> httpx.AsyncClient:
        # The edge guard answers only the Host names of a loopback bind: not httpx's default "testserver".
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://127.0.0.1")

    @property
    def record(self) -> LedgerRecord:
        """The one ledger record written, from the one call of `Accounting.finish`."""
        assert len(self.finishes) == 1, self.finishes
        assert len(self.records) == 1, self.records
        return self.records[0]


def make_config(*models: str, prefill: bool = False) -> Config:
    """Targets t1, t2 … serving `models` in order, behind the chat alias `chat` and the embeddings alias
    `embed`."""
    targets = {
        f"t{i}": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": model, "embedding_space": "fake"}
        | ({"capabilities": {"prefill": True}} if prefill else {})
        for i, model in enumerate(models, 1)
    }
    aliases = {"chat": {"targets": list(targets)}, "embed": {"kind": "embeddings", "targets": list(targets)}}
    return parse_config({"targets": targets, "aliases": aliases, "retry": {"max_retries": 0}}, env={})


Scenario = Callable[[InProcess, httpx.AsyncClient], Awaitable[Any]]


def run(config: Config, scenario: Scenario) -> tuple[Any, InProcess]:
    """`scenario` against the app for `config`, with a client: what it returned, and the app's records."""

    async def main() -> tuple[Any, InProcess]:
        async with in_process(config) as served, served.client() as client:
            return await scenario(served, client), served

    return asyncio.run(main())


@asynccontextmanager
async def in_process(config: Config) -> AsyncIterator[InProcess]:
    """The app for `config` over fake providers, started and closed as its lifespan would."""
    providers: dict[str, FakeProvider] = {}

    def build(name: str, target: Any) -> FakeProvider:
        providers[name] = FakeProvider(name, target.model)
        return providers[name]

    registry = ProviderRegistry()
    registry.register("openai", build)
    app = create_app(config, registry)
    gateway: Gateway = app.state.gateway
    ledger, accounting = gateway.accounting.ledger, gateway.accounting
    assert ledger is not None
    served = InProcess(app, providers)
    record, finish = ledger.record, accounting.finish

    def keep_record(rec: LedgerRecord) -> bool:
        served.records.append(rec)
        return record(rec)

    async def keep_finish(admission: Admission, end: Finish) -> None:
        served.finishes.append(end)
        await finish(admission, end)

    ledger.record = keep_record  # type: ignore[method-assign]
    accounting.finish = keep_finish  # type: ignore[method-assign]
    await gateway.start()
    try:
        yield served
    finally:
        await gateway.close()


async def leave_early(
    app: Starlette, path: str, body: dict[str, Any], *, gone: asyncio.Event | None = None, after_pieces: int = 0
) -> tuple[int | None, list[bytes]]:
    """POST `body` to `path` as a client that goes away once `gone` is set, or once it has received
    `after_pieces` pieces of the response body. The status it saw, and those pieces."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    gone = gone or asyncio.Event()
    status: int | None = None
    pieces: list[bytes] = []
    requests = [{"type": "http.request", "body": orjson.dumps(body), "more_body": False}]

    async def receive() -> Message:
        if requests:
            return requests.pop()
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body" and message.get("body"):
            pieces.append(message["body"])
            if after_pieces and len(pieces) >= after_pieces:
                gone.set()

    async with asyncio.timeout(30):  # a guard against hanging, not a measure
        await app(scope, receive, send)
    return status, pieces
