"""The replay check: a restarted answer is sent on only when it begins with exactly what the client has."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest

from lifeline.providers.base import Chunk, inspect_chunk
from lifeline.routing.replay import DIVERGED, NEED_MORE, Verdict, compare, read_continuation, read_replay


@pytest.mark.parametrize(
    ("sent", "regenerated", "finished", "verdict"),
    [
        ("Hello wor", "Hello world, and more", False, Verdict(matched=True, at=9)),
        ("Hello  world", "Hello world again", False, Verdict(matched=True, at=11)),  # whitespace runs aside
        ("Hello world ", "Hello world\nagain", False, Verdict(matched=True, at=12)),
        ("Hello world ", "Hello world", False, NEED_MORE),  # "world" may still grow into "worlds"
        ("Hello world ", "Hello worlds", False, DIVERGED),
        ("Hello world", "Hello", False, NEED_MORE),
        ("Hello world", "Hello", True, DIVERGED),  # it ended before reproducing the text
        ("Hello world", "Goodbye", False, DIVERGED),
        ("Hello world", "Hel", False, NEED_MORE),
        ("Hello world", "Help", False, DIVERGED),
        ("Hello world", "Hello world", True, Verdict(matched=True, at=11)),
        ("ab", "a b", True, DIVERGED),  # words are compared, not characters
    ],
)
def test_compare(sent: str, regenerated: str, finished: bool, verdict: Verdict) -> None:
    assert compare(sent, regenerated, finished) == verdict


def _chunk(content: str | None, finish: str | None = None) -> Chunk:
    delta = {} if content is None else {"content": content}
    data = {"id": "x", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return inspect_chunk(data, orjson.dumps(data))


class Stream:
    def __init__(self, chunks: list[Chunk]) -> None:
        self.chunks = chunks

    async def _gen(self) -> AsyncIterator[Chunk]:
        for chunk in self.chunks:
            yield chunk


def test_a_matching_restart_yields_only_the_remainder_and_stays_open() -> None:
    async def main() -> tuple[list[Chunk] | None, list[Chunk]]:
        gen = Stream([_chunk(None), _chunk("Hello"), _chunk(" wor"), _chunk("ld and"), _chunk(" more", "stop")])._gen()
        head = await read_replay(gen, "Hello wo")
        return head, [chunk async for chunk in gen]

    head, rest = asyncio.run(main())
    assert head is not None and [c.data["choices"][0]["delta"]["content"] for c in head] == ["r"]
    assert orjson.loads(head[0].raw)["choices"][0]["delta"]["content"] == "r"
    assert [c.data["choices"][0]["delta"].get("content") for c in rest] == ["ld and", " more"]


def test_a_different_restart_sends_nothing_and_is_closed() -> None:
    closed: list[bool] = []

    async def chunks() -> AsyncIterator[Chunk]:
        try:
            for chunk in (_chunk("Goodbye"), _chunk(" now", "stop")):
                yield chunk
        finally:
            closed.append(True)

    assert asyncio.run(read_replay(chunks(), "Hello")) is None
    assert closed == [True]


def test_a_restart_that_runs_far_past_the_sent_length_without_matching_is_given_up() -> None:
    async def chunks() -> AsyncIterator[Chunk]:
        yield _chunk("Hello")
        for _ in range(1000):
            yield _chunk(" ")  # whitespace for ever: never a verdict by words

    assert asyncio.run(read_replay(chunks(), "Hello world")) is None


def test_a_tool_call_in_a_restart_is_never_matched() -> None:
    data = {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c"}]}, "finish_reason": None}]}

    async def chunks() -> AsyncIterator[Chunk]:
        yield inspect_chunk(data, orjson.dumps(data))
        yield _chunk("Hello world")

    assert asyncio.run(read_replay(chunks(), "Hello")) is None


def test_a_continuation_that_goes_on_from_the_prefix_is_passed_through() -> None:
    async def main() -> tuple[list[Chunk], list[Chunk], bool] | None:
        async def chunks() -> AsyncIterator[Chunk]:
            for chunk in (_chunk(None), _chunk(" world"), _chunk(" again", "stop")):
                yield chunk

        read = await read_continuation(chunks(), "Hello")
        if read is None:
            return None
        head, rest, restarted = read
        return head, [c async for c in rest], restarted

    read = asyncio.run(main())
    assert read is not None
    head, rest, restarted = read
    assert not restarted
    texts = [c.data["choices"][0]["delta"].get("content") for c in [*head, *rest]]
    assert texts == [None, " world", " again"]


def test_a_continuation_that_starts_the_answer_again_is_checked_and_cut() -> None:
    async def main() -> tuple[list[str | None], bool] | None:
        async def chunks() -> AsyncIterator[Chunk]:
            for chunk in (_chunk("Hello"), _chunk(" world"), _chunk(" again", "stop")):
                yield chunk

        read = await read_continuation(chunks(), "Hello wor")
        if read is None:
            return None
        head, rest, restarted = read
        return [c.data["choices"][0]["delta"].get("content") for c in [*head, *[c async for c in rest]]], restarted

    assert asyncio.run(main()) == (["ld", " again"], True)
