"""Just enough HTTP/1.1 for the fault wall: request parsing and response framing.

Only Content-Length request bodies are understood; responses are either fixed-length or chunked.
Kept separate from the wall so the misbehaviours there read as plain byte writes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import orjson

from lifeline.errors import HttpError

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 32 * 1024 * 1024
CHUNK_END = b"0\r\n\r\n"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool
    received_at: float  # time.monotonic() once the body is fully read
    received_wall_time: float


def reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _keep_alive(version: str, headers: dict[str, str]) -> bool:
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    if version == "HTTP/1.0":
        return "keep-alive" in tokens
    return "close" not in tokens


async def read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Request | None:
    """Read one request; ``None`` when the peer closed the connection between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise HttpError(400, "Incomplete request head.") from exc
        return None
    except asyncio.LimitOverrunError as exc:
        raise HttpError(431, "Request head too large.") from exc

    lines = head.decode("latin-1").split("\r\n")
    # Tolerate stray empty lines before the request line, as RFC 9112 allows.
    while lines and not lines[0]:
        lines.pop(0)
    parts = lines[0].split(" ") if lines else []
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpError(400, "Malformed request line.")
    method, target, version = parts

    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError(400, "Malformed header line.")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value

    if "transfer-encoding" in headers:
        raise HttpError(411, "Chunked request bodies are not supported; send Content-Length.")
    raw_length = headers.get("content-length")
    if raw_length is None:
        length = 0  # neither Content-Length nor Transfer-Encoding: no body (RFC 9112 §6.3), a POST's too
    else:
        if not raw_length.isdigit():
            raise HttpError(400, "Invalid Content-Length.")
        length = int(raw_length)
        if length > MAX_BODY_BYTES:
            raise HttpError(413, "Request body too large.")

    if length and headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    body = await reader.readexactly(length) if length else b""

    path, _, query = target.partition("?")
    return Request(method, path, query, headers, body, _keep_alive(version, headers), time.monotonic(), time.time())


def _head(status: int, headers: list[tuple[str, str]], keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason(status)}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    lines.append(f"Connection: {'keep-alive' if keep_alive else 'close'}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def fixed_response(
    status: int,
    body: bytes,
    *,
    keep_alive: bool,
    content_type: str = "application/json",
    extra: list[tuple[str, str]] | None = None,
) -> bytes:
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    if extra:
        headers.extend(extra)
    return _head(status, headers, keep_alive) + body


def stream_head(*, keep_alive: bool) -> bytes:
    headers = [
        ("Content-Type", "text/event-stream; charset=utf-8"),
        ("Cache-Control", "no-cache"),
        ("Transfer-Encoding", "chunked"),
    ]
    return _head(200, headers, keep_alive)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def sse(data: bytes) -> bytes:
    """One server-sent event carrying ``data``, already wrapped as an HTTP chunk."""
    return chunk(b"data: " + data + b"\n\n")


def json_object(raw: bytes) -> dict[str, Any] | None:
    """A request body parsed as a JSON object, or None when it is not one."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


async def send(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()


async def send_json(
    writer: asyncio.StreamWriter,
    status: int,
    payload: Any,
    keep_alive: bool,
    extra: list[tuple[str, str]] | None = None,
) -> bool:
    """A whole JSON response; returns whether the connection may carry another request."""
    await send(writer, fixed_response(status, orjson.dumps(payload), keep_alive=keep_alive, extra=extra))
    return keep_alive
