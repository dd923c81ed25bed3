"""Two embedded models loading at once leave the process's output alone: nothing points fds 1 and 2 at
/dev/null, and a real `lifeline serve` or `lifeline drill` keeps writing its logs, progress and report after
the models have loaded (issue #15.14: in 7 of 8 starts they vanished)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from lifeline.config.schema import LlamaCppTarget
from lifeline.providers.llamacpp import LlamaCppProvider
from tests.integration.processes import free_port

pytestmark = pytest.mark.embedded

STARTS = 4
#: what llama.cpp and llama-cpp-python print during a load, were it let through
NATIVE_NOISE = ("llama_model_loader", "llama_context", "Model metadata", "load_tensors")


def two_models() -> dict[str, Any]:
    model = {"kind": "llamacpp", "model": "builtin:smollm2", "n_ctx": 512, "n_threads": 1}
    return {
        "targets": {"local": model, "vectors": {**model, "embedding": True}},
        "aliases": {"chat": {"targets": ["local"]}, "embed": {"kind": "embeddings", "targets": ["vectors"]}},
    }


def test_two_models_load_at_once_without_redirecting_the_standard_descriptors(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    redirected: list[int] = []
    dup2 = os.dup2

    def recording_dup2(fd: int, fd2: int, inheritable: bool = True) -> int:
        redirected.append(fd2)
        return dup2(fd, fd2, inheritable)

    providers = [
        LlamaCppProvider(name, LlamaCppTarget.model_validate(spec)) for name, spec in two_models()["targets"].items()
    ]
    streams = (sys.stdout, sys.stderr)

    async def load() -> None:
        await asyncio.gather(*(p.start() for p in providers))

    monkeypatch.setattr(os, "dup2", recording_dup2)
    with caplog.at_level(logging.DEBUG, logger="lifeline.llama"):
        asyncio.run(load())
    monkeypatch.undo()
    try:
        assert [fd for fd in redirected if fd in (1, 2)] == []
        assert (sys.stdout, sys.stderr) == streams  # the stand-ins used during the loads are gone
        # what llama.cpp would have printed reached the log instead, at DEBUG
        native = [r for r in caplog.records if r.name == "lifeline.llama"]
        assert native and all(r.levelno == logging.DEBUG for r in native)
        assert any("llama_model_loader" in r.getMessage() for r in native)
        assert all(p._llm.verbose is False for p in providers)  # nothing printed per request either
    finally:
        for p in providers:
            asyncio.run(p.close())


def run_until_ready(args: list[str], port: int, out: Path, err: Path) -> subprocess.Popen[bytes]:
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "lifeline.cli.main", *args],
            stdout=stdout,
            stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            raise AssertionError(f"serve exited at start:\n{err.read_text()}")
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=0.1)
    process.kill()
    raise AssertionError("serve did not become ready")


def test_a_served_gateway_with_two_embedded_models_keeps_its_logs(tmp_path: Path) -> None:
    for start in range(STARTS):
        port = free_port()
        config = {
            **two_models(),
            "server": {"port": port, "log_level": "info"},
            "accounting": {"data_dir": str(tmp_path / "data")},
        }
        path = tmp_path / "lifeline.yaml"
        path.write_text(yaml.safe_dump(config))
        out, err = tmp_path / f"out{start}", tmp_path / f"err{start}"
        process = run_until_ready(["serve", "--config", str(path)], port, out, err)
        try:
            url = f"http://127.0.0.1:{port}/v1"
            embed = {"model": "embed", "input": "hi"}
            assert httpx.post(f"{url}/embeddings", json=embed, timeout=60).status_code == 200
            chat = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
            assert httpx.post(f"{url}/chat/completions", json=chat, timeout=60).status_code == 200
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        logged = err.read_text()
        # lines written after both models loaded reached stderr, on every start
        assert "gateway ready" in logged, f"start {start}: {logged!r}"
        assert logged.count("request finished") == 2, f"start {start}: {logged!r}"
        assert not any(noise in logged for noise in NATIVE_NOISE), logged
        assert "Lifeline is starting" in out.read_text()


def test_a_drill_with_two_embedded_models_keeps_its_progress_and_report(tmp_path: Path) -> None:
    config = {**two_models(), "accounting": {"data_dir": str(tmp_path / "data")}}
    path = tmp_path / "lifeline.yaml"
    path.write_text(yaml.safe_dump(config))
    for start in range(2):
        drill = subprocess.run(
            [
                *(sys.executable, "-m", "lifeline.cli.main", "drill", "--config", str(path), "--cut", "vectors"),
                *("-n", "2", "-C", "1", "--max-tokens", "2", "--out", str(tmp_path / f"drill{start}")),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert drill.returncode == 0, drill.stderr
        # the report on stdout and the progress on stderr, both written after the models loaded
        assert drill.stdout.startswith("# Lifeline drill:"), drill.stdout
        assert "2/2 done" in drill.stderr, drill.stderr
        assert "reports:" in drill.stderr
        assert not any(noise in drill.stderr + drill.stdout for noise in NATIVE_NOISE)
