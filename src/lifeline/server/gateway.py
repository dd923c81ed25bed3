"""The gateway's running state: config, targets, circuits, router, accounting and metrics, built once per
config (a reload builds a new one; see server/reload.py).

Each gateway counts the requests running on it, so that a gateway replaced by a reload is closed only once
the last of them has finished.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from lifeline.accounting.audits import latest_gaps
from lifeline.accounting.service import Accounting
from lifeline.config.schema import Config
from lifeline.metrics import Labels, Metrics
from lifeline.procstats import register_process_metrics
from lifeline.providers.base import Provider
from lifeline.providers.faults import inject_faults
from lifeline.providers.http import HttpProvider
from lifeline.providers.llamacpp import LlamaCppProvider
from lifeline.providers.registry import ProviderRegistry, default_registry
from lifeline.routing.health import Health, State
from lifeline.routing.router import Router
from lifeline.server.shadow import Shadows
from lifeline.server.worker_state import LinkedCircuits, LinkedLimits, StateLink
from lifeline.tracing import Tracing

log = logging.getLogger("lifeline.server")

_STATE_VALUE = {State.CLOSED: 0.0, State.HALF_OPEN: 1.0, State.OPEN: 2.0}


def _latest_audits(accounting: Accounting) -> dict[str, dict[str, float | None]]:
    """Each target's latest stored speech audit, for max_censorship_gap: read once per gateway (start-up and
    every reload). A database that cannot be read stops the build: a constraint is a promise."""
    db = accounting.open_db()
    try:
        return latest_gaps(db)
    finally:
        db.close()


def gateway_of(request: Request) -> Gateway:
    """The gateway a request started on (pinned in its scope by server/middleware.py), so that a reload
    never changes the config under a request that is running."""
    gateway: Gateway = request.scope.get("state", {}).get("gateway") or request.app.state.gateway
    return gateway


@dataclass(eq=False)
class Gateway:
    config: Config
    #: the targets' providers as built from the config; the router reaches them through fault injectors
    providers: dict[str, Provider]
    health: Health
    router: Router
    accounting: Accounting
    metrics: Metrics
    tracing: Tracing
    shadows: Shadows
    started: bool = field(default=False)
    _shared: object | None = None
    #: this worker's link to the supervisor (`serve --workers N`): circuits and limits shared with the other
    #: workers when Redis does not share them already (server/worker_state.py)
    link: StateLink | None = None
    #: requests that started on this gateway and have not finished (streams included)
    in_flight: int = 0
    _idle: asyncio.Event = field(default_factory=asyncio.Event)
    _closing: asyncio.Future[None] | None = None

    def __post_init__(self) -> None:
        self._idle.set()

    @classmethod
    def build(
        cls,
        config: Config,
        registry: ProviderRegistry | None = None,
        *,
        metrics: Metrics | None = None,
        span_exporter: Any = None,
        link: StateLink | None = None,
    ) -> Gateway:
        """Build (not start) a gateway. `metrics`: carry counters over from a gateway this one replaces;
        `span_exporter`: where spans go instead of OTLP (tests); `link`: this worker's link to the supervisor."""
        providers = (registry or default_registry()).build(config)
        health = Health(config.circuit)
        injected: dict[str, Provider] = {
            name: inject_faults(provider, health.faults, config.targets[name].timeouts)
            for name, provider in providers.items()
        }
        metrics = metrics or Metrics()
        tracing = Tracing(config.tracing, span_exporter)
        accounting = Accounting(config, metrics, tracing)
        if link is not None and config.accounting.redis_url is None:
            accounting.limits = LinkedLimits(link, config.accounting.redis_failure)
        audits = _latest_audits(accounting) if any(a.constraints.uses_audits for a in config.aliases.values()) else None
        router = Router(config, injected, health, tracing=tracing, prices=accounting.prices, audits=audits)
        shadows = Shadows(config, router, accounting, metrics)
        gateway = cls(config, providers, health, router, accounting, metrics, tracing, shadows, link=link)
        gateway.register_gauges()
        return gateway

    # --- requests in flight ------------------------------------------------------------------------

    def enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no request is running on this gateway."""
        await self._idle.wait()

    def target_row(self, name: str) -> dict[str, Any]:
        """A target as /admin/targets shows it: its circuit, the operator's override, kind and model."""
        row = self.health.snapshot([name])[0]
        row["kind"] = self.config.targets[name].kind
        row["model"] = self.providers[name].model
        return row

    def register_gauges(self) -> None:
        """Point the gauges of `metrics` (circuits, pools, engine queues, ledger) at this gateway."""

        def circuits() -> list[tuple[Labels, float]]:
            return [((("target", t),), _STATE_VALUE[self.health.circuit(t).state]) for t in self.config.targets]

        self.metrics.gauge(
            "lifeline_circuit_state", "Circuit state per target: 0 closed, 1 half-open, 2 open.", circuits
        )
        self.register_pool_gauges()

        def engine_queues() -> list[tuple[Labels, float]]:
            return [
                ((("target", name),), float(p.queue_depth))
                for name, p in self.providers.items()
                if isinstance(p, LlamaCppProvider)
            ]

        self.metrics.gauge(
            "lifeline_engine_queue_depth", "Requests waiting for an embedded engine (llamacpp target).", engine_queues
        )
        # Summed over the gateways alive: one a reload replaced keeps serving (and writing) until it closes.
        self.metrics.owned(
            "lifeline_requests_in_flight",
            "gauge",
            "HTTP requests being served, a stream until its end (this scrape included).",
            self,
            lambda: float(self.in_flight),
        )
        ledger = self.accounting.ledger
        if ledger is not None:
            self.metrics.gauge(
                "lifeline_ledger_queue_depth",
                "Ledger records waiting for the writer.",
                lambda: [((), float(ledger.queue_depth))],
            )
            m = self.metrics
            m.owned(
                "lifeline_ledger_written_total", "counter", "Ledger records committed.", self, lambda: ledger.written
            )
            m.owned(
                "lifeline_ledger_dropped_total",
                "counter",
                "Ledger records dropped because the buffer was full.",
                self,
                lambda: ledger.dropped,
            )
            m.owned(
                "lifeline_ledger_write_errors_total",
                "counter",
                "Failed ledger commits.",
                self,
                lambda: ledger.write_errors,
            )
        self.register_capture_gauges()
        register_process_metrics(self.metrics)

    def register_capture_gauges(self) -> None:
        """The capture store's writer, like the ledger's (when an alias captures or shadows)."""
        captures = self.accounting.captures
        if not captures.active:
            return
        writer, m = captures.writer, self.metrics
        m.gauge(
            "lifeline_capture_queue_depth",
            "Captures and shadow answers waiting for the writer.",
            lambda: [((), float(writer.queue_depth))],
        )
        m.owned(
            "lifeline_capture_written_total",
            "counter",
            "Captures and shadow answers committed.",
            self,
            lambda: writer.written,
        )
        m.owned(
            "lifeline_capture_dropped_total",
            "counter",
            "Captures and shadow answers dropped because the writer's buffer was full.",
            self,
            lambda: writer.dropped,
        )
        m.owned(
            "lifeline_capture_write_errors_total",
            "counter",
            "Failed commits of captures (the batch is kept and retried).",
            self,
            lambda: writer.write_errors,
        )
        m.owned(
            "lifeline_capture_rejected_total",
            "counter",
            "Captures the database refused or that could not be serialised (dropped).",
            self,
            lambda: writer.rejected,
        )

    def register_pool_gauges(self) -> None:
        """Each HTTP target's connection pool: connections lent out, requests waiting, the cap."""

        def pools(field: str) -> Callable[[], list[tuple[Labels, float]]]:
            def read() -> list[tuple[Labels, float]]:
                rows: list[tuple[Labels, float]] = []
                for name, provider in self.providers.items():
                    use = provider.pool_use() if isinstance(provider, HttpProvider) else None
                    if use is not None:
                        rows.append(((("target", name),), float(getattr(use, field))))
                return rows

            return read

        self.metrics.gauge(
            "lifeline_pool_connections_in_use", "Connections of a target's pool lent to requests.", pools("in_use")
        )
        self.metrics.gauge(
            "lifeline_pool_requests_waiting",
            "Requests waiting for a free connection of a target's pool.",
            pools("waiting"),
        )
        self.metrics.gauge(
            "lifeline_pool_connections_max", "The cap of a target's pool (max_connections).", pools("capacity")
        )

    async def start(self) -> None:
        await self.accounting.start()
        redis_url = self.config.accounting.redis_url
        if redis_url is not None:
            from lifeline.routing.shared import SharedCircuits

            shared = SharedCircuits(self.health, redis_url.get_secret_value(), self.config.accounting.redis_failure)
            await shared.start()
            self._shared = shared
        elif self.link is not None:
            linked = LinkedCircuits(self.health, self.link)
            await linked.start()
            self._shared = linked
        await asyncio.gather(*(p.start() for p in self.providers.values()))
        self.started = True
        log.info("gateway ready: %d target(s), aliases: %s", len(self.providers), ", ".join(self.config.aliases))

    async def close(self) -> None:
        """Release everything; safe to call more than once (later calls wait for the first)."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        self.started = False
        await self.shadows.close()
        await asyncio.gather(*(p.close() for p in self.providers.values()), return_exceptions=True)
        if self._shared is not None:
            await self._shared.close()  # type: ignore[attr-defined]
        await self.accounting.close()
        self.metrics.retire(self)  # after the ledger has drained: its last counts stay counted
        self.tracing.shutdown()
