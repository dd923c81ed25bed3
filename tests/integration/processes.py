"""Running `lifeline serve` as a real process (a replica) for tests that need signals or several replicas."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Replica:
    process: subprocess.Popen[bytes]
    port: int
    #: where the process's stdout and stderr go
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextmanager
def serving(
    config: dict[str, Any],
    directory: Path,
    name: str = "lifeline",
    *,
    args: tuple[str, ...] = (),
    server: dict[str, Any] | None = None,
    ready: Callable[[httpx.Response], bool] | None = None,
    polls: int = 600,
    stop_timeout: float = 20,
) -> Iterator[Replica]:
    """Start `lifeline serve` (with `args`) on `config` (a dict, written as YAML to NAME.yaml, with `server`'s
    settings and a free port) and wait until `ready` says so of an answer of /readyz (default: a 200); on
    leaving, SIGTERM and wait. The output goes to NAME.log."""
    port = free_port()
    settings = {"log_level": "warning", **config.get("server", {}), **(server or {}), "port": port}
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**config, "server": settings}))
    log = directory / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "lifeline.cli.main", "serve", "--config", str(path), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    running = Replica(process, port, log)
    ready = ready or (lambda answer: answer.status_code == 200)
    try:
        for attempt in itertools.count():  # ~polls/10 s: a guard against hanging, not a measure of speed
            try:
                if ready(httpx.get(f"{running.url}/readyz", timeout=2)):
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited at start:\n{running.output()}")
            if attempt >= polls:
                raise RuntimeError(f"{name} did not start:\n{running.output()}")
            time.sleep(0.1)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def replica(config: dict[str, Any], directory: Path, name: str = "lifeline") -> Iterator[Replica]:
    """Start `lifeline serve` with `config` (a dict, written as YAML) on a free port; wait until ready."""
    with serving(config, directory, name, server={"log_level": "warning"}) as running:
        yield running
