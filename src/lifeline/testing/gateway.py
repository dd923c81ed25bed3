"""Running a real Lifeline server on loopback in a background thread, for tests and rehearsals."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette

from lifeline.config.schema import Config
from lifeline.server.app import create_app
from lifeline.server.gateway import Gateway
from lifeline.server.serving import uvicorn_options


@dataclass
class RunningGateway:
    app: Starlette
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def gateway(self) -> Gateway:
        gateway: Gateway = self.app.state.gateway
        return gateway


@contextmanager
def run_gateway(
    config: Config, startup_timeout: float = 30.0, *, span_exporter: Any = None
) -> Iterator[RunningGateway]:
    """Serve `config` on 127.0.0.1 (a free port) until the block ends."""
    app = create_app(config, span_exporter=span_exporter)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", **uvicorn_options(config)))
    thread = threading.Thread(target=server.run, name="lifeline-gateway", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the gateway failed to start")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the gateway did not start in time")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield RunningGateway(app, port)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
