"""create_app(config): the ASGI application.

The gateway serving new requests is `app.state.gateway`; a reload of the config file (server/reload.py)
replaces it while requests already running finish on the one they started on.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Route

from lifeline.config.schema import Config
from lifeline.console.app import Console, console_routes
from lifeline.errors import DatabaseUnavailable, LifelineError
from lifeline.providers.registry import ProviderRegistry
from lifeline.server import errors
from lifeline.server.gateway import Gateway
from lifeline.server.middleware import Front, GatewayMiddleware
from lifeline.server.reload import Reloader
from lifeline.server.routes.admin import (
    admin_targets,
    create_key,
    get_key,
    list_keys,
    revoke_key,
    update_key,
    usage,
)
from lifeline.server.routes.chat import chat_completions
from lifeline.server.routes.completions import completions
from lifeline.server.routes.control import change_target, failovers, reload_config, set_target_state
from lifeline.server.routes.embeddings import embeddings
from lifeline.server.routes.info import get_model, healthz, list_models, metrics, readyz
from lifeline.server.routes.messages import count_tokens, messages
from lifeline.server.routes.responses import create_response, delete_response, get_response, list_input_items
from lifeline.server.serving import freeze_startup_objects
from lifeline.server.worker_state import StateLink

log = logging.getLogger("lifeline.server")


def create_app(
    config: Config,
    registry: ProviderRegistry | None = None,
    *,
    config_path: str | Path | None = None,
    span_exporter: Any = None,
    link: StateLink | None = None,
    freeze: bool = False,
) -> Starlette:
    """`config_path`: the file `config` was read from, for reloads (SIGHUP, POST /admin/reload);
    `span_exporter`: an OpenTelemetry SpanExporter to use instead of OTLP (tests); `link`: a worker's link to
    its supervisor (`serve --workers N`, server/workers.py); `freeze`: once started, leave the objects of
    starting to the collector's permanent generation (`lifeline serve` and its workers; server/serving.py)."""
    gateway = Gateway.build(config, registry, span_exporter=span_exporter, link=link)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        reloader: Reloader = app.state.reloader
        if link is not None:
            await link.start()  # before the gateway: it starts knowing the circuits the other workers opened
        await app.state.gateway.start()  # not create_app's local: a reload must be able to free that gateway
        uninstall = reloader.install_sighup()
        if freeze:
            freeze_startup_objects()
        if link is not None:
            link.ready()
        try:
            yield
        finally:
            uninstall()
            await reloader.shutdown()
            if link is not None:
                await link.close()  # after the last request has settled its limits through it

    exception_handlers: dict[Any, Any] = {
        LifelineError: errors.lifeline_error,
        HTTPException: errors.http_error,
        DatabaseUnavailable: errors.database_unavailable,
    }
    # The hot route, served by the middleware without Starlette's router, and on uvicorn's HTTP/1.1 protocol
    # without ASGI at all (server/direct.py).
    front = Front({"/v1/chat/completions": chat_completions}, exception_handlers)
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/v1/responses", create_response, methods=["POST"]),
            Route("/v1/responses/{response_id}", get_response, methods=["GET"]),
            Route("/v1/responses/{response_id}", delete_response, methods=["DELETE"]),
            Route("/v1/responses/{response_id}/input_items", list_input_items, methods=["GET"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/models/{model:path}", get_model, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/admin/targets", admin_targets, methods=["GET"]),
            Route("/admin/targets/{name}", set_target_state, methods=["POST"]),
            Route("/admin/failovers", failovers, methods=["GET"]),
            Route("/admin/reload", reload_config, methods=["POST"]),
            Route("/admin/keys", create_key, methods=["POST"]),
            Route("/admin/keys", list_keys, methods=["GET"]),
            Route("/admin/keys/{key_id}", get_key, methods=["GET"]),
            Route("/admin/keys/{key_id}", update_key, methods=["PATCH"]),
            Route("/admin/keys/{key_id}", revoke_key, methods=["DELETE"]),
            Route("/admin/usage", usage, methods=["GET"]),
            *console_routes(),
        ],
        # Request ids, the edge guard and the gateway's request count in one hop, which also serves the hot
        # route itself (server/middleware.py); the others go through Starlette's router.
        middleware=[Middleware(GatewayMiddleware, front=front)],
        exception_handlers=exception_handlers,
        lifespan=lifespan,
    )
    # Starlette would answer /healthz/ with a redirect to the host the Host header names (an open redirect);
    # an unknown path is a 404 that names the path without the slash instead (server/errors.py).
    app.router.redirect_slashes = False
    app.state.gateway = gateway
    app.state.front = front
    app.state.span_exporter = span_exporter
    app.state.worker = link.worker if link is not None else None
    if link is not None:  # the metrics of the gateway serving now (a reload keeps the same Metrics)
        link.collect = lambda: app.state.gateway.metrics.collect()

        def override(name: str, fields: dict[str, Any]) -> None:
            try:
                change_target(app.state.gateway, name, fields, announce=False)
            except LifelineError as exc:  # a target this worker's config does not have
                log.warning("an override made on another worker does not apply here: %s", exc.message)

        link.on_override = override
    app.state.console = Console()
    app.state.reloader = Reloader(app, Path(config_path) if config_path is not None else None, registry)
    app.state.reloader.freeze = freeze
    return app
