"""The gateway's running state: config, targets, circuits and router, built once from the config."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from lifeline.config.schema import Config
from lifeline.providers.base import Provider
from lifeline.providers.registry import ProviderRegistry, default_registry
from lifeline.routing.health import Health
from lifeline.routing.router import Router

log = logging.getLogger("lifeline.server")


@dataclass
class Gateway:
    config: Config
    providers: dict[str, Provider]
    health: Health
    router: Router
    started: bool = field(default=False)

    @classmethod
    def build(cls, config: Config, registry: ProviderRegistry | None = None) -> Gateway:
        providers = (registry or default_registry()).build(config)
        health = Health(config.circuit)
        return cls(config, providers, health, Router(config, providers, health))

    async def start(self) -> None:
        await asyncio.gather(*(p.start() for p in self.providers.values()))
        self.started = True
        log.info("gateway ready: %d target(s), aliases: %s", len(self.providers), ", ".join(self.config.aliases))

    async def close(self) -> None:
        self.started = False
        await asyncio.gather(*(p.close() for p in self.providers.values()), return_exceptions=True)
