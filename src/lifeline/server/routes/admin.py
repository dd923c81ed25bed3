"""The admin API: circuits, virtual keys and usage. Guarded by `admin.master_key`.

/admin/targets is open when no master key is configured (bind to loopback); key management and usage are
refused outright without one, since they hand out and reveal credentials and spend.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from lifeline.accounting.keys import VirtualKey
from lifeline.accounting.usage import UsageReport, make_query, usage_report
from lifeline.config.presets import suggest
from lifeline.errors import AuthenticationFailed, InvalidRequest, PermissionDenied, UsageQueryError
from lifeline.protocol.parse import parse_json_object
from lifeline.server.body import read_body
from lifeline.server.gateway import Gateway, gateway_of

MAX_ADMIN_BODY = 64 * 1024


def _json(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def require_admin(request: Request, gateway: Gateway, *, strict: bool = False) -> None:
    """Check the master key. `strict`: refuse even when no master key is configured."""
    key = gateway.config.admin.master_key
    if key is None:
        if strict:
            raise PermissionDenied("The admin API for keys and usage needs admin.master_key in the config.")
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    given = given.strip() if scheme.lower() == "bearer" else ""
    expected = key.get_secret_value()
    # Digests compared in constant time (not even the key's length shows); an empty bearer never matches,
    # not even an empty key (which the config refuses to load anyway).
    matches = hmac.compare_digest(hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest())
    if not (given and expected.strip() and matches):
        raise AuthenticationFailed("A valid master key is needed for /admin endpoints.")


async def _body(request: Request) -> dict[str, Any]:
    return parse_json_object(await read_body(request, MAX_ADMIN_BODY) or b"{}")


def _check_aliases(fields: dict[str, Any], gateway: Gateway) -> None:
    """A key limited to an alias the config does not define could never be used: refuse it now (the key
    store checks the field's shape; this checks the names against the config serving now)."""
    aliases = fields.get("aliases")
    if not isinstance(aliases, list):
        return
    known = gateway.config.aliases
    for alias in aliases:
        if isinstance(alias, str) and alias not in known:
            raise InvalidRequest(
                f"The config defines no alias of that name{suggest(alias, dict.fromkeys(sorted(known)))}",
                param="aliases",
                code="unknown_alias",
            )


async def admin_targets(request: Request) -> Response:
    gateway = gateway_of(request)
    require_admin(request, gateway)
    targets = gateway.health.snapshot(list(gateway.config.targets))
    for row in targets:
        target = gateway.config.targets[row["target"]]
        row["kind"] = target.kind
        row["model"] = gateway.providers[row["target"]].model
    return _json({"targets": targets, "recent_failovers": list(gateway.health.recent_failovers)})


# --- the services the admin API and the console (lifeline/console) share ---------------------------------


async def new_key(gateway: Gateway, fields: dict[str, Any]) -> tuple[VirtualKey, str]:
    """Create a key from the admin API's fields; returns it and its secret (stored only as a hash)."""
    fields = dict(fields)
    name = fields.pop("name", None)
    if name is None:
        raise InvalidRequest("Missing required parameter: 'name'.", param="name", code="missing_required_parameter")
    _check_aliases(fields, gateway)
    key, secret = await asyncio.to_thread(gateway.accounting.store.create, name, **fields)
    gateway.accounting.keys.put(key)
    return key, secret


async def change_key(gateway: Gateway, key_id: str, fields: dict[str, Any]) -> VirtualKey:
    _check_aliases(fields, gateway)
    key = await asyncio.to_thread(gateway.accounting.store.update, key_id, **fields)
    gateway.accounting.keys.put(key)
    return key


async def end_key(gateway: Gateway, key_id: str) -> VirtualKey:
    key = await asyncio.to_thread(gateway.accounting.store.revoke, key_id)
    gateway.accounting.keys.put(key)
    return key


async def usage_of(gateway: Gateway, params: Mapping[str, str]) -> UsageReport:
    """The usage report the query parameters ask for (by, since, until, key, alias, target, model, shadow):
    the same query as `lifeline usage`, after the ledger's buffer is flushed."""
    try:
        query = make_query(
            by=params.get("by") or None,
            since=params.get("since") or None,
            until=params.get("until") or None,
            key_id=params.get("key") or None,
            alias=params.get("alias") or None,
            target=params.get("target") or None,
            model=params.get("model") or None,
            shadow=params.get("shadow") in ("1", "true"),
        )
    except UsageQueryError as exc:
        raise InvalidRequest(str(exc), param="by") from None
    ledger = gateway.accounting.ledger
    if ledger is not None:
        await asyncio.to_thread(ledger.flush, 5.0)
    return await asyncio.to_thread(usage_report, gateway.accounting.db, query)


# --- the routes -----------------------------------------------------------------------------------


async def create_key(request: Request) -> Response:
    gateway = gateway_of(request)
    require_admin(request, gateway, strict=True)
    key, secret = await new_key(gateway, await _body(request))
    # The secret is shown here once; it is stored only as a hash.
    return _json({"key": key.public(), "secret": secret}, status=201)


async def list_keys(request: Request) -> Response:
    gateway = gateway_of(request)
    require_admin(request, gateway, strict=True)
    include_revoked = request.query_params.get("include_revoked", "true").lower() != "false"
    keys = await asyncio.to_thread(gateway.accounting.store.list, include_revoked)
    return _json({"object": "list", "data": [k.public() for k in keys]})


async def get_key(request: Request) -> Response:
    gateway = gateway_of(request)
    require_admin(request, gateway, strict=True)
    key = await asyncio.to_thread(gateway.accounting.store.get, request.path_params["key_id"])
    data = key.public()
    if key.budget_period is not None:
        spent, reserved = await gateway.accounting.limits.spent(key.id, key.budget_period)
        data["budget_spent_usd"] = spent / 1e9
        data["budget_reserved_usd"] = reserved / 1e9
    return _json(data)


async def update_key(request: Request) -> Response:
    gateway = gateway_of(request)
    require_admin(request, gateway, strict=True)
    key = await change_key(gateway, request.path_params["key_id"], await _body(request))
    return _json(key.public())


async def revoke_key(request: Request) -> Response:
    gateway = gateway_of(request)
    require_admin(request, gateway, strict=True)
    key = await end_key(gateway, request.path_params["key_id"])
    return _json(key.public())


async def usage(request: Request) -> Response:
    """GET /admin/usage?by=key,alias,target,model,day&since=…&until=…&key=…&alias=…&format=json|csv; client
    traffic, or shadow calls with shadow=true"""
    gateway = gateway_of(request)
    require_admin(request, gateway, strict=True)
    params = request.query_params
    fmt = params.get("format", "json")
    if fmt not in ("json", "csv"):
        raise InvalidRequest("'format' must be json or csv.", param="format")
    report = await usage_of(gateway, params)
    if fmt == "csv":
        return Response(report.to_csv(), media_type="text/csv")
    return _json({"object": "list", "columns": list(report.columns), "data": report.rows})
