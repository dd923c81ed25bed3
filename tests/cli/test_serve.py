"""`lifeline serve` as a real process: the socket is taken before anything slow starts (a port in use is one
line and exit 2, before any model loads), the banner names the address really bound, and a bind beyond
loopback without a master key refuses the admin API and says so in one line."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from lifeline.cli.main import admin_exposure, banner
from lifeline.config.schema import ServerSettings

#: nothing listens there; no test here sends a request to the target
TARGET = {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
BANNER = re.compile(r"Lifeline is starting on http://(\S+):(\d+)/v1")


def write_config(directory: Path, target: dict[str, Any] = TARGET) -> Path:
    path = directory / "lifeline.yaml"
    data = {"server": {"log_level": "info"}, "targets": {"t": target}, "aliases": {"chat": {"targets": ["t"]}}}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def serve(config: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "lifeline.cli.main", "serve", "--config", str(config), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@contextmanager
def running(config: Path, *args: str) -> Iterator[tuple[str, int, list[str]]]:
    """Start `serve`, read its output up to the banner: the host and port it names, and its lines — all of
    them once the block has ended (the process is stopped then)."""
    process = serve(config, *args)
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            found = BANNER.search(line)
            if found:
                yield found.group(1), int(found.group(2)), lines
                return
        pytest.fail(f"serve exited without a banner:\n{''.join(lines)}")
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        if process.stdout is not None:
            # through the same reader: communicate() would read the pipe past what the loop above buffered
            lines += process.stdout.read().splitlines()
            process.stdout.close()


def wait_ready(port: int) -> None:
    """Poll /readyz until the gateway answers (the socket is bound before the lifespan starts)."""
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail("the gateway never became ready")


# --- a port in use ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        TARGET,
        # a model that cannot be resolved: reported only if the gateway got as far as building its targets
        {"kind": "llamacpp", "model": "/nonexistent/lifeline-test-model.gguf"},
    ],
    ids=["http", "model"],
)
def test_a_port_in_use_is_one_line_and_exit_2_before_anything_starts(tmp_path: Path, target: dict[str, Any]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = serve(write_config(tmp_path, target), "--port", str(port))
        output, _ = process.communicate(timeout=60)
    lines = output.strip().splitlines()
    assert process.returncode == 2, output
    assert lines == [f"error: 127.0.0.1:{port} is already in use; stop what listens there, or choose another port"]


# --- the banner and a bind beyond loopback --------------------------------------------------------------------


def test_the_banner_names_the_port_really_bound(tmp_path: Path) -> None:
    with running(write_config(tmp_path), "--port", "0") as (host, port, lines):
        wait_ready(port)
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        admin = httpx.get(f"http://127.0.0.1:{port}/admin/targets", timeout=5)
    assert (host, health.status_code, admin.status_code) == ("127.0.0.1", 200, 200)
    assert port != 0
    assert not any("admin" in line for line in lines)  # nothing to say on loopback


@pytest.mark.parametrize("insecure", [False, True], ids=["refused", "insecure"])
def test_beyond_loopback_without_a_master_key(tmp_path: Path, insecure: bool) -> None:
    flags = ["--insecure-admin"] if insecure else []
    with running(write_config(tmp_path), "--host", "0.0.0.0", "--port", "0", *flags) as (host, port, lines):
        wait_ready(port)
        admin = httpx.get(f"http://127.0.0.1:{port}/admin/targets", timeout=5)
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5)
    assert host == "0.0.0.0"  # not 127.0.0.1
    said = [line for line in lines if "/admin/*" in line]
    assert len(said) == 1, lines
    assert models.status_code == 200
    if insecure:
        assert admin.status_code == 200
        assert "open to anyone" in said[0]
    else:
        assert admin.status_code == 403
        assert admin.json()["error"]["code"] == "admin_disabled"
        assert "refused" in said[0]
        assert "--insecure-admin" in said[0]


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        ("127.0.0.1", 4000, "http://127.0.0.1:4000/v1 (aliases: chat)"),
        ("0.0.0.0", 4001, "http://0.0.0.0:4001/v1, every IPv4 address of this machine (aliases: chat)"),
        ("::", 4000, "http://[::]:4000/v1, every address of this machine (aliases: chat)"),
        ("::1", 4000, "http://[::1]:4000/v1 (aliases: chat)"),
        ("gw.internal", 80, "http://gw.internal:80/v1 (aliases: chat)"),
    ],
)
def test_banner(host: str, port: int, url: str) -> None:
    assert banner(host, port, ["chat"]) == f"Lifeline is starting on {url}"


def test_admin_exposure() -> None:
    loopback = ServerSettings(host="127.0.0.1")
    wide = ServerSettings(host="0.0.0.0")
    insecure = ServerSettings(host="::", insecure_admin=True)
    assert admin_exposure(loopback, has_master_key=False) is None
    assert admin_exposure(wide, has_master_key=True) is None
    assert admin_exposure(insecure, has_master_key=True) is None
    refused = admin_exposure(wide, has_master_key=False)
    assert refused is not None and refused.startswith("/admin/* is refused")
    opened = admin_exposure(insecure, has_master_key=False)
    assert opened is not None and opened.startswith("/admin/* is open to anyone")


# --- --workers ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", ["0", "lots"])
def test_a_worker_count_that_is_not_one_is_one_line_and_exit_2(tmp_path: Path, count: str) -> None:
    process = serve(write_config(tmp_path), "--port", "0", "--workers", count)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2, output
    assert output.strip().splitlines() == [
        "error: workers: Value error, give a number of worker processes from 1 to 512, or auto (one per CPU)"
    ]


def test_workers_that_cannot_start_end_the_server_with_their_reason(tmp_path: Path) -> None:
    """As one process would: a model that cannot be resolved is said, and the supervisor exits 2."""
    config = write_config(tmp_path, {"kind": "llamacpp", "model": "/nonexistent/lifeline-test-model.gguf"})
    process = serve(config, "--port", "0", "--workers", "2")
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 2, output
    assert "2 workers" in output.splitlines()[0]
    assert any(line.startswith("error: ") and "lifeline-test-model.gguf" in line for line in output.splitlines())
    assert "could not start" in output
