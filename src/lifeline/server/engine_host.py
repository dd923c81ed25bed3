"""One engine process per machine: the embedded models loaded once and served to every worker.

`EngineHost` is what the workers' supervisor (`lifeline serve --workers N`) holds: `start()` runs
server/engine_process.py as a child process that loads every `llamacpp` target's model and listens on a Unix
socket in a private directory; `attach(config)` gives the config a worker runs with — each of those targets
with `engine_socket` set, so that the worker's provider (providers/engine_client.py) forwards its calls to the
one engine, and all workers share its bounded queue. A watchdog thread restarts the engine process when it
dies (with backoff, logged); while it is down, a worker's calls fail over like calls to any unreachable
upstream. `stop()` ends the engine's lease (its stdin): it finishes the calls running, then exits.

A reload changes what the engine serves without a new process: `serve(targets)` has the running engine load
each target added or changed (under a new engine name, `engine_target`, so that workers not yet reloaded keep
the model they know), and `unload(names)` drops the models no worker uses any more once their calls end. A
restart loads everything loaded then. `families()` is the engine's metrics, for /metrics once per machine.

Synchronous on purpose: a supervisor is a plain process manager, not an event loop.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from lifeline.config.schema import Config, LlamaCppTarget, check_engine_socket
from lifeline.errors import EngineProcessError
from lifeline.metrics import Family, Labels, Sample
from lifeline.providers.engine_wire import BEAT, REQUEST, RESULT, frame

log = logging.getLogger("lifeline.engine")

#: waits before each restart of an engine process that died, the last one repeated
BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
#: an engine process that ran this long before it died starts the backoff over
STABLE_AFTER = 60.0


class EngineHost:
    """The engine process of one machine, kept running. `config`: the validated config; its `llamacpp`
    targets are loaded. `directory`: where the socket goes (default: a new private temporary directory).
    `start_timeout`: how long a start (loading every model) may take. `grace`: how long `stop()` lets running
    calls finish. `backoff`: the waits before restarts."""

    def __init__(
        self,
        config: Config,
        *,
        directory: Path | None = None,
        start_timeout: float = 300.0,
        grace: float = 10.0,
        backoff: tuple[float, ...] = BACKOFF,
    ) -> None:
        targets = {
            name: target
            for name, target in config.targets.items()
            if isinstance(target, LlamaCppTarget) and target.engine_socket is None
        }
        if not targets:  # EngineHost.needed(config) says so beforehand
            raise EngineProcessError("the config has no llamacpp target for an engine process to serve")
        self._own_directory = directory is None
        self.directory = Path(tempfile.mkdtemp(prefix="lifeline-engine-")) if directory is None else directory
        self.socket_path = check_engine_socket(str(self.directory / "engine.sock"))
        #: the models the engine process has loaded, by the name it serves each under (its engine name)
        self.loaded: dict[str, LlamaCppTarget] = dict(targets)
        #: the config's target each engine name belongs to
        self.names: dict[str, str] = {name: name for name in targets}
        #: what the config serves now: target -> its engine name
        self.current: dict[str, str] = {name: name for name in targets}
        self._settings = {"grace": grace, "log_level": config.server.log_level, "log_format": config.server.log_format}
        self._versions = itertools.count(1)
        #: one change of the loaded models at a time, and none during a restart
        self._lock = threading.Lock()
        self.start_timeout = start_timeout
        self.grace = grace
        self.backoff = backoff or BACKOFF
        #: the name each engine name's model is served under (answers' `model`), as the engine process reported it
        self.served: dict[str, str] = {}
        #: how many times the watchdog restarted the engine process
        self.restarts = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._watchdog: threading.Thread | None = None

    # --- the interface the supervisor uses ----------------------------------------------------------

    @staticmethod
    def needed(config: Config) -> bool:
        """Whether `config` has an embedded model for an engine process to load (else workers need none)."""
        return any(isinstance(t, LlamaCppTarget) and t.engine_socket is None for t in config.targets.values())

    def start(self) -> None:
        """Start the engine process and wait until every model is loaded and the socket listens; raises
        EngineProcessError saying why it could not. Then the watchdog keeps it running until `stop()`."""
        if self._watchdog is not None:
            return
        self._process = self._spawn()
        self._watchdog = threading.Thread(target=self._watch, name="lifeline-engine-watchdog", daemon=True)
        self._watchdog.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the engine process: no restart, the calls running finish (up to `grace`), then it exits; one
        that does not within `timeout` (default: grace + 10 s) is killed. Safe to call more than once."""
        self._stopping.set()
        process = self._process
        if process is not None and process.poll() is None:
            if process.stdin is not None:
                process.stdin.close()  # the end of the lease
            # and SIGTERM (the same graceful stop): a worker forked from this process may hold the lease too
            process.terminate()
            try:
                process.wait(self.grace + 10.0 if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                log.warning("engine process %d did not stop in time: killed", process.pid)
                process.kill()
                process.wait()
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.join()
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def targets(self) -> dict[str, LlamaCppTarget]:
        """The targets served now, by their config names."""
        return {name: self.loaded[key] for name, key in self.current.items()}

    def attach(self, config: Config) -> Config:
        """The config a worker runs with: each target this host serves forwards to it (`engine_socket`), under
        the engine's name for it (`engine_target`) and the name the engine reported for its model. Call after
        `start()`."""
        if not self.served:
            raise EngineProcessError("attach() needs a started engine host")
        targets = dict(config.targets)
        for name, fields in self.attachment(list(self.current)).items():
            target = targets.get(name)
            if isinstance(target, LlamaCppTarget):
                targets[name] = target.model_copy(
                    update={**fields, "served_name": target.served_name or fields["served_name"]}
                )
        return config.model_copy(update={"targets": targets})

    def attachment(self, names: list[str]) -> dict[str, dict[str, str]]:
        """What a worker sets on each of these served targets: `engine_socket`, `engine_target`, `served_name`."""
        return {
            name: {"engine_socket": self.socket_path, "engine_target": key, "served_name": self.served[key]}
            for name in names
            if (key := self.current.get(name)) is not None
        }

    def serve(self, targets: dict[str, LlamaCppTarget]) -> None:
        """Serve these targets from now on (a reload's `llamacpp` targets, as the file has them): each one whose
        settings a loaded model has keeps it; one added or changed is loaded into the running engine process
        under a new engine name (the workers not yet reloaded keep using the model they know). Models no longer
        served stay loaded until `unload()`. Raises EngineProcessError when a model cannot be loaded (nothing
        changes then)."""
        with self._lock:
            current: dict[str, str] = {}
            for name, target in targets.items():
                wanted = _settings(target)
                key = next(
                    (k for k, t in self.loaded.items() if self.names[k] == name and _settings(t) == wanted), None
                )
                if key is None:
                    key = name if name not in self.names else f"{name}~{next(self._versions)}"
                    answer = self._request({"op": "load", "target": key, "settings": wanted}, self.start_timeout)
                    if "model" not in answer:
                        raise EngineProcessError(
                            f"target {name}: the engine process could not load it: {answer.get('error')}"
                        )
                    self.loaded[key], self.names[key], self.served[key] = target, name, str(answer["model"])
                    log.info("engine process: loaded %s as %s", name, key)
                current[name] = key
            self.current = current

    def unload(self, keys: set[str]) -> None:
        """Stop serving these engine names (no worker uses them any more): each model is closed once the calls
        running on it end."""
        with self._lock:
            for key in keys & self.loaded.keys():
                if key in self.current.values():
                    continue
                del self.loaded[key], self.served[key]  # never reused: a later load gets a new engine name
                with contextlib.suppress(OSError, EngineProcessError):
                    self._request({"op": "unload", "target": key}, 10.0)
                log.info("engine process: unloaded %s (target %s)", key, self.names[key])

    @property
    def pid(self) -> int | None:
        """The engine process's id while it runs (None before start, or while it is being restarted)."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def stats(self, timeout: float = 10.0) -> dict[str, Any]:
        """What the engine process counts, per engine name: `admitted` (generating + waiting), `queue_depth`,
        `calls`, `answered`, `client_left` (calls whose worker left), and failures by outcome (`overloaded` …)."""
        return self._request({"op": "stats"}, timeout)

    def families(self, timeout: float = 2.0) -> list[Family]:
        """The engine process's metrics, for /metrics on any worker (once for the machine): its queue per
        target served now, its calls, refusals and calls whose client left, the models loaded, its restarts
        and whether it answered."""
        try:
            stats = self.stats(timeout)
        except (OSError, EngineProcessError):
            stats = {"targets": {}}
        rows: dict[str, list[Sample]] = {name: [] for name, *_ in _FAMILIES}
        served = {key: name for name, key in self.current.items()}
        for key, counts in stats["targets"].items():
            name = served.get(key)
            if name is None:  # a model being unloaded
                continue
            labels: Labels = (("target", name),)
            for metric, field in (
                ("lifeline_engine_queue_depth", "queue_depth"),
                ("lifeline_engine_admitted", "admitted"),
                ("lifeline_engine_calls_total", "calls"),
                ("lifeline_engine_client_left_total", "client_left"),
            ):
                rows[metric].append((metric, labels, float(counts.get(field, 0))))
            for outcome, value in sorted(counts.items()):
                if outcome not in _NOT_FAILURES:
                    rows["lifeline_engine_failures_total"].append(
                        ("lifeline_engine_failures_total", (*labels, ("outcome", outcome)), float(value))
                    )
        up = "pid" in stats
        rows["lifeline_engine_up"].append(("lifeline_engine_up", (), 1.0 if up else 0.0))
        if up:
            rows["lifeline_engine_models_loaded"].append(
                ("lifeline_engine_models_loaded", (), float(len(stats["targets"])))
            )
        rows["lifeline_engine_restarts_total"].append(("lifeline_engine_restarts_total", (), float(self.restarts)))
        return [(name, kind, help, rows[name]) for name, kind, help in _FAMILIES]

    def _request(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        """One call on the engine wire with one answer (stats, a load, an unload), beats skipped."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(self.socket_path)
            sock.sendall(frame(REQUEST, orjson.dumps(message)))
            while True:
                length, kind = struct.unpack(">Ic", _recv(sock, 5))
                payload = _recv(sock, length)
                if kind != BEAT:
                    break
        if kind != RESULT:
            raise EngineProcessError(f"the engine process did not answer the {message['op']} call")
        result: dict[str, Any] = orjson.loads(payload)
        return result

    def __enter__(self) -> EngineHost:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    # --- the process ------------------------------------------------------------------------------

    def _spawn(self) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-m", "lifeline.server.engine_process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # its own session: a Ctrl-C or a signal to the supervisor's group does not stop the engine
            # under workers still draining; the supervisor stops it last, through stop()
            start_new_session=True,
        )
        assert process.stdin is not None and process.stdout is not None
        orders = {
            "socket": self.socket_path,
            "targets": {key: _settings(t) for key, t in self.loaded.items()},
            **self._settings,
        }
        process.stdin.write(orjson.dumps(orders) + b"\n")
        process.stdin.flush()
        line = _read_line(process.stdout, self.start_timeout)
        process.stdout.close()
        answer: dict[str, Any] = {}
        if line:
            try:
                answer = orjson.loads(line)
            except orjson.JSONDecodeError:
                answer = {}
        if "ready" not in answer:
            if process.poll() is None:
                process.kill()
            process.wait()
            why = answer.get("error") or ("no answer in time" if not line else "an unreadable answer")
            raise EngineProcessError(f"the engine process could not start: {why}")
        self.served = {key: str(row["model"]) for key, row in answer["ready"].items()}
        log.info("engine process %d ready: %s on %s", process.pid, ", ".join(self.served), self.socket_path)
        return process

    def _watch(self) -> None:
        """Restart the engine process each time it dies, until stop()."""
        failures = 0
        while True:
            process = self._process
            assert process is not None
            began = time.monotonic()
            code = process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - began >= STABLE_AFTER:
                failures = 0
            while True:
                delay = self.backoff[min(failures, len(self.backoff) - 1)]
                log.warning("engine process %d exited (%s); restarting it in %.1f s", process.pid, code, delay)
                if self._stopping.wait(delay):
                    return
                try:
                    with self._lock:  # the models loaded since the start are loaded again too
                        spawned = self._spawn()
                except (EngineProcessError, OSError) as exc:
                    failures += 1
                    log.error("engine process restart failed: %s", exc)
                    continue
                if self._stopping.is_set():  # stop() came during the restart: it saw no live process
                    if spawned.stdin is not None:
                        spawned.stdin.close()
                    spawned.wait()
                    return
                self._process = spawned
                self.restarts += 1
                failures += 1
                break


_FAMILIES = (
    ("lifeline_engine_queue_depth", "gauge", "Requests waiting for an embedded engine (llamacpp target)."),
    ("lifeline_engine_admitted", "gauge", "Calls in the engine process, generating or waiting (llamacpp target)."),
    ("lifeline_engine_calls_total", "counter", "Calls the engine process took (llamacpp target)."),
    ("lifeline_engine_client_left_total", "counter", "Engine calls stopped because the client left."),
    ("lifeline_engine_failures_total", "counter", "Engine calls answered with an error, by outcome."),
    ("lifeline_engine_models_loaded", "gauge", "Models loaded in the engine process (one being unloaded too)."),
    ("lifeline_engine_restarts_total", "counter", "Times the engine process was restarted after it died."),
    ("lifeline_engine_up", "gauge", "1 when the engine process answered this scrape, else 0."),
)
#: the counts of the engine's stats that are not failures
_NOT_FAILURES = frozenset({"admitted", "queue_depth", "calls", "answered", "client_left"})


def engine_keys(config: Config) -> set[str]:
    """The engine process's names for the models a worker's config uses."""
    return {
        t.engine_target or name
        for name, t in config.targets.items()
        if isinstance(t, LlamaCppTarget) and t.engine_socket is not None
    }


def _settings(target: LlamaCppTarget) -> dict[str, Any]:
    """A target's settings as the engine process loads them (and as two targets are compared)."""
    return target.model_dump(mode="json", exclude={"engine_socket", "engine_target"})


def _read_line(stream: Any, timeout: float) -> bytes:
    """One line from a child's stdout, or b"" when it closes it or says nothing within `timeout`."""
    deadline = time.monotonic() + timeout
    buffered = b""
    fd = stream.fileno()
    while not buffered.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return b""
        piece = os.read(fd, 65536)
        if not piece:
            return b""
        buffered += piece
    return buffered


def _recv(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        piece = sock.recv(size - len(data))
        if not piece:
            raise EngineProcessError("the engine process closed the connection")
        data += piece
    return data
