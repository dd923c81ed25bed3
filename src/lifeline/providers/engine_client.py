"""Kind `llamacpp` in a worker: the model runs in the engine process, one per machine, reached on its socket.

With `lifeline serve --workers N` one engine process loads every embedded model once and serves all the
workers (server/engine_host.py starts it and sets each target's `engine_socket`). This provider forwards a
worker's calls there, one connection per call (providers/engine_wire.py). The engine answers as the
in-process engine would — its bounded queue is shared by every worker, and a full queue is the same
UpstreamOverloaded, so the router fails over as it does in one process. Closing a call (the client left)
closes its connection, which stops the generation and frees the engine. An engine process that is down
(being restarted) or goes away mid-answer is an UpstreamUnavailable, never a hang; one that stops beating
(providers/engine_wire.py) is an UpstreamSilent within the connect timeout, and every wait is bounded by the
request's deadline.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import orjson

from lifeline.config.schema import LlamaCppTarget
from lifeline.errors import UpstreamSilent, UpstreamUnavailable
from lifeline.providers.base import ChatCall, Chunk, Completion, Deadline, EmbeddingCall, inspect_chunk
from lifeline.providers.engine_wire import (
    BEAT,
    BEAT_INTERVAL,
    CHUNK,
    END,
    ERROR,
    REQUEST,
    RESULT,
    error_of,
    frame,
    read_frame,
)
from lifeline.providers.llamacpp import whole_answer

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class EngineClientProvider:
    def __init__(self, name: str, config: LlamaCppTarget):
        if config.engine_socket is None:
            raise ValueError(f"target {name} has no engine_socket")
        self.name = name
        self.config = config
        self.socket = config.engine_socket
        #: what the engine process calls this target's model (a reload that changed it loaded a new one)
        self.engine_target = config.engine_target or name
        self.context_window: int | None = config.context_window or config.n_ctx
        self.supports_n = False
        # the engine host sets served_name to the name the engine process reports for the model it loaded
        self.model = config.served_name or config.model

    async def start(self) -> None:
        """Nothing to load: the engine process has the model. It may be down now and up by the first call."""

    async def close(self) -> None:
        """Nothing held between calls: each call has its own connection."""

    # --- calls -----------------------------------------------------------------------------------------

    async def complete(self, call: ChatCall) -> Completion:
        return await whole_answer(self.stream(call), self.model)

    async def stream(self, call: ChatCall) -> AsyncIterator[Chunk]:
        ttft = self.config.timeouts.ttft if call.ttft is None else call.ttft
        request = {
            "op": "chat",
            "target": self.engine_target,
            "body": call.body,
            "request_id": call.request_id,
            "deadline": call.deadline.remaining(),
            "ttft": None if math.isinf(ttft) else ttft,
            "prefill": call.prefill,
        }
        reader, writer = await self._send(request, call.deadline)
        try:
            while True:
                kind, payload = await self._read(reader, call.deadline)
                if kind == CHUNK:
                    yield inspect_chunk(self._json(payload), payload)
                elif kind == END:
                    return
                elif kind == ERROR:
                    raise error_of(payload, self.name)
                else:
                    raise UpstreamUnavailable(
                        f"target {self.name}: the engine process answered out of turn", target=self.name
                    )
        finally:
            # the engine sees the connection close and stops generating, if it still was
            writer.close()

    async def embed(self, call: EmbeddingCall) -> Completion:
        result = await self._call(self._request("embed", call), call.deadline)
        return Completion(body=result["body"], model=result["body"]["model"], usage=result["body"]["usage"])

    async def count_tokens(self, call: ChatCall) -> int:
        result = await self._call(self._request("count", call), call.deadline)
        return int(result["tokens"])

    def _request(self, op: str, call: ChatCall | EmbeddingCall) -> dict[str, Any]:
        """One answered (not streamed) request to the engine process for `call`."""
        return {"op": op, "target": self.engine_target, "body": call.body, "deadline": call.deadline.remaining()}

    # --- the connection ----------------------------------------------------------------------------------

    async def _send(self, request: dict[str, Any], deadline: Deadline) -> Connection:
        try:
            async with asyncio.timeout(deadline.bound(self.config.timeouts.connect)):
                reader, writer = await asyncio.open_unix_connection(self.socket)
                writer.write(frame(REQUEST, orjson.dumps(request)))
                await writer.drain()
        except TimeoutError:
            raise UpstreamUnavailable(
                f"target {self.name}: the engine process did not accept the call within the connect timeout",
                target=self.name,
            ) from None
        except OSError as exc:  # no socket (not started yet), refused (down, being restarted), reset
            raise UpstreamUnavailable(
                f"target {self.name}: the engine process cannot be reached ({type(exc).__name__})", target=self.name
            ) from None
        return reader, writer

    async def _read(self, reader: asyncio.StreamReader, deadline: Deadline) -> tuple[bytes, bytes]:
        """The engine's next frame but beats. The engine keeps the target's first-token and idle limits itself;
        here a missed beat (plus the connect timeout's leeway) means the engine process hangs."""
        try:
            while True:
                async with asyncio.timeout(deadline.bound(BEAT_INTERVAL + self.config.timeouts.connect)):
                    kind, payload = await read_frame(reader)
                if kind != BEAT:
                    return kind, payload
        except TimeoutError:
            raise UpstreamSilent(
                f"target {self.name}: the engine process stopped answering", target=self.name
            ) from None
        except OSError:  # ConnectionError included: the engine process went away mid-call
            raise UpstreamUnavailable(
                f"target {self.name}: the engine process went away during the call", target=self.name
            ) from None

    async def _call(self, request: dict[str, Any], deadline: Deadline) -> dict[str, Any]:
        """A call with one answer (embeddings, a token count)."""
        reader, writer = await self._send(request, deadline)
        try:
            kind, payload = await self._read(reader, deadline)
        finally:
            writer.close()
        if kind == ERROR:
            raise error_of(payload, self.name)
        if kind != RESULT:
            raise UpstreamUnavailable(f"target {self.name}: the engine process answered out of turn", target=self.name)
        result: dict[str, Any] = self._json(payload)
        return result

    def _json(self, payload: bytes) -> Any:
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise UpstreamUnavailable(
                f"target {self.name}: the engine process sent something unreadable", target=self.name
            ) from None
