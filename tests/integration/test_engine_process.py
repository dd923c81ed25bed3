"""The engine process for real: one process that has loaded the shipped SmolLM2 model, serving gateways in other
processes and threads over its Unix socket. Two workers share its one queue; a client that leaves frees it; a
killed engine process is a clean failover and comes back. One model load for the module (two with the restart).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lifeline.errors import EngineProcessError
from lifeline.server.engine_host import EngineHost
from lifeline.testing import FaultWall
from lifeline.testing.gateway import run_gateway
from tests.conftest import FAST_RETRY, make_config, wall_target
from tests.integration.processes import replica

pytestmark = pytest.mark.embedded

HELLO = [{"role": "user", "content": "Say hello."}]
PARIS = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
LONG = [{"role": "user", "content": "Write a very long story about a dragon and a knight."}]
#: one generation at a time and nobody waiting: a second call anywhere on the machine is turned away
LOCAL = {"kind": "llamacpp", "model": "builtin:smollm2", "n_ctx": 512, "n_threads": 2, "max_queue": 0}
#: the same model loaded for embeddings: the engine process serves every embedded target of the config
VECTORS = {**LOCAL, "embedding": True}
ALIASES: dict[str, Any] = {"chat": ["local"], "embed": {"kind": "embeddings", "targets": ["vectors"]}}
#: the router's waits are short, and failures never open the local circuit in these tests
SECTIONS = {"retry": FAST_RETRY, "circuit": {"failure_threshold": 100}}
#: the first restart waits this long: requests sent just after the kill meet no engine process
RESTART_WAIT = 5.0


@pytest.fixture(scope="module")
def host() -> Iterator[EngineHost]:
    config = make_config({"local": LOCAL, "vectors": VECTORS}, ALIASES)
    with EngineHost(config, backoff=(RESTART_WAIT, 0.5)) as running:
        yield running


def poll(condition: Any, what: str, polls: int = 1500) -> None:
    """Wait until `condition()` holds; a guard against hanging, not a measure of speed."""
    for _ in range(polls):
        if condition():
            return
        time.sleep(0.02)
    pytest.fail(f"never happened: {what}")


def counts(host: EngineHost) -> dict[str, int]:
    local: dict[str, int] = host.stats()["targets"]["local"]
    return local


def chat(url: str, messages: list[dict[str, str]], max_tokens: int) -> httpx.Response:
    body = {"model": "chat", "messages": messages, "max_tokens": max_tokens}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)


def worker_config(host: EngineHost, wall: FaultWall) -> dict[str, Any]:
    """A worker's config as a file would say it (what attach() gives): the local target on the engine process."""
    local = {**LOCAL, "engine_socket": host.socket_path, "served_name": host.served["local"]}
    return {
        "targets": {"local": local, "wall": wall_target(wall, "ok")},
        "aliases": {"chat": {"targets": ["local", "wall"], "first_token_failover_ms": 120_000}},
        **SECTIONS,
    }


def test_two_workers_share_one_queue_and_a_client_leaving_frees_the_engine(
    host: EngineHost, wall: FaultWall, tmp_path: Path
) -> None:
    config = worker_config(host, wall)
    before = counts(host)
    with replica(config, tmp_path, "a") as a, replica(config, tmp_path, "b") as b:
        body = {"model": "chat", "messages": LONG, "max_tokens": 400, "stream": True}
        with httpx.stream("POST", f"{a.url}/v1/chat/completions", json=body, timeout=120) as streaming:
            assert streaming.headers["x-lifeline-target"] == "local"
            lines = streaming.iter_lines()
            assert any('"content":"' in line for line in lines)  # the engine is generating for worker a
            assert counts(host)["admitted"] == 1

            turned_away = chat(b.url, HELLO, 4)  # worker b: the one engine is busy, its queue holds nobody
            assert turned_away.status_code == 200
            assert turned_away.headers["x-lifeline-target"] == "wall"
            assert counts(host).get("overloaded", 0) == before.get("overloaded", 0) + 1
        # a's client left mid-stream: its worker closes the call, the engine stops and frees its slot
        poll(lambda: counts(host)["admitted"] == 0, "the engine freed after the client left")
        assert counts(host).get("client_left", 0) == before.get("client_left", 0) + 1

        served = chat(b.url, HELLO, 4)
        assert served.status_code == 200
        assert served.headers["x-lifeline-target"] == "local"
        assert served.json()["model"] == host.served["local"]
    after = counts(host)
    assert after.get("overloaded", 0) == before.get("overloaded", 0) + 1  # nobody else was turned away
    assert after["calls"] == before.get("calls", 0) + 3


def test_a_killed_engine_process_fails_over_cleanly_and_is_restarted(host: EngineHost, wall: FaultWall) -> None:
    targets = {"local": LOCAL, "vectors": VECTORS, "wall": wall_target(wall, "ok")}
    config = host.attach(make_config(targets, {**ALIASES, "chat": ["local", "wall"]}, **SECTIONS))
    assert config.targets["local"].engine_socket == host.socket_path  # type: ignore[union-attr]
    killed = host.pid
    assert killed is not None
    with run_gateway(config) as gw:
        # the engine's grammar-constrained tool calls reach the worker as they do in one process
        tool = {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}
        body = {"model": "chat", "messages": PARIS, "tools": [tool], "tool_choice": "required", "max_tokens": 40}
        called = httpx.post(f"{gw.url}/v1/chat/completions", json=body, timeout=120)
        assert called.headers["x-lifeline-target"] == "local"
        calls = called.json()["choices"][0]["message"]["tool_calls"]
        assert [c["function"]["name"] for c in calls] == ["get_weather"]
        assert set(json.loads(calls[0]["function"]["arguments"])) == {"city"}

        # and so do its embeddings
        vectors = httpx.post(f"{gw.url}/v1/embeddings", json={"model": "embed", "input": ["a", "b"]}, timeout=120)
        assert vectors.headers["x-lifeline-target"] == "vectors"
        assert [len(row["embedding"]) > 0 for row in vectors.json()["data"]] == [True, True]

        in_flight: list[httpx.Response] = []
        asking = threading.Thread(target=lambda: in_flight.append(chat(gw.url, LONG, 400)))
        asking.start()
        poll(lambda: counts(host)["admitted"] == 1, "the long answer generating")
        os.kill(killed, signal.SIGKILL)
        asking.join(timeout=120)
        assert not asking.is_alive()
        # the answer in flight: the engine went away, the router moved on to the next target
        assert in_flight[0].status_code == 200
        assert in_flight[0].headers["x-lifeline-target"] == "wall"
        assert int(in_flight[0].headers["x-lifeline-attempts"]) >= 2  # local first, then the wall

        # a new request while no engine process runs: refused at once, served by the next target
        fresh = chat(gw.url, HELLO, 4)
        assert fresh.status_code == 200
        assert fresh.headers["x-lifeline-target"] == "wall"
        assert host.restarts == 0

        # the watchdog starts it again; the next requests reach it
        poll(lambda: host.restarts == 1 and host.pid not in (None, killed), "the engine process restarted")
        served = chat(gw.url, HELLO, 4)
        assert served.status_code == 200
        assert served.headers["x-lifeline-target"] == "local"
        assert counts(host) == {"admitted": 0, "queue_depth": 0, "calls": 1, "answered": 1}  # a new process


def test_an_engine_that_cannot_load_its_model_is_a_clear_error(tmp_path: Path) -> None:
    config = make_config({"local": {**LOCAL, "model": str(tmp_path / "missing.gguf")}})
    hosted_only = make_config({"hosted": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}})
    assert EngineHost.needed(config) and not EngineHost.needed(hosted_only)
    with pytest.raises(EngineProcessError, match="no llamacpp target"):
        EngineHost(hosted_only)
    host = EngineHost(config)
    with pytest.raises(EngineProcessError, match=r"could not start: ModelResolutionError: no GGUF file at"):
        host.start()
    host.stop()
    assert not host.directory.exists()


def test_the_engine_process_ends_when_its_supervisor_is_killed() -> None:
    # the engine's lease is its stdin: a supervisor killed outright leaves no engine process behind
    script = (
        "import sys, time\n"
        "from lifeline.config import parse_config\n"
        "from lifeline.server.engine_host import EngineHost\n"
        f"targets = {{'local': {LOCAL!r}}}\n"
        "config = parse_config({'targets': targets, 'aliases': {'chat': {'targets': ['local']}}}, env={})\n"
        "host = EngineHost(config)\n"
        "host.start()\n"
        "print(host.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    supervisor = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert supervisor.stdout is not None
    engine = int(supervisor.stdout.readline())
    supervisor.kill()
    supervisor.wait()

    def gone() -> bool:
        try:
            os.kill(engine, 0)
        except ProcessLookupError:
            return True
        return False

    poll(gone, "the engine process exited after its supervisor died")


def test_stopping_the_engine_process_lets_the_calls_running_finish(wall: FaultWall) -> None:
    host = EngineHost(make_config({"local": LOCAL}), grace=600)  # a bound for a busy machine, not a measure
    host.start()
    try:
        config = host.attach(make_config({"local": LOCAL, "wall": wall_target(wall, "ok")}, **SECTIONS))
        with run_gateway(config) as gw:
            answers: list[httpx.Response] = []
            asking = threading.Thread(target=lambda: answers.append(chat(gw.url, LONG, 60)))
            asking.start()
            poll(lambda: counts(host)["admitted"] == 1, "the answer generating")
            host.stop()
            asking.join(timeout=120)
    finally:
        host.stop()
    assert answers[0].headers["x-lifeline-target"] == "local"  # finished by the engine, not failed over
    assert 0 < answers[0].json()["usage"]["completion_tokens"] <= 60
    assert host.pid is None and host.restarts == 0


def test_models_loaded_by_a_reload_come_back_with_a_restart_and_one_that_cannot_load_changes_nothing(
    tmp_path: Path,
) -> None:
    from lifeline.config.schema import LlamaCppTarget

    first = {**LOCAL, "n_threads": 1}
    with EngineHost(make_config({"local": first}), backoff=(0.5,)) as engine:
        added = LlamaCppTarget.model_validate({**first, "n_ctx": 256})
        missing = LlamaCppTarget.model_validate({**first, "model": str(tmp_path / "missing.gguf")})
        with pytest.raises(EngineProcessError, match="could not load it"):
            engine.serve({"local": engine.targets["local"], "broken": missing})
        assert engine.current == {"local": "local"} and set(engine.stats()["targets"]) == {"local"}
        engine.serve({"local": engine.targets["local"], "added": added})
        assert set(engine.stats()["targets"]) == {"local", "added"}
        killed = engine.pid
        assert killed is not None
        os.kill(killed, signal.SIGKILL)
        poll(lambda: engine.restarts == 1 and engine.pid not in (None, killed), "the engine process restarted")
        # the new process loads what the old one served, the reload's target included
        assert set(engine.stats()["targets"]) == {"local", "added"}
        engine.serve({"added": added})  # "local" removed: served no more, unloaded once nothing uses it
        engine.unload({"local", "added"})  # "added" is still served: kept
        assert set(engine.stats()["targets"]) == {"added"}
        assert engine.attach(make_config({"added": added})).targets["added"].engine_target == "added"  # type: ignore[union-attr]
