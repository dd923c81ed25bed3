"""What every HTTP-speaking provider shares: reading Retry-After, reading an error body, scrubbing secrets."""

from __future__ import annotations

import email.utils
import math
import time
from typing import Any

import httpx
import orjson

MAX_ERROR_BODY = 64 * 1024


#: a Retry-After beyond this is treated as this: a day is "not today", and keeps the arithmetic finite
MAX_RETRY_AFTER = 86400.0


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """Seconds to wait from `retry-after-ms` (OpenAI) or `Retry-After` (seconds or an HTTP date)."""
    ms = _seconds(headers.get("retry-after-ms"))
    if ms is not None:
        return min(MAX_RETRY_AFTER, ms / 1000)
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _seconds(value)
    if seconds is not None:
        return min(MAX_RETRY_AFTER, seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(MAX_RETRY_AFTER, max(0.0, when.timestamp() - time.time()))


def _seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return max(0.0, number) if math.isfinite(number) else None


async def read_error(response: httpx.Response) -> dict[str, Any]:
    """The `error` object of an upstream's error response, whatever shape it came in."""
    raw = b""
    try:
        async for piece in response.aiter_bytes():
            raw += piece
            if len(raw) > MAX_ERROR_BODY:
                break
    except httpx.HTTPError:
        pass
    return error_object(raw)


def error_object(raw: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        text = raw[:500].decode("utf-8", "replace").strip()
        return {"message": text} if text else {}
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            return error
        if isinstance(error, str):
            return {"message": error, "code": data.get("code"), "type": data.get("type")}
        if "message" in data:
            return data
    return {}


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """Remove any secret (or a long enough prefix of one, as upstreams echo keys half-masked)."""
    for secret in secrets:
        if not secret:
            continue
        text = text.replace(secret, "***")
        if len(secret) >= 12:
            text = text.replace(secret[:8], "***")
    return text
