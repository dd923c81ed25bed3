"""Runtime control: drain, cut or heal a target; the recent failovers; reload the config file.

Guarded like /admin/targets (`admin.master_key` when one is set). Overrides live in this process only: with
several replicas, each is told on its own.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import orjson
from starlette.requests import Request
from starlette.responses import Response

from lifeline.errors import InvalidRequest, TargetNotFound
from lifeline.protocol.parse import parse_json_object
from lifeline.providers.faults import FAULT_KINDS, STREAM_CUT_AFTER, Fault, FaultKind
from lifeline.server.body import read_body
from lifeline.server.gateway import Gateway, gateway_of
from lifeline.server.reload import Reloader
from lifeline.server.routes.admin import MAX_ADMIN_BODY, require_admin

log = logging.getLogger("lifeline.server")

STATES = ("drained", "cut", "healthy")


def _json(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


async def _fields(request: Request) -> dict[str, Any]:
    return parse_json_object(await read_body(request, MAX_ADMIN_BODY) or b"{}")


def _one_of(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        shown = "nothing" if value is None else repr(value)
        raise InvalidRequest(f"'{name}' must be one of {', '.join(allowed)}; got {shown}.", param=name)
    return str(value)


def _fault(fields: dict[str, Any]) -> Fault:
    kind = _one_of("fault", fields.get("fault", "forbidden"), FAULT_KINDS)
    after = fields.get("after", STREAM_CUT_AFTER)
    if "after" in fields and kind != "stream_cut":
        raise InvalidRequest("'after' applies only to the fault stream_cut.", param="after")
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise InvalidRequest("'after' must be a whole number of content chunks, 0 or more.", param="after")
    return Fault(cast(FaultKind, kind), after)


def change_target(gateway: Gateway, name: str, fields: dict[str, Any], *, announce: bool = True) -> dict[str, Any]:
    """Drain, cut or heal a target ({"state": …, "fault": …, "after": N}); returns its row as /admin/targets
    shows it. Shared by the admin API and the console; no await, so no reload comes between check and change.
    Under `serve --workers N` the other workers are told (`announce`), and make the same change."""
    if name not in gateway.config.targets:
        known = ", ".join(sorted(gateway.config.targets))
        raise TargetNotFound(f"There is no target '{name}'. Targets: {known}.", param="name")
    unknown = sorted(set(fields) - {"state", "fault", "after"})
    if unknown:
        raise InvalidRequest(f"Unknown parameter: '{unknown[0]}'.", param=unknown[0], code="unknown_parameter")
    state = _one_of("state", fields.get("state"), STATES)
    health = gateway.health
    if state == "cut":
        health.cut(name, _fault(fields))
    else:
        for extra in ("fault", "after"):
            if extra in fields:
                raise InvalidRequest(f"'{extra}' applies only to the state cut.", param=extra)
        if state == "drained":
            health.drain(name)
        else:
            health.heal(name)
    log.info("operator: target %s is now %s", name, health.override(name) or "healthy")
    if announce and gateway.link is not None:
        gateway.link.send({"op": "override", "target": name, "fields": fields})
    return gateway.target_row(name)


async def set_target_state(request: Request) -> Response:
    """POST /admin/targets/{name} {"state": "drained"|"cut"|"healthy", "fault": …, "after": N}"""
    require_admin(request, gateway_of(request))
    fields = await _fields(request)
    # The gateway serving new requests now, even if a reload replaced the one this request started on.
    gateway: Gateway = request.app.state.gateway
    return _json(change_target(gateway, request.path_params["name"], fields))


async def failovers(request: Request) -> Response:
    """GET /admin/failovers: the last 100 failovers, oldest first."""
    gateway = gateway_of(request)
    require_admin(request, gateway)
    return _json({"object": "list", "data": list(gateway.health.recent_failovers)})


async def reload_config(request: Request) -> Response:
    """POST /admin/reload: read the config file again; 400 (and nothing changes) when it is invalid."""
    require_admin(request, gateway_of(request))
    reloader: Reloader = request.app.state.reloader
    done = await reloader.reload()
    if done.gateway.link is not None:  # under `serve --workers N`: the other workers reload too (SIGHUP)
        done.gateway.link.send({"op": "reload"})
    config = done.gateway.config
    return _json(
        {
            "reloaded": True,
            "aliases": list(config.aliases),
            "targets": list(config.targets),
            "circuits_carried_over": done.carried_over,
        }
    )
