"""Rendering errors, one renderer per wire format: OpenAI's error envelope for every route (the app's exception
handlers), and Anthropic's error shape for /v1/messages (`anthropic_errors`) and for unknown paths and wrong
methods under it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match

from lifeline.errors import AccountingUnavailable, DatabaseUnavailable, LifelineError, RouteNotFound
from lifeline.protocol.anthropic import error_body

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
    _log_failure(exc)
    return error_response(exc)


def _log_failure(error: LifelineError) -> None:
    log.info(
        "request failed",
        extra={"status": error.status, "code": error.code, "attempts": error.headers.get("x-lifeline-attempts")},
    )


Handler = Callable[[Request], Awaitable[Response]]


def anthropic_errors(handler: Handler) -> Handler:
    """`handler` with its errors rendered in the shape Anthropic's clients parse (the app's handlers speak
    OpenAI's), an unexpected one included, as the request-id middleware does for every other route."""

    async def speaking_anthropic(request: Request) -> Response:
        try:
            return await handler(request)
        except LifelineError as err:
            _log_failure(err)
            return anthropic_error_response(err, request.state.request_id)
        except Exception as exc:
            log.error("unexpected error", exc_info=exc)
            error = LifelineError("The gateway hit an internal error; it has been logged.")
            return anthropic_error_response(error, request.state.request_id)

    return speaking_anthropic


def anthropic_error_response(error: LifelineError, request_id: str) -> Response:
    return Response(
        orjson.dumps(error_body(error, request_id)),
        status_code=error.status,
        headers={**error.headers, "request-id": request_id},
        media_type="application/json",
    )


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
    if speaks_anthropic(request.url.path):
        return anthropic_error_response(error, request.state.request_id)
    return error_response(error)


def speaks_anthropic(path: str) -> bool:
    """Whether a path is under Anthropic's /v1/messages, whose clients parse only Anthropic's error shape."""
    return path == "/v1/messages" or path.startswith("/v1/messages/")


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
