"""Splitting an upstream byte stream into SSE `data:` payloads, however the bytes are chunked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

import pytest

from lifeline.providers.sse import SseParser, iter_sse_data


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


# --- SseParser: each read's complete events in one pass ------------------------------------------------

MIXED = (
    b': ping\n\ndata: {"a":1}\n\nevent: message\ndata: two\ndata: lines\n\ndata:no-space\n\nid: 3\n\ndata: [DONE]\n\n'
)
MIXED_EXPECTED = [b'{"a":1}', b"two\nlines", b"no-space", b"[DONE]"]


def test_parser_hands_back_every_event_a_read_completed_in_order() -> None:
    parser = SseParser()
    assert parser.feed(MIXED) == MIXED_EXPECTED
    assert parser.close() is None


def test_parser_keeps_an_unfinished_event_for_the_next_read() -> None:
    parser = SseParser()
    assert parser.feed(b"data: one\n\ndata: tw") == [b"one"]
    assert parser.feed(b"o\n") == []
    assert parser.feed(b"\ndata: three\n\n") == [b"two", b"three"]
    assert parser.close() is None


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_an_event_split_at_every_byte_boundary(newline: bytes) -> None:
    raw = MIXED.replace(b"\n", newline)
    for cut in range(1, len(raw)):
        for cut2 in (cut, min(len(raw), cut + 7)):
            parser = SseParser()
            got = parser.feed(raw[:cut]) + parser.feed(raw[cut:cut2]) + parser.feed(raw[cut2:])
            last = parser.close()
            assert got + ([last] if last is not None else []) == MIXED_EXPECTED, (cut, cut2)


def test_crlf_variants_mixed_in_one_stream() -> None:
    raw = b"data: a\r\n\r\ndata: b\n\ndata: c\r\n\ndata: d\n\r\n"
    assert SseParser().feed(raw) == [b"a", b"b", b"c", b"d"]
    assert events(*split_every(raw, 1)) == [b"a", b"b", b"c", b"d"]


def test_a_lone_cr_is_not_a_line_end() -> None:
    # as before the one-pass reader: only CRLF and LF end lines; a bare CR stays in the data
    assert SseParser().feed(b"data: a\rb\n\n") == [b"a\rb"]


def test_data_field_with_more_after_the_usual_prefix_is_read_whole() -> None:
    # the usual one-line event, and the same data spread over lines and fields, give the same payload
    assert SseParser().feed(b"data: x\n\n") == [b"x"]
    assert SseParser().feed(b"data: x\nid: 1\n\n") == [b"x"]
    assert SseParser().feed(b"id: 1\ndata: x\n\n") == [b"x"]
    assert SseParser().feed(b"data: x\ndata: y\n\n") == [b"x\ny"]


def test_close_gives_a_last_event_without_its_blank_line() -> None:
    parser = SseParser()
    assert parser.feed(b"data: first\n\ndata: last") == [b"first"]
    assert parser.close() == b"last"
    assert parser.close() is None
