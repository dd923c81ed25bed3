"""Lifeline as a library: the gateway inside this process, with no server and no socket, for tests and
notebooks (docs/library.md).

    with Lifeline.from_config("lifeline.yaml") as gateway:
        client = gateway.openai()            # the official SDK's client; gateway.async_openai() too
        client.chat.completions.create(model="chat", messages=[...])

The app runs on an event loop of its own, in a background thread, through its whole life: the ASGI lifespan
starts the gateway (accounting, targets) and, at close, stops it (the ledger drained to the database). A
client's HTTP goes straight into the app through an httpx transport, sync or async, that streams: a streamed
answer arrives piece by piece as the app sends it, and a client that closes a response early has left, as a
client on a socket would. Whichever loop or thread the caller runs on (a notebook's, pytest's, none), the
app stays on its own.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import logging
import sys
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping
from concurrent.futures import Future
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from starlette.applications import Starlette
from starlette.types import Message

from lifeline.config import Config, load_config, parse_config
from lifeline.providers.registry import ProviderRegistry
from lifeline.server.app import create_app
from lifeline.server.gateway import Gateway

if TYPE_CHECKING:
    import openai as openai_sdk

log = logging.getLogger("lifeline.inprocess")

T = TypeVar("T")

#: the origin clients are given: a name the gateway's edge guard always answers to
ORIGIN = "http://localhost"
#: how long close() lets requests still running finish before they are cancelled (seconds)
CLOSE_GRACE = 10.0
_END = object()


class _Loop:
    """An event loop running in a daemon thread; coroutines are handed to it from any thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="lifeline-inprocess", daemon=True)
        self.thread.start()

    @property
    def running(self) -> bool:
        return self.thread.is_alive() and not self.loop.is_closed()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        if not self.running:
            coro.close()
            raise RuntimeError("the in-process gateway is closed")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("a sync call into the in-process gateway from its own event loop would deadlock")
        return self.submit(coro).result()

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(self.submit(coro))

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=CLOSE_GRACE)
        if not self.thread.is_alive():
            self.loop.close()


class _Exchange:
    """One request inside the app, on the app's loop: its response head once it comes, then its body."""

    def __init__(self, app: Starlette, scope: dict[str, Any], body: bytes) -> None:
        self.head: asyncio.Future[tuple[int, list[tuple[bytes, bytes]]]] = asyncio.get_running_loop().create_future()
        self.pieces: asyncio.Queue[object] = asyncio.Queue()
        self.left = asyncio.Event()
        self._body: bytes | None = body
        self.task = asyncio.ensure_future(self._run(app, scope))

    async def _run(self, app: Starlette, scope: dict[str, Any]) -> None:
        try:
            await app(scope, self._receive, self._send)
        except Exception as exc:
            if not self.head.done():
                self.head.set_exception(exc)  # said to the caller, as httpx's ASGI transport would
            else:
                log.exception("the app failed after its response began")
        finally:
            if not self.head.done():
                self.head.set_exception(RuntimeError("the app ended without a response"))
            self.pieces.put_nowait(_END)

    async def _receive(self) -> Message:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self.left.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.head.set_result((message["status"], list(message.get("headers") or ())))
        elif message["type"] == "http.response.body":
            if message.get("body"):
                self.pieces.put_nowait(bytes(message["body"]))
            if not message.get("more_body", False):
                self.pieces.put_nowait(_END)

    async def next_piece(self) -> bytes | None:
        piece = await self.pieces.get()
        if piece is _END:
            self.pieces.put_nowait(_END)  # every later read sees the end too
            return None
        assert isinstance(piece, bytes)
        return piece

    async def leave(self) -> None:
        """The client is gone: the app is told (a disconnect), and its task ends in its own time."""
        self.left.set()


def _scope(request: httpx.Request) -> dict[str, Any]:
    url = request.url
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": url.scheme,
        "path": url.path,
        "raw_path": url.raw_path.split(b"?", 1)[0],
        "query_string": url.query,
        "root_path": "",
        "headers": [(name.lower(), value) for name, value in request.headers.raw],
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", url.port or 80),
        "state": {},
    }


@functools.cache
def _transport_types(http: ModuleType) -> tuple[type[Any], type[Any]]:
    """The sync and async transport classes for an httpx-like module: httpx itself, or the fork an SDK is
    built on (recent `openai` releases use `httpx2`, whose transports and streams have httpx's shape)."""

    class SyncBody(http.SyncByteStream):  # type: ignore[name-defined,misc]
        def __init__(self, loop: _Loop, exchange: _Exchange) -> None:
            self._loop, self._exchange = loop, exchange

        def __iter__(self) -> Iterator[bytes]:
            while (piece := self._loop.run(self._exchange.next_piece())) is not None:
                yield piece

        def close(self) -> None:
            if self._loop.running:  # after the gateway's close there is nobody left to tell
                self._loop.run(self._exchange.leave())

    class AsyncBody(http.AsyncByteStream):  # type: ignore[name-defined,misc]
        def __init__(self, loop: _Loop, exchange: _Exchange) -> None:
            self._loop, self._exchange = loop, exchange

        async def __aiter__(self) -> AsyncIterator[bytes]:
            while (piece := await self._loop.arun(self._exchange.next_piece())) is not None:
                yield piece

        async def aclose(self) -> None:
            if self._loop.running:
                await self._loop.arun(self._exchange.leave())

    class Transport(http.BaseTransport):  # type: ignore[name-defined,misc]
        """The sync transport into the in-process gateway."""

        def __init__(self, lifeline: Lifeline) -> None:
            self._lifeline = lifeline

        def handle_request(self, request: Any) -> Any:
            loop = self._lifeline._running()
            body = request.read()
            exchange, (status, headers) = loop.run(self._lifeline._begin(request, body))
            return http.Response(status, headers=headers, stream=SyncBody(loop, exchange))

    class AsyncTransport(http.AsyncBaseTransport):  # type: ignore[name-defined,misc]
        """The async transport into the in-process gateway, from any event loop."""

        def __init__(self, lifeline: Lifeline) -> None:
            self._lifeline = lifeline

        async def handle_async_request(self, request: Any) -> Any:
            loop = self._lifeline._running()
            body = await request.aread()
            exchange, (status, headers) = await loop.arun(self._lifeline._begin(request, body))
            return http.Response(status, headers=headers, stream=AsyncBody(loop, exchange))

    return Transport, AsyncTransport


def _http_module_of(sdk_client: type[Any]) -> ModuleType:
    """The httpx-like module an SDK's default HTTP client class is built on."""
    for base in sdk_client.__mro__:
        top = base.__module__.partition(".")[0]
        if base.__name__ in ("Client", "AsyncClient") and top != "openai":
            return sys.modules[top]
    return httpx


class Lifeline:
    """A gateway in this process. Start it with `with`/`async with`, `start()`, or by making a client;
    `close()` (or leaving the block) stops it and flushes the ledger; one still running when the interpreter
    exits is closed then."""

    def __init__(
        self, config: Config, *, config_path: str | Path | None = None, registry: ProviderRegistry | None = None
    ) -> None:
        self.config = config
        #: the ASGI app; a reload (POST /admin/reload with `config_path`) replaces its gateway
        self.app = create_app(config, registry, config_path=config_path)
        self._lock = threading.Lock()
        self._loop: _Loop | None = None
        self._lifespan: asyncio.Task[None] | None = None
        self._shutdown: asyncio.Event | None = None
        self._exchanges: set[_Exchange] = set()
        self._closed = False

    @classmethod
    def from_config(
        cls, source: Config | Mapping[str, Any] | str | Path, *, env: Mapping[str, str] | None = None
    ) -> Lifeline:
        """A gateway for a config object, a config as a mapping (as YAML would read), or a config file's path.
        `env` stands in for the environment that `${VAR}` references read (default: os.environ)."""
        if isinstance(source, Config):
            return cls(source)
        if isinstance(source, Mapping):
            return cls(parse_config(dict(source), env))
        return cls(load_config(source, env), config_path=source)

    @property
    def gateway(self) -> Gateway:
        """The gateway serving now (a reload replaces it)."""
        gateway: Gateway = self.app.state.gateway
        return gateway

    @property
    def base_url(self) -> str:
        """What an OpenAI client is given as its base URL (with the transports below, never a socket)."""
        return f"{ORIGIN}/v1"

    # --- clients --------------------------------------------------------------------------------------

    def transport(self, http: ModuleType = httpx) -> Any:
        """An `http.BaseTransport` into the gateway, for a client of that httpx-like module (httpx by
        default) made by hand."""
        return _transport_types(http)[0](self)

    def async_transport(self, http: ModuleType = httpx) -> Any:
        return _transport_types(http)[1](self)

    def http_client(self, **options: Any) -> httpx.Client:
        """An httpx client whose requests go into the gateway (`/v1/...`, `/admin/...`, `/metrics`)."""
        self.start()
        return httpx.Client(transport=self.transport(), base_url=ORIGIN, **options)

    def async_http_client(self, **options: Any) -> httpx.AsyncClient:
        self.start()
        return httpx.AsyncClient(transport=self.async_transport(), base_url=ORIGIN, **options)

    def openai(self, api_key: str = "unused", **options: Any) -> openai_sdk.OpenAI:
        """The official `openai` SDK's client, talking to this gateway (`api_key`: a virtual key when the
        config has `auth.enabled`; `options`: the client's own, such as max_retries)."""
        import openai

        http = _http_module_of(openai.DefaultHttpxClient)
        client = http.Client(transport=self.transport(http), timeout=options.pop("timeout", 600.0))
        self.start()
        return openai.OpenAI(base_url=self.base_url, api_key=api_key, http_client=client, **options)

    def async_openai(self, api_key: str = "unused", **options: Any) -> openai_sdk.AsyncOpenAI:
        """The official `openai` SDK's async client, usable from any event loop."""
        import openai

        http = _http_module_of(openai.DefaultAsyncHttpxClient)
        client = http.AsyncClient(transport=self.async_transport(http), timeout=options.pop("timeout", 600.0))
        self.start()
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=api_key, http_client=client, **options)

    # --- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> Lifeline:
        """Run the app's startup (the database opened and migrated, the targets started); again: nothing."""
        with self._lock:
            if self._closed:
                raise RuntimeError("this in-process gateway is closed; make another with Lifeline.from_config")
            if self._loop is not None:
                return self
            loop = _Loop()
            try:
                loop.run(self._startup())
            except BaseException:
                with contextlib.suppress(Exception):  # what did start (the database, say) is released
                    loop.run(self.gateway.close())
                loop.stop()
                raise
            self._loop = loop
            atexit.register(self.close)
        return self

    def close(self) -> None:
        """Let requests still running finish (for a while), then run the app's shutdown: the targets closed,
        the ledger drained to the database. Safe to call more than once."""
        with self._lock:
            loop, self._loop = self._loop, None
            self._closed = True
        if loop is None:
            return
        atexit.unregister(self.close)
        try:
            loop.run(self._shutdown_app())
        finally:
            loop.stop()

    def __enter__(self) -> Lifeline:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> Lifeline:
        # in a worker thread: the caller's loop keeps running while the app starts on its own
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.close)

    # --- on the app's loop ----------------------------------------------------------------------------

    def _running(self) -> _Loop:
        loop = self._loop
        if loop is None:
            raise RuntimeError("the in-process gateway is not running: start it (with, start()) before requests")
        return loop

    async def _startup(self) -> None:
        """The ASGI lifespan's startup, as a server would drive it; its failure raised as the app raised it."""
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._shutdown = asyncio.Event()
        messages = [{"type": "lifespan.startup"}]
        shutdown = self._shutdown

        async def receive() -> Message:
            if messages:
                return messages.pop()
            await shutdown.wait()
            return {"type": "lifespan.shutdown"}

        async def send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete" and not started.done():
                started.set_result(None)

        async def lifespan() -> None:
            try:
                await self.app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
            except Exception as exc:
                if not started.done():
                    started.set_exception(exc)  # raised to the caller of start()
                else:
                    log.exception("the gateway's shutdown failed")
            finally:
                if not started.done():
                    started.set_exception(RuntimeError("the app's lifespan ended before it started"))

        self._lifespan = asyncio.ensure_future(lifespan())
        await started

    async def _shutdown_app(self) -> None:
        running = [exchange.task for exchange in self._exchanges if not exchange.task.done()]
        if running:
            await asyncio.wait(running, timeout=CLOSE_GRACE)
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        assert self._shutdown is not None and self._lifespan is not None
        self._shutdown.set()
        with contextlib.suppress(Exception):
            await self._lifespan

    async def _begin(
        self, request: httpx.Request, body: bytes
    ) -> tuple[_Exchange, tuple[int, list[tuple[bytes, bytes]]]]:
        exchange = _Exchange(self.app, _scope(request), body)
        self._exchanges.add(exchange)
        exchange.task.add_done_callback(lambda _: self._exchanges.discard(exchange))
        return exchange, await exchange.head
