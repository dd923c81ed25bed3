"""The response cache's parts: the digest of a normalised request, which answers ended normally, and the two
stores — this process's memory and a real Redis — held to the same rules: a miss, a hit, expiry on the clock
they are given, least-recently-used eviction by entries and by bytes. A cache whose Redis is gone misses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from lifeline.accounting.cache import (
    Cached,
    MemoryStore,
    RedisStore,
    ResponseCache,
    Store,
    complete,
    request_digest,
)
from lifeline.config import parse_config
from lifeline.config.schema import CacheSettings
from lifeline.metrics import Metrics
from lifeline.protocol.assemble import Assembler, chunks_of

BODY = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}


# --- the digest ---------------------------------------------------------------------------------------------


def test_the_digest_ignores_what_cannot_change_the_answer_and_the_order_of_keys() -> None:
    base = request_digest("chat", "k1", BODY)
    reordered = {"temperature": 0, "messages": [{"content": "hi", "role": "user"}], "model": "chat"}
    assert request_digest("chat", "k1", reordered) == base
    noise = {"stream": True, "stream_options": {"include_usage": True}, "user": "u", "metadata": {"a": 1}}
    assert request_digest("chat", "k1", {**BODY, **noise, "store": False}) == base
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    different = [
        request_digest("chat", "k2", BODY),  # another key
        request_digest("other", "k1", BODY),  # another alias
        request_digest("chat", "k1", {**BODY, "temperature": 0.5}),
        request_digest("chat", "k1", {**BODY, "tools": tools}),
        request_digest("chat", "k1", {**BODY, "tools": tools, "tool_choice": "required"}),
        request_digest("chat", "k1", {**BODY, "response_format": {"type": "json_object"}}),
        request_digest("chat", "k1", {**BODY, "x_unknown": 1}),  # a field Lifeline does not know may matter
    ]
    assert len({base, *different}) == len(different) + 1


def test_only_an_answer_whose_every_choice_ended_normally_is_complete() -> None:
    def body(*reasons: str | None) -> dict[str, Any]:
        return {"choices": [{"index": i, "message": {}, "finish_reason": r} for i, r in enumerate(reasons)]}

    assert complete(body("stop")) and complete(body("tool_calls")) and complete(body("stop", "stop"))
    assert not any(complete(body(*r)) for r in (("length",), ("content_filter",), (None,), ("stop", "length"), ()))


def test_a_whole_answer_streamed_assembles_back_into_itself() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}
    body = {
        "id": "chatcmpl-9",
        "object": "chat.completion",
        "created": 5,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hi there"}, "finish_reason": "stop"},
            {
                "index": 1,
                "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                "finish_reason": "tool_calls",
            },
        ],
    }
    assembler = Assembler()
    for chunk in chunks_of(body):
        assert chunk["object"] == "chat.completion.chunk" and chunk["id"] == "chatcmpl-9"
        assembler.add(chunk)
    assert assembler.completion() == body


# --- the stores ---------------------------------------------------------------------------------------------


@asynccontextmanager
async def opened(kind: str, request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    store: Store = MemoryStore() if kind == "memory" else RedisStore(request.getfixturevalue("fresh_redis_url"))
    try:
        yield store
    finally:
        await store.close()


def each_store(test: Callable[[Store], Awaitable[None]]) -> Callable[[str, pytest.FixtureRequest], None]:
    @pytest.mark.parametrize("kind", ["memory", "redis"])
    def run(kind: str, request: pytest.FixtureRequest) -> None:
        async def main() -> None:
            async with opened(kind, request) as store:
                await test(store)

        asyncio.run(main())

    run.__name__ = test.__name__
    run.__doc__ = test.__doc__
    return run


@each_store
async def test_a_store_misses_keeps_and_expires_on_its_clock(store: Store) -> None:
    settings = CacheSettings(ttl=60)
    assert await store.get("chat", "a", 1000.0) is None
    assert await store.put("chat", "a", b"answer", 1000.0, settings) == 0
    assert await store.get("chat", "a", 1059.9) == b"answer"
    assert await store.get("other", "a", 1000.0) is None  # another alias's space
    assert await store.get("chat", "a", 1060.0) is None
    assert await store.get("chat", "a", 1000.0) is None  # gone for good, not only hidden


@each_store
async def test_a_store_evicts_the_least_recently_used_beyond_max_entries(store: Store) -> None:
    settings = CacheSettings(max_entries=2)
    await store.put("chat", "a", b"1", 0.0, settings)
    await store.put("chat", "b", b"2", 0.0, settings)
    assert await store.get("chat", "a", 1.0) == b"1"  # a is now the most recently used
    assert await store.put("chat", "c", b"3", 1.0, settings) == 1
    assert [await store.get("chat", d, 2.0) for d in "abc"] == [b"1", None, b"3"]
    assert await store.put("chat", "a", b"1 again", 2.0, settings) == 0  # a replacement takes no room


@each_store
async def test_a_store_evicts_the_least_recently_used_beyond_max_bytes(store: Store) -> None:
    settings = CacheSettings(max_bytes=10)
    await store.put("chat", "a", b"aaaa", 0.0, settings)
    await store.put("chat", "b", b"bbbb", 0.0, settings)
    assert await store.put("chat", "c", b"cccc", 0.0, settings) == 1  # 12 bytes > 10: a goes
    assert [await store.get("chat", d, 0.0) for d in "abc"] == [None, b"bbbb", b"cccc"]
    assert await store.put("chat", "d", b"d" * 11, 0.0, settings) == -1  # alone over the bound: not kept
    assert await store.get("chat", "d", 0.0) is None
    assert await store.get("chat", "b", 0.0) == b"bbbb"


def test_a_cache_whose_redis_is_gone_misses_and_counts_it() -> None:
    config = parse_config(
        {
            "accounting": {"redis_url": "redis://127.0.0.1:9/0", "redis_timeout": 0.2},
            "targets": {"t": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}},
            "aliases": {"chat": {"targets": ["t"], "cache": {"mode": "both"}}},
        },
        env={},
    )
    metrics = Metrics()

    async def main() -> Cached | None:
        cache = ResponseCache(config, metrics)
        try:
            answer = Cached({"choices": []}, "m", {}, False, 0.0)
            await cache.put("chat", "a", answer, CacheSettings())
            return await cache.get("chat", "a")
        finally:
            await cache.close()

    assert asyncio.run(main()) is None
    assert "lifeline_cache_unavailable_total 2" in metrics.render()
