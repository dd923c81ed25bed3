"""GET /v1/models, /healthz, /readyz and /admin/targets."""

from __future__ import annotations

import hmac

import orjson
from starlette.requests import Request
from starlette.responses import Response

from lifeline.errors import AuthenticationFailed, ModelNotFound
from lifeline.server.gateway import Gateway


def _json(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _model(alias: str) -> dict[str, object]:
    return {"id": alias, "object": "model", "created": 0, "owned_by": "lifeline"}


async def list_models(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    return _json({"object": "list", "data": [_model(a) for a in gateway.config.aliases]})


async def get_model(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    name = request.path_params["model"]
    if name not in gateway.config.aliases:
        raise ModelNotFound(f"The model '{name}' does not exist.")
    return _json(_model(name))


async def healthz(request: Request) -> Response:
    return _json({"status": "alive"})


async def readyz(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    unready = [
        alias
        for alias, spec in gateway.config.aliases.items()
        if not any(gateway.health.available(t) for t in spec.targets)
    ]
    if not gateway.started or unready:
        reason = "starting" if not gateway.started else "no available target"
        return _json({"status": "not ready", "reason": reason, "aliases": unready}, status=503)
    return _json({"status": "ready"})


def require_admin(request: Request, gateway: Gateway) -> None:
    key = gateway.config.admin.master_key
    if key is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        given = ""
    given = given.strip()
    if not hmac.compare_digest(given.encode(), key.get_secret_value().encode()):
        raise AuthenticationFailed("A valid master key is needed for /admin endpoints.")


async def admin_targets(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    require_admin(request, gateway)
    targets = gateway.health.snapshot(list(gateway.config.targets))
    for row in targets:
        target = gateway.config.targets[row["target"]]
        row["kind"] = target.kind
        row["model"] = gateway.providers[row["target"]].model
    return _json({"targets": targets, "recent_failovers": list(gateway.health.recent_failovers)})
