"""GET /v1/models, /healthz, /readyz and /admin/targets."""

from __future__ import annotations

import os

import orjson
from starlette.requests import Request
from starlette.responses import Response

from lifeline.errors import ModelNotFound
from lifeline.server.gateway import gateway_of


def _json(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _model(alias: str) -> dict[str, object]:
    return {"id": alias, "object": "model", "created": 0, "owned_by": "lifeline"}


async def list_models(request: Request) -> Response:
    gateway = gateway_of(request)
    key = gateway.accounting.authenticate(request.headers.get("authorization"))
    return _json({"object": "list", "data": [_model(a) for a in gateway.accounting.allowed_aliases(key)]})


async def get_model(request: Request) -> Response:
    gateway = gateway_of(request)
    key = gateway.accounting.authenticate(request.headers.get("authorization"))
    name = request.path_params["model"]
    if name not in gateway.accounting.allowed_aliases(key):
        raise ModelNotFound(f"The model '{name}' does not exist.")
    return _json(_model(name))


async def metrics(request: Request) -> Response:
    gateway = gateway_of(request)
    if gateway.link is not None:  # one of `serve --workers N`: every worker's, each labelled worker="n"
        return Response(await gateway.link.metrics(gateway.metrics), media_type="text/plain; version=0.0.4")
    return Response(gateway.metrics.render(), media_type="text/plain; version=0.0.4")


async def healthz(request: Request) -> Response:
    worker = getattr(request.app.state, "worker", None)
    if worker is not None:  # one of `serve --workers N`: which one, and its process (nothing secret)
        return _json({"status": "alive", "worker": worker, "pid": os.getpid()})
    return _json({"status": "alive"})


async def readyz(request: Request) -> Response:
    gateway = gateway_of(request)
    unready = [
        alias
        for alias, permitted in gateway.router.permitted.items()
        # only the targets the alias's constraints allow can make it ready
        if not any(gateway.health.available(t) for t in permitted)
    ]
    if not gateway.started or unready:
        reason = "starting" if not gateway.started else "no available target"
        return _json({"status": "not ready", "reason": reason, "aliases": unready}, status=503)
    return _json({"status": "ready"})
