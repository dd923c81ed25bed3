"""The engine process: every embedded model loaded once, served to all the workers on one Unix socket.

Started by server/engine_host.py as `python -m lifeline.server.engine_process`. It reads its orders from
stdin — one JSON line: the socket path and the `llamacpp` targets to load — loads the models with the
in-process engine (providers/llamacpp.py: the same bounded queue, overload answer, tools, LoRA and first-token
limit), binds the socket and says `{"ready": ...}` on stdout (or `{"error": ...}`, then exits 1). Each
connection is one call (providers/engine_wire.py). A worker that closes its connection mid-call has lost its
client: the call is cancelled, which stops the generation and frees the engine. stdin staying open is the
host's lease: at its end (the host stops, or died) the engine stops taking calls, lets those running finish
(up to `grace` seconds) and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from collections import Counter
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any, cast

import orjson
from pydantic import ValidationError

from lifeline.config.schema import LlamaCppTarget
from lifeline.errors import ModelResolutionError, UpstreamError, UpstreamModelNotFound, UpstreamRejected
from lifeline.logs import configure_logging
from lifeline.protocol.chat import ChatCompletionRequest
from lifeline.providers.base import ChatCall, Chunk, Deadline, EmbeddingCall
from lifeline.providers.engine_wire import (
    BEAT,
    BEAT_INTERVAL,
    CHUNK,
    END,
    REQUEST,
    RESULT,
    error_frame,
    frame,
    read_frame,
)
from lifeline.providers.llamacpp import LlamaCppProvider

log = logging.getLogger("lifeline.engine")


class EngineServer:
    """The loaded models and the calls running on them, with counts a host (and tests) can read: calls,
    calls refused as overloaded, calls whose worker left before the end."""

    def __init__(self, targets: dict[str, LlamaCppTarget]):
        self.providers = {name: LlamaCppProvider(name, target) for name, target in targets.items()}
        self.counts: dict[str, Counter[str]] = {name: Counter() for name in targets}
        self.running: set[asyncio.Task[None]] = set()
        #: calls under way per target, so that unloading a target waits for them
        self.using: Counter[str] = Counter()
        #: set when the last call on a target being unloaded ends
        self._drained: dict[str, asyncio.Event] = {}
        self._unloading: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await asyncio.gather(*(p.start() for p in self.providers.values()))

    async def close(self) -> None:
        await asyncio.gather(*self._unloading, return_exceptions=True)
        await asyncio.gather(*(p.close() for p in self.providers.values()), return_exceptions=True)

    async def load(self, name: str, settings: dict[str, Any]) -> dict[str, Any]:
        """Load one more model while serving (the host's answer to a reload that added or changed a target):
        {"model": the name it is served under}, or {"error": why not}. A name already loaded is kept."""
        provider = self.providers.get(name)
        if provider is None:
            try:
                target = LlamaCppTarget.model_validate(settings)
                # resolving may read or fetch the file: off the event loop, as the load itself is
                provider = await asyncio.to_thread(LlamaCppProvider, name, target)
                await provider.start()
            except (ModelResolutionError, ValidationError, OSError, ValueError) as exc:
                return {"error": f"{type(exc).__name__}: {exc}"}
            self.providers[name] = provider
            self.counts[name] = Counter()
        return {"model": provider.model}

    def unload(self, name: str) -> bool:
        """Stop serving `name`: new calls for it are refused at once (the worker fails over), the model is closed
        once the calls running on it have ended. False when it is not loaded."""
        provider = self.providers.pop(name, None)
        self.counts.pop(name, None)
        if provider is None:
            return False
        task = asyncio.create_task(self._close_when_idle(name, provider))
        self._unloading.add(task)
        task.add_done_callback(self._unloading.discard)
        return True

    async def _close_when_idle(self, name: str, provider: LlamaCppProvider) -> None:
        if self.using[name]:
            drained = self._drained.setdefault(name, asyncio.Event())
            await drained.wait()
        await provider.close()
        log.info("target %s: unloaded", name)

    def stats(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "targets": {
                name: {"admitted": p._admitted, "queue_depth": p.queue_depth, **self.counts[name]}
                for name, p in self.providers.items()
            },
        }

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection: one call, cancelled when the worker closes the connection before its end."""
        task = asyncio.current_task()
        assert task is not None
        self.running.add(task)
        left = asyncio.Event()
        watcher: asyncio.Task[None] | None = None
        target = ""
        try:
            kind, payload = await read_frame(reader)
            request = orjson.loads(payload) if kind == REQUEST else {}
            target = str(request.get("target", ""))
            # the worker sends nothing more: anything readable now is the connection closing
            watcher = asyncio.create_task(_watch(reader, writer, task, left))
            await self._answer(request, writer)
            await writer.drain()
        except (ConnectionError, orjson.JSONDecodeError):
            pass  # a worker that left before its request was read, or that does not speak the framing
        except Exception:  # a fault of the engine process itself: the worker fails over on the closed connection
            log.exception("target %s: the engine process failed a call", target)
        except asyncio.CancelledError:
            if not left.is_set():
                raise
            if target in self.counts:
                self.counts[target]["client_left"] += 1
            log.info("target %s: the worker's client left; the engine is free for the next call", target)
        finally:
            if watcher is not None:
                watcher.cancel()
            writer.close()
            self.running.discard(task)

    async def _answer(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        op = request.get("op")
        if op == "stats":
            writer.write(frame(RESULT, orjson.dumps(self.stats())))
            return
        if op == "load":
            loaded = await self.load(str(request.get("target")), dict(request.get("settings") or {}))
            writer.write(frame(RESULT, orjson.dumps(loaded)))
            return
        if op == "unload":
            writer.write(frame(RESULT, orjson.dumps({"unloaded": self.unload(str(request.get("target")))})))
            return
        name = str(request.get("target"))
        provider = self.providers.get(name)
        if provider is None:
            writer.write(error_frame(UpstreamModelNotFound(f"the engine process has no target {name}")))
            return
        counts = self.counts[name]
        counts["calls"] += 1
        deadline = Deadline.after(float(request.get("deadline") or 0))
        self.using[name] += 1
        try:
            await self._call(op, provider, request, deadline, writer, counts)
        finally:
            self.using[name] -= 1
            if not self.using[name]:
                del self.using[name]
                drained = self._drained.pop(name, None)
                if drained is not None:
                    drained.set()

    async def _call(
        self,
        op: Any,
        provider: LlamaCppProvider,
        request: dict[str, Any],
        deadline: Deadline,
        writer: asyncio.StreamWriter,
        counts: Counter[str],
    ) -> None:
        try:
            if op == "chat":
                await self._chat(provider, request, deadline, writer)
            elif op == "embed":
                body = request["body"]
                answer = await provider.embed(EmbeddingCall(body=body, request_id="", deadline=deadline))
                writer.write(frame(RESULT, orjson.dumps({"body": answer.body})))
            elif op == "count":
                tokens = await provider.count_tokens(self._chat_call(request, deadline))
                writer.write(frame(RESULT, orjson.dumps({"tokens": tokens})))
            else:
                raise UpstreamRejected(f"the engine process does not know the call {op!r}")
        except UpstreamError as exc:
            counts[exc.outcome.value] += 1
            writer.write(error_frame(exc))
        counts["answered"] += 1

    async def _chat(
        self, provider: LlamaCppProvider, request: dict[str, Any], deadline: Deadline, writer: asyncio.StreamWriter
    ) -> None:
        call = self._chat_call(request, deadline)
        # closed at once when the worker leaves: the engine's stop flag is set and its slot freed
        stream = cast(AsyncGenerator[Chunk, None], provider.stream(call))
        async with contextlib.aclosing(stream) as chunks:
            async for chunk in chunks:
                writer.write(frame(CHUNK, chunk.raw))
                await writer.drain()  # waits only when the worker reads slower than the engine writes
        writer.write(frame(END))

    @staticmethod
    def _chat_call(request: dict[str, Any], deadline: Deadline) -> ChatCall:
        body = request["body"]
        try:
            chat = ChatCompletionRequest.model_validate(body)
        except ValidationError:
            raise UpstreamRejected("the engine process cannot read the chat request") from None
        ttft = request.get("ttft")
        return ChatCall(
            body=body,
            request=chat,
            request_id=str(request.get("request_id", "")),
            deadline=deadline,
            prefill=request.get("prefill"),
            ttft=float("inf") if ttft is None else float(ttft),  # None: no first-token limit but the deadline
        )


async def _watch(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, task: asyncio.Task[None], left: asyncio.Event
) -> None:
    """Beat while the call runs; cancel it when the worker closes the connection."""
    closing = asyncio.ensure_future(_closed(reader))
    try:
        while not (await asyncio.wait([closing], timeout=BEAT_INTERVAL))[0]:
            writer.write(frame(BEAT))
    finally:
        closing.cancel()
    left.set()
    task.cancel()


async def _closed(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionError):
        await reader.read(1)


def _lease(loop: asyncio.AbstractEventLoop, ended: asyncio.Event) -> None:
    """Wait in a thread for the end of stdin (the host's lease), then tell the event loop."""
    with contextlib.suppress(OSError, ValueError):
        while sys.stdin.buffer.read(4096):
            pass
    loop.call_soon_threadsafe(ended.set)


async def run(socket_path: str, targets: dict[str, LlamaCppTarget], grace: float) -> None:
    server = EngineServer(targets)
    await server.start()
    Path(socket_path).unlink(missing_ok=True)  # a socket left by an engine process that was killed
    listener = await asyncio.start_unix_server(server.serve, path=socket_path)
    os.chmod(socket_path, 0o600)
    served = {name: {"model": p.model} for name, p in server.providers.items()}
    print(orjson.dumps({"ready": served, "pid": os.getpid()}).decode(), flush=True)
    os.dup2(2, 1)  # nothing more for the host on stdout, which it no longer reads: the rest goes to stderr
    log.info("engine process %d: serving %s on %s", os.getpid(), ", ".join(targets), socket_path)
    ended = asyncio.Event()
    loop = asyncio.get_running_loop()
    threading.Thread(target=_lease, args=(loop, ended), name="engine-lease", daemon=True).start()
    loop.add_signal_handler(signal.SIGTERM, ended.set)
    await ended.wait()
    listener.close()
    log.info("engine process %d: stopping; %d call(s) running", os.getpid(), len(server.running))
    if server.running:
        await asyncio.wait(set(server.running), timeout=grace)
    for task in set(server.running):
        task.cancel()
    Path(socket_path).unlink(missing_ok=True)
    await server.close()


def main() -> None:
    orders = orjson.loads(sys.stdin.buffer.readline() or b"{}")
    configure_logging(orders.get("log_format", "text"), orders.get("log_level", "info"))
    try:
        targets = {name: LlamaCppTarget.model_validate(t) for name, t in orders["targets"].items()}
        asyncio.run(run(orders["socket"], targets, float(orders.get("grace", 10.0))))
    except (ModelResolutionError, ValidationError, OSError, KeyError) as exc:
        print(orjson.dumps({"error": f"{type(exc).__name__}: {exc}"}).decode(), flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
