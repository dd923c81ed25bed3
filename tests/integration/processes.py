"""Running `lifeline serve` as a real process (a replica) for tests that need signals or several replicas."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
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

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def output(self) -> str:
        if self.process.poll() is None or self.process.stdout is None:
            return ""
        return self.process.stdout.read().decode(errors="replace")


@contextmanager
def replica(config: dict[str, Any], directory: Path, name: str = "lifeline") -> Iterator[Replica]:
    """Start `lifeline serve` with `config` (a dict, written as YAML) on a free port; wait until ready."""
    port = free_port()
    config = {**config, "server": {**config.get("server", {}), "port": port, "log_level": "warning"}}
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    process = subprocess.Popen(
        [sys.executable, "-m", "lifeline.cli.main", "serve", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    running = Replica(process, port)
    try:
        for polls in itertools.count():  # up to ~60 s: a guard against hanging, not a measure of speed
            try:
                if httpx.get(f"{running.url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited at start:\n{running.output()}")
            if polls >= 600:
                raise RuntimeError(f"{name} did not start")
            time.sleep(0.1)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
