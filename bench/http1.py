"""Incremental HTTP/1.1 response framing, shared by the load generator, the floor proxy and the engine bench.

Only what the benchmark needs: a status line, headers, and a body delimited by Content-Length, by chunked
transfer coding, or by the connection closing. ``feed`` takes bytes as they arrive and returns True once
the response is complete; decoded body bytes go to an optional callback (the load generator scans streamed
SSE payloads for the first content token; the floor proxy only needs to know where a response ends).
Standard library only, so every venv in the benchmark can import it.
"""

from __future__ import annotations

from collections.abc import Callable

_HEAD, _FIXED, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILER, _UNTIL_CLOSE, _DONE = range(8)


class ProtocolError(Exception):
    """The peer sent something that is not an HTTP/1.1 response."""


class ResponseParser:
    __slots__ = (
        "_buf",
        "_left",
        "_on_body",
        "_state",
        "close_after",
        "head",
        "status",
    )

    def __init__(self, on_body: Callable[[bytes], None] | None = None) -> None:
        self._on_body = on_body
        self.reset()

    def reset(self) -> None:
        self._state = _HEAD
        self._buf = b""
        self._left = 0
        self.status = 0
        self.head = b""
        self.close_after = False

    @property
    def done(self) -> bool:
        return self._state == _DONE

    @property
    def started(self) -> bool:
        return self._state != _HEAD or bool(self._buf)

    def header(self, name: bytes) -> bytes | None:
        """A response header's value (first occurrence), by lower-case name."""
        for line in self.head.split(b"\r\n")[1:]:
            key, sep, value = line.partition(b":")
            if sep and key.strip().lower() == name:
                return value.strip()
        return None

    def feed(self, data: bytes) -> bool:
        """Consume ``data``; True when the response is complete. Bytes past its end are an error
        (the benchmark never pipelines requests)."""
        buf = self._buf + data if self._buf else data
        self._buf = b""
        pos = 0
        end = len(buf)
        on_body = self._on_body
        while pos < end or self._state == _DONE:
            state = self._state
            if state == _HEAD:
                idx = buf.find(b"\r\n\r\n", pos)
                if idx < 0:
                    self._buf = buf[pos:]
                    return False
                self._parse_head(buf[pos:idx])
                pos = idx + 4
                if self.status in (100, 102, 103):  # an interim response: the real one follows
                    self._state = _HEAD
                    continue
            elif state == _FIXED:
                take = min(self._left, end - pos)
                if on_body is not None and take:
                    on_body(buf[pos : pos + take])
                pos += take
                self._left -= take
                if self._left == 0:
                    self._state = _DONE
            elif state == _CHUNK_SIZE:
                idx = buf.find(b"\r\n", pos)
                if idx < 0:
                    self._buf = buf[pos:]
                    return False
                line = buf[pos:idx].split(b";", 1)[0].strip()
                try:
                    size = int(line, 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size {line[:20]!r}") from None
                pos = idx + 2
                if size == 0:
                    self._state = _TRAILER
                else:
                    self._left = size
                    self._state = _CHUNK_DATA
            elif state == _CHUNK_DATA:
                take = min(self._left, end - pos)
                if on_body is not None and take:
                    on_body(buf[pos : pos + take])
                pos += take
                self._left -= take
                if self._left == 0:
                    self._state = _CHUNK_CRLF
            elif state == _CHUNK_CRLF:
                if end - pos < 2:
                    self._buf = buf[pos:]
                    return False
                if buf[pos : pos + 2] != b"\r\n":
                    raise ProtocolError("chunk not followed by CRLF")
                pos += 2
                self._state = _CHUNK_SIZE
            elif state == _TRAILER:
                idx = buf.find(b"\r\n", pos)
                if idx < 0:
                    self._buf = buf[pos:]
                    return False
                blank = idx == pos
                pos = idx + 2
                if blank:
                    self._state = _DONE
            elif state == _UNTIL_CLOSE:
                if on_body is not None:
                    on_body(buf[pos:])
                pos = end
            else:  # _DONE
                if pos < end:
                    raise ProtocolError("bytes after the end of the response")
                return True
        return self._state == _DONE

    def eof(self) -> bool:
        """The connection closed: True if that completes a close-delimited response."""
        if self._state == _UNTIL_CLOSE:
            self._state = _DONE
            return True
        return self._state == _DONE

    def _parse_head(self, head: bytes) -> None:
        self.head = head
        first, _, rest = head.partition(b"\r\n")
        parts = first.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ProtocolError(f"bad status line {first[:40]!r}")
        try:
            self.status = int(parts[1])
        except ValueError:
            raise ProtocolError(f"bad status line {first[:40]!r}") from None
        length = -1
        chunked = False
        close = parts[0] == b"HTTP/1.0"
        for line in rest.split(b"\r\n"):
            key, _, value = line.partition(b":")
            key = key.strip().lower()
            if key == b"content-length":
                length = int(value.strip())
            elif key == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif key == b"connection":
                v = value.strip().lower()
                if v == b"close":
                    close = True
                elif v == b"keep-alive":
                    close = False
        self.close_after = close
        if self.status in (100, 102, 103):
            return
        if self.status in (204, 304):
            self._state = _DONE
        elif chunked:
            self._state = _CHUNK_SIZE
        elif length >= 0:
            self._left = length
            self._state = _FIXED if length else _DONE
        else:
            self.close_after = True
            self._state = _UNTIL_CLOSE


def chat_request(
    host: str,
    port: int,
    path: str,
    body: bytes,
    headers: dict[str, str] | None = None,
) -> bytes:
    """The bytes of one keep-alive POST with a JSON body."""
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        "Accept: */*",
        f"Content-Length: {len(body)}",
    ]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
