"""A worker's llamacpp target on the engine process, against a stand-in engine on a real Unix socket (no model):
the engine's answers become the errors the in-process engine raises, a client leaving closes the call's
connection, and an engine process that is down, silent or gone mid-answer is a bounded transport error."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from lifeline.config import ConfigError
from lifeline.config.schema import LlamaCppTarget
from lifeline.errors import (
    Failover,
    UpstreamOverloaded,
    UpstreamSilent,
    UpstreamUnavailable,
)
from lifeline.providers.base import Deadline, EmbeddingCall
from lifeline.providers.engine_client import EngineClientProvider
from lifeline.providers.engine_wire import BEAT, CHUNK, END, REQUEST, RESULT, error_frame, frame, read_frame
from lifeline.providers.llamacpp import LlamaCppProvider
from lifeline.providers.registry import default_registry
from tests.conftest import make_config
from tests.providers.support import make_call

Engine = Callable[[dict[str, Any], asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
CHUNK_DATA = {"id": "x", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}
FAST = {"connect": 0.2, "ttft": 0.3, "idle": 0.3, "first_byte": 1.0, "response": 1.0}


def target(socket: Path, **extra: Any) -> LlamaCppTarget:
    return LlamaCppTarget(kind="llamacpp", engine_socket=str(socket), served_name="m", timeouts=FAST, **extra)


def against(tmp_path: Path, engine: Engine, action: Callable[[EngineClientProvider], Awaitable[Any]]) -> Any:
    """Serve `engine` on a Unix socket and run `action` with a provider attached to it."""
    path = tmp_path / "e.sock"

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        kind, payload = await read_frame(reader)
        assert kind == REQUEST
        try:
            await engine(orjson.loads(payload), reader, writer)
        finally:
            writer.close()

    async def main() -> Any:
        server = await asyncio.start_unix_server(serve, path=str(path))
        async with server:
            return await action(EngineClientProvider("local", target(path)))

    return asyncio.run(main())


async def answers(provider: EngineClientProvider) -> list[bytes]:
    return [chunk.raw async for chunk in provider.stream(make_call())]


def test_an_attached_target_is_served_by_the_engine_process(tmp_path: Path) -> None:
    config = make_config({"local": {"kind": "llamacpp", "engine_socket": str(tmp_path / "e.sock")}})
    built = default_registry().build(config)["local"]
    assert isinstance(built, EngineClientProvider)
    assert not isinstance(built, LlamaCppProvider)  # no model loaded in the worker


def test_an_engine_socket_must_be_a_usable_absolute_path() -> None:
    for bad in ("relative.sock", "/" + "x" * 120):
        with pytest.raises(ConfigError, match="engine_socket"):
            make_config({"local": {"kind": "llamacpp", "engine_socket": bad}})


def test_chunks_stream_through_and_the_call_carries_what_the_engine_needs(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []

    async def engine(request: dict[str, Any], _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(request)
        writer.write(frame(CHUNK, orjson.dumps(CHUNK_DATA)) + frame(END))

    got = against(tmp_path, engine, answers)
    assert got == [orjson.dumps(CHUNK_DATA)]
    request = seen[0]
    assert (request["op"], request["target"], request["prefill"]) == ("chat", "local", None)
    assert request["body"]["messages"] == [{"role": "user", "content": "hi"}]
    assert request["ttft"] == FAST["ttft"] and 0 < request["deadline"] <= 10


def test_the_engines_overload_answer_is_the_in_process_overload(tmp_path: Path) -> None:
    async def engine(_: dict[str, Any], __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        busy = UpstreamOverloaded("busy", target="local", retry_after=2.0, headers={"retry-after": "2"})
        writer.write(error_frame(busy))

    with pytest.raises(UpstreamOverloaded) as raised:
        against(tmp_path, engine, answers)
    assert raised.value.failover is Failover.BUSY
    assert (raised.value.target, raised.value.retry_after, raised.value.headers) == ("local", 2.0, {"retry-after": "2"})


def test_a_client_leaving_closes_the_calls_connection(tmp_path: Path) -> None:
    closed = asyncio.Event()

    async def engine(_: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame(CHUNK, orjson.dumps(CHUNK_DATA)))
        await writer.drain()
        assert await reader.read(1) == b""  # what the engine process watches for
        closed.set()

    async def leave_after_one(provider: EngineClientProvider) -> None:
        async with contextlib.aclosing(provider.stream(make_call())) as chunks:
            async for _ in chunks:
                break
        await asyncio.wait_for(closed.wait(), 10)  # a guard against hanging

    against(tmp_path, engine, leave_after_one)
    assert closed.is_set()


def test_no_engine_process_is_unavailable_and_retried(tmp_path: Path) -> None:
    provider = EngineClientProvider("local", target(tmp_path / "nobody.sock"))
    with pytest.raises(UpstreamUnavailable) as raised:
        asyncio.run(answers(provider))
    assert raised.value.failover is Failover.RETRY and raised.value.target == "local"


def test_an_engine_process_gone_mid_answer_is_unavailable(tmp_path: Path) -> None:
    got: list[bytes] = []

    async def engine(_: dict[str, Any], __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        whole = frame(CHUNK, orjson.dumps(CHUNK_DATA))
        writer.write(whole + whole[:-4])  # then the connection ends, mid-frame

    async def collect(provider: EngineClientProvider) -> None:
        async for chunk in provider.stream(make_call()):
            got.append(chunk.raw)

    with pytest.raises(UpstreamUnavailable, match="went away"):
        against(tmp_path, engine, collect)
    assert len(got) == 1


def test_a_silent_engine_process_is_bounded_by_the_timeouts(tmp_path: Path) -> None:
    async def engine(_: dict[str, Any], reader: asyncio.StreamReader, __: asyncio.StreamWriter) -> None:
        await reader.read(1)  # says nothing until the worker gives up

    with pytest.raises(UpstreamSilent, match="stopped answering"):
        against(tmp_path, engine, answers)


def test_beats_keep_a_long_call_alive(tmp_path: Path) -> None:
    # the engine keeps the first-token limit itself; a worker only needs to know that it is alive
    async def engine(_: dict[str, Any], __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(8):  # well past one beat interval plus the connect timeout, saying only "alive"
            writer.write(frame(BEAT))
            await asyncio.sleep(0.2)
        writer.write(frame(CHUNK, orjson.dumps(CHUNK_DATA)) + frame(END))

    assert against(tmp_path, engine, answers) == [orjson.dumps(CHUNK_DATA)]


def test_an_embedding_and_a_token_count_come_back_whole(tmp_path: Path) -> None:
    async def engine(request: dict[str, Any], _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if request["op"] == "count":
            writer.write(frame(RESULT, orjson.dumps({"tokens": 7})))
        else:
            body = {"object": "list", "data": [], "model": "m", "usage": {"prompt_tokens": 1, "total_tokens": 1}}
            writer.write(frame(RESULT, orjson.dumps({"body": body})))

    async def both(provider: EngineClientProvider) -> tuple[int, Any]:
        embedded = await provider.embed(EmbeddingCall(body={"input": "x"}, request_id="r", deadline=Deadline.after(5)))
        return await provider.count_tokens(make_call()), embedded

    tokens, embedded = against(tmp_path, engine, both)
    assert tokens == 7
    assert embedded.usage == {"prompt_tokens": 1, "total_tokens": 1}
