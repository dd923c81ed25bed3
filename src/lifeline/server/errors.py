"""Rendering every error as OpenAI's error envelope, in one place."""

from __future__ import annotations

import logging

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match

from lifeline.errors import AccountingUnavailable, DatabaseUnavailable, LifelineError, RouteNotFound

log = logging.getLogger("lifeline.server")


def error_response(error: LifelineError) -> Response:
    return Response(
        orjson.dumps(error.envelope()),
        status_code=error.status,
        headers=error.headers,
        media_type="application/json",
    )


async def lifeline_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LifelineError)
    log.info(
        "request failed",
        extra={"status": exc.status, "code": exc.code, "attempts": exc.headers.get("x-lifeline-attempts")},
    )
    return error_response(exc)


async def database_unavailable(request: Request, exc: Exception) -> Response:
    """The database went away under an admin call (or anything else that reads it): 503, not 500."""
    assert isinstance(exc, DatabaseUnavailable)
    log.warning("database unavailable: %s", exc)  # the layer below keeps URLs and passwords out of it
    return error_response(AccountingUnavailable())


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        error = RouteNotFound(
            f"Method {request.method} is not allowed on {request.url.path}.", status=405, code="method_not_allowed"
        )
    else:
        error = RouteNotFound(f"Unknown path {request.url.path}.{_slash_hint(request)}", status=exc.status_code)
    if exc.headers:
        error.headers.update(exc.headers)  # Allow, on a 405
    return error_response(error)


def _slash_hint(request: Request) -> str:
    """Where a path with a trailing slash would have gone without it. Said, not redirected: a redirect would
    name the host from the Host header, which the client chose."""
    path = request.url.path
    if not path.endswith("/") or path == "/":
        return ""
    scope = {"type": "http", "path": path.rstrip("/") or "/", "method": request.method}
    if any(route.matches(scope)[0] is not Match.NONE for route in request.app.router.routes):
        return f" Without the trailing slash: {scope['path']}"
    return ""
