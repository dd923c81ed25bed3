"""`lifeline models pull` with the real hub client against a hub on loopback (this machine has no network):
the file lands in the Hugging Face cache, and the embedded engine's `hf:` spec then finds it there with
the network gone. A file the hub does not have, and a hub that is not there, are each one line."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import gguf
import pytest

pytest.importorskip("huggingface_hub")

SERVED = "/Qwen/Qwen3-0.6B-GGUF/resolve/main/Qwen3-0.6B-Q8_0.gguf"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def small_gguf(tmp: Path) -> bytes:
    path = tmp / "served.gguf"
    writer = gguf.GGUFWriter(str(path), "qwen3")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


class Hub:
    """The hub's download endpoint for one file; every request is recorded."""

    def __init__(self, body: bytes) -> None:
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self) -> bool:
                hub.requests.append((self.command, self.path))
                if self.path != SERVED:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return False
                self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", '"served-gguf"')
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                return True

            def do_HEAD(self) -> None:
                self.answer()

            def do_GET(self) -> None:
                if self.answer():
                    self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    running = Hub(small_gguf(tmp_path))
    yield running
    running.stop()


def run(args: list[str], cache: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "HF_HUB_CACHE": str(cache),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        **env,
    }
    done = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=environment, timeout=120, check=False
    )
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done


def test_pull_fills_the_cache_the_engine_reads_offline(hub: Hub, tmp_path: Path) -> None:
    cache = tmp_path / "hf-cache"
    pulled = run(["-m", "lifeline.cli.main", "models", "pull", "qwen3-0.6b"], cache, HF_ENDPOINT=hub.url)
    assert pulled.returncode == 0, pulled.stderr
    path = cache / "models--Qwen--Qwen3-0.6B-GGUF" / "snapshots" / COMMIT / "Qwen3-0.6B-Q8_0.gguf"
    assert f"pulled qwen3-0.6b (apache-2.0 licence) to {path}\n" in pulled.stdout
    assert path.read_bytes()[:4] == b"GGUF"
    assert [method for method, _ in hub.requests] == ["HEAD", "GET"]

    hub.stop()  # no hub any more: the engine's own resolution finds the pulled file in the cache
    spec = "hf:Qwen/Qwen3-0.6B-GGUF/Qwen3-0.6B-Q8_0.gguf"
    code = f"from lifeline.providers.llamacpp import resolve_model; print(resolve_model({spec!r})[0])"
    resolved = run(["-c", code], cache, HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="1")
    assert resolved.returncode == 0, resolved.stderr
    assert resolved.stdout.strip() == str(path)


def test_a_file_the_hub_does_not_have_is_one_line(hub: Hub, tmp_path: Path) -> None:
    pulled = run(["-m", "lifeline.cli.main", "models", "pull", "gemma-3-1b-it"], tmp_path, HF_ENDPOINT=hub.url)
    assert pulled.returncode == 2
    assert pulled.stderr.splitlines()[-1] == (
        "error: gemma-3-1b-it: the hub repository unsloth/gemma-3-1b-it-GGUF has no file gemma-3-1b-it-Q4_K_M.gguf"
    )
    assert len(pulled.stderr.splitlines()) == 2  # the "downloading" line, then the error


def test_no_hub_and_nothing_cached_is_one_line_in_offline_mode(tmp_path: Path) -> None:
    # offline mode answers at once from the cache (the online path first retries the hub for ~20 s)
    pulled = run(["-m", "lifeline.cli.main", "models", "pull", "qwen3-1.7b"], tmp_path, HF_HUB_OFFLINE="1")
    assert pulled.returncode == 2
    assert pulled.stderr.splitlines()[1:] == [
        "error: qwen3-1.7b: cannot reach the hub for Qwen/Qwen3-1.7B-GGUF/Qwen3-1.7B-Q8_0.gguf, "
        "and it is not in the local cache"
    ]
