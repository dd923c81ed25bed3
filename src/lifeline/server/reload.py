"""Reloading the config file while the gateway serves, without dropping a request.

A reload (SIGHUP, or POST /admin/reload) reads and validates the file, builds a new gateway from it and
starts it — models load, pools open, the ledger opens — all while the old gateway keeps serving. Only then
is `app.state.gateway` swapped, in one assignment: requests that start afterwards get the new gateway,
requests already running keep the one they started on (pinned by server/middleware.py) until they end,
streams included. The old gateway is closed once the last of them has finished; closing drains its ledger,
so every request that finished on it is recorded. An invalid file changes nothing.

What carries over to the new gateway: the circuit of every target whose name and settings are unchanged
(the very object, so what requests still running on the old gateway learn about the target counts on the
new one too), the operator's overrides of targets that still exist, the recent failovers, the metrics'
counters, in-process rate-limit and budget counters, and the answers of in-memory response caches. Host,
port, logging, `insecure_admin` and `workers` are fixed at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette

from lifeline.accounting.limits import InProcessLimits
from lifeline.config import load_config
from lifeline.config.schema import Config, LlamaCppTarget
from lifeline.errors import ConfigError, LifelineError, NothingToReload, ReloadFailed
from lifeline.providers.registry import ProviderRegistry
from lifeline.server.engine_host import engine_keys
from lifeline.server.gateway import Gateway
from lifeline.server.serving import freeze_startup_objects
from lifeline.server.worker_state import StateLink

log = logging.getLogger("lifeline.server")

#: after its last request, how long a replaced gateway waits before closing: a stream whose client went away
#: is finalised (and recorded) just after its request has ended
STRAGGLER_GRACE = 0.2

#: at shutdown, how long to wait for replaced gateways still finishing requests
SHUTDOWN_GRACE = 10.0


@dataclass(slots=True)
class Reloaded:
    gateway: Gateway
    #: targets whose circuit state carried over
    carried_over: list[str]


def keep_fixed_settings(config: Config, running: Config) -> Config:
    """Host, port, logging, `insecure_admin` and `workers` are set when the server starts; a reload takes the rest
    from the file (so `lifeline serve --port` keeps its port across reloads)."""
    names = ("host", "port", "log_format", "log_level", "insecure_admin", "workers")
    fixed = {name: getattr(running.server, name) for name in names}
    config = config.model_copy(update={"server": config.server.model_copy(update=fixed)})
    return keep_engine_sockets(config, running)


def keep_engine_sockets(config: Config, running: Config) -> Config:
    """A worker's `llamacpp` targets that the engine process serves (`engine_socket`, set at start by
    server/engine_host.py, never in the file) stay served by it when the file leaves their settings unchanged;
    a target changed or added loads its model in this process, as a target without an engine process does."""
    targets = dict(config.targets)
    for name, target in config.targets.items():
        served = running.targets.get(name)
        if (
            isinstance(target, LlamaCppTarget)
            and isinstance(served, LlamaCppTarget)
            and served.engine_socket is not None
            and target.engine_socket is None
            and target.served_name in (None, served.served_name)
            and target.model_dump(exclude={"engine_socket", "engine_target", "served_name"})
            == served.model_dump(exclude={"engine_socket", "engine_target", "served_name"})
        ):
            targets[name] = served
    return config.model_copy(update={"targets": targets}) if targets != config.targets else config


def _embedded(config: Config) -> bool:
    return any(isinstance(t, LlamaCppTarget) for t in config.targets.values())


async def on_engine_process(config: Config, link: StateLink, path: Path) -> Config:
    """A worker's reload under `serve --workers`: the supervisor's engine process serves the file's `llamacpp`
    targets (it loads one added or changed, once for every worker) and the worker forwards to it; no worker
    loads a model itself. ReloadFailed when the engine process cannot load one."""
    targets = {
        name: t.model_dump(mode="json", exclude={"engine_socket", "engine_target"})
        for name, t in config.targets.items()
        if isinstance(t, LlamaCppTarget) and t.engine_socket is None
    }
    try:
        answer = await link.engine(targets)
    except ConnectionError:
        raise ReloadFailed(
            f"{path}: the supervisor cannot be reached for the embedded models (the previous config keeps serving)"
        ) from None
    if "error" in answer:
        raise ReloadFailed(f"{path}: {answer['error']} (the previous config keeps serving)")
    attached = dict(config.targets)
    for name, fields in answer["targets"].items():
        target = attached.get(name)
        if isinstance(target, LlamaCppTarget):
            attached[name] = target.model_copy(
                update={**fields, "served_name": target.served_name or fields["served_name"]}
            )
    return config.model_copy(update={"targets": attached})


def carry_over(old: Gateway, new: Gateway) -> list[str]:
    """Hand what the old gateway knows to the new one, just before the swap; returns the targets whose
    circuits carried over."""
    carried = []
    for name, target in new.config.targets.items():
        circuit = old.health.circuits.get(name)
        if circuit is not None and old.config.targets.get(name) == target:
            new.health.circuits[name] = circuit
            carried.append(name)
    # An operator's drain or cut is about the target, not its settings: it stays until they heal it.
    new.health.drained.update(old.health.drained & new.config.targets.keys())
    new.health.faults.update((t, f) for t, f in old.health.faults.items() if t in new.config.targets)
    new.health.recent_failovers = old.health.recent_failovers
    # A refused prefix is about the target's settings: remembered while they are unchanged.
    new.health.prefill_refused.update(
        t
        for t in old.health.prefill_refused
        if t in new.config.targets and old.config.targets.get(t) == new.config.targets[t]
    )
    # Requests running on the old gateway settle their budget reservations there: one store for both, or
    # the new gateway would admit spending the old one has reserved. (Redis stores are shared anyway.)
    if isinstance(old.accounting.limits, InProcessLimits) and isinstance(new.accounting.limits, InProcessLimits):
        new.accounting.limits = old.accounting.limits
    new.accounting.cache.carry_from(old.accounting.cache)  # answers kept in memory stay servable
    new.accounting.carry_responses_from(old.accounting)  # stored responses not yet written stay readable
    return carried


class Reloader:
    """Owns the swap of `app.state.gateway`: one reload at a time, and the closing of replaced gateways."""

    def __init__(self, app: Starlette, config_path: Path | None, registry: ProviderRegistry | None = None) -> None:
        self.app = app
        self.config_path = config_path
        self.registry = registry
        self._lock = asyncio.Lock()
        #: replaced gateways still finishing requests, with the task that closes each
        self._retiring: dict[Gateway, asyncio.Task[None]] = {}
        self._signalled: set[asyncio.Task[None]] = set()
        #: the objects of starting were frozen (server/serving.py `freeze_startup_objects`): freeze again once
        #: a replaced gateway has closed, not at the swap, when it would be frozen with the new one for good
        self.freeze = False

    async def reload(self) -> Reloaded:
        path = self.config_path
        if path is None:
            raise NothingToReload(
                "This gateway runs on the embedded default config, not a config file, so there is nothing to "
                "reload. Start it with `lifeline serve --config FILE` to reload that file."
            )
        async with self._lock:
            old: Gateway = self.app.state.gateway
            try:
                new, carried = await self._start_new(path, old)
            except ReloadFailed as exc:
                log.error("config reload failed: %s", exc.message)
                raise
            self.app.state.gateway = new
            self._retire(old)
            if new.link is not None and (_embedded(new.config) or _embedded(old.config)):
                # the engine names this worker's requests now go to; those only the old gateway used can be
                # unloaded once no worker's gateway uses them (its requests still running keep them until done)
                new.link.send({"op": "engine_keys", "keys": sorted(engine_keys(new.config) | engine_keys(old.config))})
                self._tell_keys_when_retired(old, new)
        log.info(
            "config reloaded from %s: aliases %s; circuits carried over: %s; %d request(s) finishing on the "
            "previous config",
            path,
            ", ".join(new.config.aliases),
            ", ".join(carried) or "none",
            old.in_flight,
        )
        return Reloaded(new, carried)

    async def _start_new(self, path: Path, old: Gateway) -> tuple[Gateway, list[str]]:
        try:
            config = await asyncio.to_thread(load_config, path)
        except ConfigError as exc:
            raise ReloadFailed(f"{exc} (the previous config keeps serving)") from None
        if old.link is not None and (_embedded(config) or _embedded(old.config)):
            config = await on_engine_process(config, old.link, path)
        config = keep_fixed_settings(config, old.config)
        try:
            new = Gateway.build(
                config,
                self.registry,
                metrics=old.metrics,
                span_exporter=getattr(self.app.state, "span_exporter", None),
                link=old.link,
            )
        except Exception as exc:  # a model that cannot be resolved, a bad target
            old.register_gauges()
            raise ReloadFailed(f"{path}: {exc} (the previous config keeps serving)") from None
        try:
            await new.start()
        except BaseException as exc:  # the database, Redis or a model refused to start; or a shutdown
            with contextlib.suppress(Exception):
                await asyncio.shield(new.close())
            old.register_gauges()
            if not isinstance(exc, Exception):
                raise
            raise ReloadFailed(
                f"{path}: the new config could not be started: {_brief(exc)} (the previous config keeps serving)"
            ) from None
        # After the awaits, so that nothing the old gateway learns meanwhile (an operator's drain …) is lost
        # between this and the swap.
        return new, carry_over(old, new)

    def _tell_keys_when_retired(self, old: Gateway, new: Gateway) -> None:
        retiring = self._retiring.get(old)
        link = new.link
        if retiring is None or link is None:
            return

        def tell(_: object) -> None:
            serving = [self.app.state.gateway, *(g for g in self._retiring if g is not old)]
            link.send({"op": "engine_keys", "keys": sorted(set().union(*(engine_keys(g.config) for g in serving)))})

        retiring.add_done_callback(tell)

    def _retire(self, old: Gateway) -> None:
        task = asyncio.create_task(self._close_when_idle(old), name="lifeline-retire-gateway")
        self._retiring[old] = task
        task.add_done_callback(lambda _: self._retiring.pop(old, None))
        if self.freeze:
            # once the task and its callbacks have let go of `old` (the next turn of the loop)
            task.add_done_callback(lambda _: asyncio.get_running_loop().call_soon(refreeze))

    async def _close_when_idle(self, old: Gateway) -> None:
        since, running = time.monotonic(), old.in_flight
        await old.wait_idle()
        await asyncio.sleep(STRAGGLER_GRACE)
        await old.wait_idle()
        await old.close()
        log.info(
            "previous config closed after the %d request(s) running on it at the reload finished (%.1f s)",
            running,
            time.monotonic() - since,
        )

    async def shutdown(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Close the gateway serving now, and replaced ones once their requests end (or `grace` runs out)."""
        await self._lock.acquire()  # a reload under way finishes first; none starts after
        retiring = dict(self._retiring)
        if retiring:
            await asyncio.wait(retiring.values(), timeout=grace)
            for task in retiring.values():
                task.cancel()
            await asyncio.gather(*retiring.values(), return_exceptions=True)
            await asyncio.gather(*(old.close() for old in retiring), return_exceptions=True)
        gateway: Gateway = self.app.state.gateway
        await gateway.close()

    # --- SIGHUP ------------------------------------------------------------------------------------

    def install_sighup(self) -> Callable[[], None]:
        """Reload on SIGHUP, for a gateway serving a config file from the main thread (where signals
        arrive); returns what uninstalls the handler."""
        if self.config_path is None or threading.current_thread() is not threading.main_thread():
            return lambda: None
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        except (AttributeError, NotImplementedError, RuntimeError, ValueError):  # no SIGHUP on this platform
            return lambda: None

        def uninstall() -> None:
            loop.remove_signal_handler(signal.SIGHUP)

        return uninstall

    def _on_sighup(self) -> None:
        log.info("SIGHUP: reloading %s", self.config_path)
        task = asyncio.ensure_future(self._reload_quietly())
        self._signalled.add(task)
        task.add_done_callback(self._signalled.discard)

    async def _reload_quietly(self) -> None:
        # reload() has logged the outcome either way; nobody is waiting for an answer
        with contextlib.suppress(LifelineError):
            await self.reload()


def refreeze() -> None:
    """The startup freeze, again after a reload: the permanent generation back to the collector, whose full
    collection frees what the replaced gateway left in reference cycles, then the survivors frozen again."""
    gc.unfreeze()
    freeze_startup_objects()


def _brief(exc: BaseException) -> str:
    """One line about a start-up failure, for a client of the admin API: no connection strings."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    if "://" in text or "password" in text.lower():
        text = ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__
