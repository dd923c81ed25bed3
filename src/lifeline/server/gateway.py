"""The gateway's running state: config, targets, circuits, router, accounting and metrics, built once."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from lifeline.accounting.service import Accounting
from lifeline.config.schema import Config
from lifeline.metrics import Labels, Metrics
from lifeline.providers.base import Provider
from lifeline.providers.registry import ProviderRegistry, default_registry
from lifeline.routing.health import Health, State
from lifeline.routing.router import Router

log = logging.getLogger("lifeline.server")

_STATE_VALUE = {State.CLOSED: 0.0, State.HALF_OPEN: 1.0, State.OPEN: 2.0}


@dataclass
class Gateway:
    config: Config
    providers: dict[str, Provider]
    health: Health
    router: Router
    accounting: Accounting
    metrics: Metrics
    started: bool = field(default=False)
    _shared: object | None = None

    @classmethod
    def build(cls, config: Config, registry: ProviderRegistry | None = None) -> Gateway:
        providers = (registry or default_registry()).build(config)
        health = Health(config.circuit)
        metrics = Metrics()
        gateway = cls(
            config, providers, health, Router(config, providers, health), Accounting(config, metrics), metrics
        )
        gateway._register_gauges()
        return gateway

    def _register_gauges(self) -> None:
        def circuits() -> list[tuple[Labels, float]]:
            return [((("target", t),), _STATE_VALUE[self.health.circuit(t).state]) for t in self.config.targets]

        self.metrics.gauge(
            "lifeline_circuit_state", "Circuit state per target: 0 closed, 1 half-open, 2 open.", circuits
        )
        ledger = self.accounting.ledger
        if ledger is not None:
            self.metrics.gauge(
                "lifeline_ledger_queue_depth",
                "Ledger records waiting for the writer.",
                lambda: [((), float(ledger.queue_depth))],
            )
            self.metrics.gauge(
                "lifeline_ledger_write_errors",
                "Failed ledger commits since start.",
                lambda: [((), float(ledger.write_errors))],
            )
            self.metrics.gauge(
                "lifeline_ledger_dropped",
                "Ledger records dropped because the buffer was full.",
                lambda: [((), float(ledger.dropped))],
            )
            self.metrics.gauge(
                "lifeline_ledger_written",
                "Ledger records committed since start.",
                lambda: [((), float(ledger.written))],
            )

    async def start(self) -> None:
        await self.accounting.start()
        redis_url = self.config.accounting.redis_url
        if redis_url is not None:
            from lifeline.routing.shared import SharedCircuits

            shared = SharedCircuits(self.health, redis_url.get_secret_value(), self.config.accounting.redis_failure)
            await shared.start()
            self._shared = shared
        await asyncio.gather(*(p.start() for p in self.providers.values()))
        self.started = True
        log.info("gateway ready: %d target(s), aliases: %s", len(self.providers), ", ".join(self.config.aliases))

    async def close(self) -> None:
        self.started = False
        await asyncio.gather(*(p.close() for p in self.providers.values()), return_exceptions=True)
        if self._shared is not None:
            await self._shared.close()  # type: ignore[attr-defined]
        await self.accounting.close()
