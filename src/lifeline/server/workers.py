"""`lifeline serve --workers N`: N worker processes serving one port, under a supervisor.

The supervisor binds the listening socket once (the CLI does, as for one process) and every worker inherits
it: the kernel hands each new connection to one of the workers waiting on it. One bound socket, rather than
a socket per worker with SO_REUSEPORT, works on every platform, keeps the port's address and errors in one
place (a port in use is one line before anything starts), and lets a restarted worker take over at once
without rebinding; a busy worker simply accepts less.

Each worker is `lifeline serve` as one process would run it (create_app, uvicorn with the protocol class of
server/serving.py), started with the `spawn` method, so it imports and builds everything itself, and
linked to the supervisor's `StateService` (server/worker_state.py) through which circuits, rate limits and
budgets are shared. Each response carries `x-lifeline-worker: <n>`.

The supervisor restarts a worker that exits unexpectedly, after a backoff that grows while it keeps failing;
a worker that cannot start at all the first time ends the whole server (exit 2 or 3, as one process would).
On SIGTERM or SIGINT it stops restarting, closes its own copy of the socket and sends SIGTERM to every
worker: each one stops accepting, finishes its requests within the usual grace, drains its ledger and
exits; the supervisor then exits 0. SIGHUP is passed on to every worker that has started, and each reloads
the config file (server/reload.py), as POST /admin/reload on any worker makes the others do; a worker that
starts later (a restart) reads the file as it is then.

The supervisor holds the engine process (server/engine_host.py) for the `llamacpp` targets: a worker that
reloads asks it for the file's embedded targets, which the engine process loads if it does not serve them yet
(so no worker ever loads a model), and each worker says which engine models its gateways still use, so that
one no live worker uses is unloaded. A scrape of any worker includes the engine's metrics, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Literal

import uvicorn
from pydantic import ValidationError

from lifeline.config.schema import Config, LlamaCppTarget
from lifeline.errors import EngineProcessError
from lifeline.metrics import Family
from lifeline.server.engine_host import EngineHost, engine_keys
from lifeline.server.worker_state import StateService

log = logging.getLogger("lifeline.server")

#: the first wait before restarting a worker that died, doubled while it keeps dying soon after starting
RESTART_BACKOFF = 0.5
#: the longest wait between restarts
RESTART_BACKOFF_MAX = 30.0
#: a worker that ran this long before dying is restarted after the first wait again
STABLE_AFTER = 30.0
#: how long the supervisor waits for the workers to drain on SIGTERM before it kills what is left: uvicorn's
#: graceful shutdown (10 s), then the replaced gateways' and the ledger's drain (server/reload.py), with room
#: to spare
DRAIN_TIMEOUT = 60.0
#: how often the supervisor looks at its workers
WATCH_INTERVAL = 0.2


def worker_count(setting: int | Literal["auto"]) -> int:
    """`server.workers` as a number: "auto" is the CPUs this process may run on (a container's CPU set)."""
    if setting != "auto":
        return setting
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no sched_getaffinity on this platform
        return os.cpu_count() or 1


@dataclass
class _Slot:
    number: int
    process: BaseProcess | None = None
    started_at: float = 0.0
    #: the current process has said it serves
    ready: bool = False
    #: processes started for this slot so far
    generation: int = 0
    backoff: float = RESTART_BACKOFF
    #: when a restart is due (monotonic), while the slot waits for one
    restart_at: float | None = None
    #: the engine process's names for the models this worker's gateways use (serve --workers with llamacpp)
    engine_keys: frozenset[str] = frozenset()


class Supervisor:
    def __init__(self, config: Config, config_path: Path | None, sock: socket.socket, count: int) -> None:
        self.config = config
        self.config_path = config_path
        self.sock = sock
        self.slots = [_Slot(n) for n in range(1, count + 1)]
        self._context = multiprocessing.get_context("spawn")
        self._stopping: asyncio.Event | None = None
        self._state_path = ""
        #: a worker could not start the first time: the exit code the server ends with
        self._failed: int | None = None
        self._any_ready = False
        #: the engine process, once there are llamacpp targets (at the start, or from a reload)
        self.host: EngineHost | None = None
        self._engine_lock: asyncio.Lock | None = None

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; the process's exit code. On uvloop when it is installed, as the
        workers are (uvicorn's default): the state service's wake-ups and writes are the supervisor's cost
        per request (bench/sections/13-workers-state.md)."""
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(self._main())

    async def _main(self) -> int:
        self._stopping = asyncio.Event()
        self._engine_lock = asyncio.Lock()
        directory = tempfile.mkdtemp(prefix="lifeline-workers-")
        self._state_path = os.path.join(directory, "state.sock")
        service = StateService(
            self._state_path,
            on_ready=self._on_ready,
            on_reload=self._reload_others,
            on_engine=self._engine,
            on_engine_keys=self._engine_keys,
            engine_metrics=self._engine_metrics,
        )
        await service.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop, sig)
        loop.add_signal_handler(signal.SIGHUP, self._forward_reload)
        try:
            # The embedded engine's process, when there are llamacpp targets, starts after the state service and
            # before the first worker, so that every worker finds it running and loads no model of its own.
            if EngineHost.needed(self.config):
                self.host = EngineHost(self.config)
                await asyncio.to_thread(self.host.start)
                self.config = self.host.attach(self.config)
            for slot in self.slots:
                self._spawn(slot)
            while not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), WATCH_INTERVAL)
                self._watch()
            await self._drain()
        finally:
            async with self._engine_lock:  # a model loading for a reload first
                if self.host is not None:  # after the last worker has exited (its requests done)
                    await asyncio.to_thread(self.host.stop)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await service.close()
            shutil.rmtree(directory, ignore_errors=True)
        return self._failed or 0

    # --- the engine process across reloads -------------------------------------------------------

    async def _engine(self, worker: int, raw: dict[str, Any]) -> dict[str, Any]:
        """A worker reloading asks for its `llamacpp` targets (as the file has them): the engine process serves
        them — a target added or changed is loaded there once, whichever worker asks first — and the worker
        forwards to it. The answer: each target's `engine_socket`, `engine_target` and `served_name`."""
        assert self._engine_lock is not None
        async with self._engine_lock:
            if self._stopping is not None and self._stopping.is_set():
                return {"error": "the server is stopping"}
            try:
                targets = {name: LlamaCppTarget.model_validate(settings) for name, settings in raw.items()}
                if self.host is None:
                    if not targets:
                        return {"targets": {}}
                    host = EngineHost(self.config.model_copy(update={"targets": targets}))
                    await asyncio.to_thread(host.start)
                    self.host = host
                else:
                    await asyncio.to_thread(self.host.serve, targets)
            except (EngineProcessError, ValidationError, OSError) as exc:
                return {"error": str(exc)}
            attached = self.host.attachment(list(targets))
            slot = self.slots[worker - 1]
            # until its swap, the worker's previous gateway still uses what it used
            slot.engine_keys |= {fields["engine_target"] for fields in attached.values()}
            self.config = await asyncio.to_thread(self._applied, self.config, self.host)
            await self._unload_unused()
            return {"targets": attached}

    async def _engine_keys(self, worker: int, keys: list[str]) -> None:
        """A worker says which engine names its gateways use now (a reload swapped, a replaced gateway closed)."""
        assert self._engine_lock is not None
        self.slots[worker - 1].engine_keys = frozenset(keys)
        async with self._engine_lock:
            await self._unload_unused()

    async def _unload_unused(self) -> None:
        """Unload the models that neither the current config nor any live worker's gateway uses."""
        host = self.host
        if host is None:
            return
        used = set(host.current.values())
        for slot in self.slots:
            if slot.process is not None:
                used |= slot.engine_keys
        unused = set(host.loaded) - used
        if unused:
            await asyncio.to_thread(host.unload, unused)

    def _applied(self, config: Config, host: EngineHost) -> Config:
        """The config a worker started from now gets (a replacement): the file as the workers have reloaded it,
        with the engine process's targets attached."""
        from lifeline.config import load_config
        from lifeline.errors import ConfigError
        from lifeline.server.reload import keep_fixed_settings

        if self.config_path is None:
            return config
        try:
            return host.attach(keep_fixed_settings(load_config(self.config_path), config))
        except ConfigError:
            return config

    async def _engine_metrics(self) -> list[Family]:
        """The engine process's metrics for a scrape of any worker (none without an engine process)."""
        host = self.host
        if host is None:
            return []
        return await asyncio.to_thread(host.families)

    # --- starting and watching -------------------------------------------------------------------

    def _spawn(self, slot: _Slot) -> None:
        slot.generation += 1
        slot.ready = False
        slot.restart_at = None
        process = self._context.Process(
            target=run_worker,
            args=(self.config, self.config_path, self.sock, slot.number, self._state_path, slot.generation > 1),
            name=f"lifeline-worker-{slot.number}",
            daemon=True,  # should the supervisor itself fail, its workers are ended with it
        )
        process.start()
        slot.process, slot.started_at = process, time.monotonic()
        slot.engine_keys = frozenset(engine_keys(self.config))
        log.info("worker %d started (pid %s)", slot.number, process.pid)

    def _on_ready(self, number: int) -> None:
        self.slots[number - 1].ready = True
        self._any_ready = True
        log.info("worker %d is serving", number)

    def _watch(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            process = slot.process
            if process is not None and process.exitcode is not None:
                self._exited(slot, process, now)
            if slot.process is None and slot.restart_at is not None and now >= slot.restart_at:
                self._spawn(slot)

    def _exited(self, slot: _Slot, process: BaseProcess, now: float) -> None:
        code, pid = process.exitcode, process.pid
        process.close()
        slot.process = None
        if not self._any_ready and not slot.ready:
            # Never served at all (a model that cannot load, a target that cannot be built): as one process
            # would, the server ends; the worker has said why.
            log.error("worker %d could not start (exit code %s); stopping", slot.number, code)
            self._failed = code if code in (2, 3) else 3
            self._stop(None)
            return
        lived = now - slot.started_at
        if lived >= STABLE_AFTER:
            slot.backoff = RESTART_BACKOFF
        slot.restart_at = now + slot.backoff
        log.warning(
            "worker %d (pid %s) exited unexpectedly (%s) after %.1f s; restarting it in %.1f s",
            slot.number,
            pid,
            _describe_exit(code),
            lived,
            slot.backoff,
        )
        slot.backoff = min(slot.backoff * 2, RESTART_BACKOFF_MAX)

    # --- signals ---------------------------------------------------------------------------------

    def _stop(self, sig: signal.Signals | None) -> None:
        if self._stopping is not None and not self._stopping.is_set():
            if sig is not None:
                log.info("%s: draining %d worker(s)", sig.name, sum(s.process is not None for s in self.slots))
            self._stopping.set()

    def _forward_reload(self) -> None:
        log.info("SIGHUP: passing it on to the workers")
        self._reload_others(None)

    def _reload_others(self, reloaded: int | None) -> None:
        """SIGHUP to every worker but `reloaded` (which has reloaded through POST /admin/reload already)."""
        # A worker still starting has not yet put its handler in place (and will read the file anyway).
        started = [
            s
            for s in self.slots
            if s.process is not None and s.ready and s.process.pid is not None and s.number != reloaded
        ]
        if reloaded is not None:
            log.info("worker %d reloaded its config: reloading the other %d", reloaded, len(started))
        for slot in started:
            assert slot.process is not None and slot.process.pid is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(slot.process.pid, signal.SIGHUP)

    async def _drain(self) -> None:
        # New connections go nowhere once the workers close theirs: the supervisor's copy goes first.
        self.sock.close()
        running = [s.process for s in self.slots if s.process is not None]
        for process in running:
            if process.pid is not None and process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + DRAIN_TIMEOUT
        for process in running:
            await asyncio.to_thread(process.join, max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                log.error("worker (pid %s) did not drain within %.0f s; killing it", process.pid, DRAIN_TIMEOUT)
                process.kill()
                await asyncio.to_thread(process.join)
        for slot in self.slots:
            slot.process = None
        log.info("all workers have stopped")


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


# --- a worker ------------------------------------------------------------------------------------


def run_worker(
    config: Config, config_path: Path | None, sock: socket.socket, number: int, state_path: str, restarted: bool
) -> None:
    """A worker process's life: the gateway as `lifeline serve` runs it, on the inherited socket."""
    from lifeline.logs import configure_logging
    from lifeline.server.app import create_app
    from lifeline.server.serving import uvicorn_options
    from lifeline.server.worker_state import WORKER_HEADER, StateLink

    # Until the gateway's own handler is in place, a SIGHUP passed on must not end the process.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    configure_logging(config.server.log_format, config.server.log_level)
    for handler in logging.getLogger("lifeline").handlers:
        handler.addFilter(_WorkerFilter(number))
    if restarted and config_path is not None:
        config = _current_config(config, config_path)
    link = StateLink(state_path, number)
    try:
        application = create_app(config, config_path=config_path, link=link, freeze=True)
    except Exception as exc:  # a model that cannot be resolved, a bad target: one line, no trace
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    server = _WorkerServer(
        uvicorn.Config(
            application,
            timeout_graceful_shutdown=10,
            headers=[(WORKER_HEADER, str(number))],
            **uvicorn_options(config),
        )
    )
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])
    if not server.started:
        sys.exit(3)


def _current_config(started_with: Config, path: Path) -> Config:
    """A restarted worker serves the file as it is now (the others may have reloaded it since), with the
    settings fixed at start; the config it was started with if the file no longer reads."""
    from lifeline.config import load_config
    from lifeline.errors import ConfigError
    from lifeline.server.reload import keep_fixed_settings

    try:
        config = keep_fixed_settings(load_config(path), started_with)
    except ConfigError as exc:
        log.warning("%s no longer reads (%s); this worker serves the config the server started with", path, exc)
        return started_with
    if any(isinstance(t, LlamaCppTarget) and t.engine_socket is None for t in config.targets.values()):
        # the file changed since the last reload: a model of its own is not this worker's to load
        log.warning("%s has embedded models the engine process does not serve yet; reload to apply it", path)
        return started_with
    return config


class _WorkerFilter(logging.Filter):
    """Each log line of a worker says which one wrote it (`worker=2`)."""

    def __init__(self, number: int) -> None:
        super().__init__()
        self.number = number

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.number
        return True


class _WorkerServer(uvicorn.Server):
    """uvicorn's server, which also ends (gracefully) when its supervisor is gone, rather than serving on as
    an orphan that holds the port."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._parent = os.getppid()

    async def on_tick(self, counter: int) -> bool:
        if counter % 10 == 0 and os.getppid() != self._parent and not self.should_exit:
            log.warning("the supervisor is gone; this worker stops")
            self.should_exit = True
        return bool(await super().on_tick(counter))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when it is installed (uvicorn[standard] brings it), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
