"""Server-sent events: splitting an upstream byte stream into `data:` payloads."""

from __future__ import annotations

from collections.abc import AsyncIterator


async def iter_sse_data(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Yield the data of each event (multi-line data joined with newlines); comments and other fields
    (event:, id:, retry:) are dropped. A trailing event without its blank line is still yielded."""
    buffer = b""
    async for piece in chunks:
        buffer += piece
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        while True:
            end = buffer.find(b"\n\n")
            if end < 0:
                break
            block, buffer = buffer[:end], buffer[end + 2 :]
            data = _event_data(block)
            if data is not None:
                yield data
    if buffer.strip():
        data = _event_data(buffer)
        if data is not None:
            yield data


def _event_data(block: bytes) -> bytes | None:
    parts = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            parts.append(value[1:] if value.startswith(b" ") else value)
    if not parts:
        return None
    return b"\n".join(parts)
