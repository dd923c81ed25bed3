"""Splitting an upstream byte stream into SSE `data:` payloads, however the bytes are chunked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

import pytest

from lifeline.providers.sse import iter_sse_data


async def _chunks(pieces: Iterable[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


def events(*pieces: bytes) -> list[bytes]:
    async def collect() -> list[bytes]:
        return [data async for data in iter_sse_data(_chunks(pieces))]

    return asyncio.run(collect())


def split_every(raw: bytes, size: int) -> list[bytes]:
    return [raw[i : i + size] for i in range(0, len(raw), size)]


STREAM = b'data: {"a":1}\n\ndata: {"b":2}\n\n: keep-alive\n\ndata: [DONE]\n\n'
EXPECTED = [b'{"a":1}', b'{"b":2}', b"[DONE]"]


def test_whole_stream_in_one_chunk() -> None:
    assert events(STREAM) == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 13])
def test_any_chunking_gives_the_same_events(size: int) -> None:
    assert events(*split_every(STREAM, size)) == EXPECTED


def test_split_mid_line_and_mid_blank_line() -> None:
    assert events(b'data: {"a', b'":1}\n', b'\ndata: {"b":2}\n', b"\n") == [b'{"a":1}', b'{"b":2}']


def test_crlf_line_endings() -> None:
    raw = b"data: one\r\n\r\ndata: two\r\n\r\n"
    assert events(raw) == [b"one", b"two"]
    assert events(*split_every(raw, 1)) == [b"one", b"two"]


def test_crlf_split_between_cr_and_lf() -> None:
    assert events(b"data: one\r", b"\n\r", b"\ndata: two\r\n\r", b"\n") == [b"one", b"two"]


def test_comments_and_other_fields_dropped() -> None:
    raw = b": comment\nevent: message\nid: 7\nretry: 1000\ndata: payload\n\n: only a comment\n\nevent: ping\n\n"
    assert events(raw) == [b"payload"]


def test_multi_line_data_joined_with_newlines() -> None:
    assert events(b"data: line one\ndata: line two\ndata:line three\n\n") == [b"line one\nline two\nline three"]


def test_only_one_leading_space_removed() -> None:
    assert events(b"data:  two spaces\n\ndata:none\n\n") == [b" two spaces", b"none"]


def test_trailing_event_without_blank_line() -> None:
    assert events(b"data: first\n\ndata: last\n") == [b"first", b"last"]
    assert events(b"data: first\n\ndata: la", b"st") == [b"first", b"last"]


def test_trailing_whitespace_only_is_not_an_event() -> None:
    assert events(b"data: x\n\n\n \n") == [b"x"]


def test_done_marker_passed_through() -> None:
    assert events(b"data: [DONE]\n\n") == [b"[DONE]"]


def test_empty_stream() -> None:
    assert events() == []
    assert events(b"", b"") == []


def test_blank_lines_between_events() -> None:
    assert events(b"\n\n\n\ndata: a\n\n\n\ndata: b\n\n") == [b"a", b"b"]
