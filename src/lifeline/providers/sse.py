"""Server-sent events: splitting an upstream byte stream into `data:` payloads.

`SseParser` is fed each read as it comes and hands back the data of every event that read completed, in one
pass over it (a read usually completes one event, sometimes several, sometimes none); `iter_sse_data` is the
same over an async iterator of reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator


class SseParser:
    """The data of each event (multi-line data joined with newlines); comments and other fields (event:, id:,
    retry:) are dropped, events without data skipped. CRLF line endings are read as LF. A trailing event
    without its blank line is still an event, once the stream has ended (`close`)."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, piece: bytes) -> list[bytes]:
        """The data of the events this read completed, in order (often none or one)."""
        buf = self._buf + piece if self._buf else piece
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        found: list[bytes] = []
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            if buf.startswith(b"data: ", start) and buf.find(b"\n", start, end) < 0:
                found.append(buf[start + 6 : end])  # the usual event: one `data: ` line
            else:
                data = _event_data(buf[start:end])
                if data is not None:
                    found.append(data)
            start = end + 2
        self._buf = buf[start:] if start else buf
        return found

    def close(self) -> bytes | None:
        """The stream ended: the data of a last event that came without its blank line, if any."""
        buf, self._buf = self._buf, b""
        return _event_data(buf) if buf.strip() else None


async def iter_sse_data(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Yield the data of each event of a byte stream, as `SseParser` reads them."""
    parser = SseParser()
    async for piece in chunks:
        for data in parser.feed(piece):
            yield data
    last = parser.close()
    if last is not None:
        yield last


def _event_data(block: bytes) -> bytes | None:
    parts = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            parts.append(value[1:] if value.startswith(b" ") else value)
    if not parts:
        return None
    return b"\n".join(parts)
