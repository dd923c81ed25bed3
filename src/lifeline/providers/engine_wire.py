"""The framing between a worker and the engine process (one per machine) over its Unix socket.

One connection carries one call: the worker sends a request frame, the engine answers with chunk frames and
an end frame (a chat call), one result frame (embeddings, token counts, stats) or an error frame, and a beat
frame every BEAT seconds while the call runs. The engine enforces the target's timeouts itself (the same code
as in one process: it answers UpstreamSilent at its first-token or idle limit); the beats let a worker tell an
engine that is working (a long prompt, a tool call held back until complete) from one that hangs. Closing the
connection is how a worker says its client left: the engine stops generating and frees its slot. A frame is a
4-byte big-endian length, one byte saying what it is, then its payload (JSON; a chunk's payload is the
chat-completion chunk's own JSON, sent on unchanged). No HTTP: nothing on a local socket needs its headers,
and a chunk costs one write and one read.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import orjson

from lifeline.errors import (
    ContextLengthExceeded,
    UpstreamError,
    UpstreamModelNotFound,
    UpstreamOverloaded,
    UpstreamRejected,
    UpstreamSilent,
    UpstreamUnavailable,
)

REQUEST = b"q"
CHUNK = b"c"
END = b"d"
RESULT = b"r"
ERROR = b"e"
BEAT = b"b"

#: seconds between two beats of a running call
BEAT_INTERVAL = 1.0

#: a frame larger than this is not one the engine or a worker sends: the peer is not speaking this framing
MAX_FRAME = 64 * 1024 * 1024

_HEADER = struct.Struct(">Ic")

#: the errors an engine answers with, by class name: the worker raises the same class the in-process engine
#: would, so the router fails over exactly as it does in one process
_ERRORS: dict[str, type[UpstreamError]] = {
    cls.__name__: cls
    for cls in (
        UpstreamOverloaded,
        UpstreamSilent,
        UpstreamRejected,
        UpstreamUnavailable,
        UpstreamModelNotFound,
        ContextLengthExceeded,
    )
}


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return _HEADER.pack(len(payload), kind) + payload


async def read_frame(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """The next frame's kind and payload. A connection closed mid-frame or a frame that breaks the framing
    raises ConnectionError (asyncio.IncompleteReadError is an EOFError; it is turned into one too)."""
    try:
        length, kind = _HEADER.unpack(await reader.readexactly(_HEADER.size))
        if length > MAX_FRAME:
            raise ConnectionError(f"a frame of {length} bytes")
        return kind, await reader.readexactly(length) if length else b""
    except asyncio.IncompleteReadError:
        raise ConnectionError("the connection closed mid-frame") from None


def error_frame(exc: UpstreamError) -> bytes:
    """An error the engine met, as the worker re-raises it (its class, message and retry advice)."""
    name = type(exc).__name__ if type(exc).__name__ in _ERRORS else UpstreamUnavailable.__name__
    body = {"error": name, "message": exc.message, "retry_after": exc.retry_after, "headers": exc.headers}
    return frame(ERROR, orjson.dumps(body))


def error_of(payload: bytes, target: str) -> UpstreamError:
    """The error an error frame carries, for the worker's target `target`."""
    try:
        body: dict[str, Any] = orjson.loads(payload)
    except orjson.JSONDecodeError:
        body = {}
    cls = _ERRORS.get(str(body.get("error")), UpstreamUnavailable)
    return cls(
        str(body.get("message") or "the engine process failed"),
        target=target,
        retry_after=body.get("retry_after"),
        headers=body.get("headers") or None,
    )
