"""`lifeline serve --workers 2`, a real supervisor and two real worker processes on one loopback port, without
Redis: a cut-off seen by one worker keeps the other off the target; one key has one RPM limit across both;
SIGTERM under load drains both and the ledger holds a record for every answer; a worker killed with SIGKILL
is replaced while the other goes on answering.

A client reaches one worker through a keep-alive connection the kernel handed to it: `x-lifeline-worker`
says which, and every answer below is checked to come from the worker it was meant for.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from lifeline.testing import FaultWall
from tests.integration.processes import Replica, serving

MASTER = "mk-workers-master-key-0000000"
MESSAGES = [{"role": "user", "content": "hi"}]


@contextmanager
def workers(config: dict[str, Any], directory: Path, count: int = 2) -> Iterator[Replica]:
    """`lifeline serve --workers COUNT` on a free port, once every worker answers."""
    seen: set[int] = set()

    def every_worker_answers(answer: httpx.Response) -> bool:
        if answer.status_code == 200:
            seen.add(int(answer.headers["x-lifeline-worker"]))
        return len(seen) == count

    # Long keep-alive: a test's connection to one worker must not be closed (and reopened to another) midway.
    with serving(
        config,
        directory,
        "workers",
        args=("--workers", str(count)),
        server={"log_level": "info", "keepalive_timeout": 300},
        ready=every_worker_answers,
        polls=900,
        stop_timeout=90,
    ) as running:
        yield running


def clients_per_worker(url: str, count: int, stack: ExitStack) -> dict[int, httpx.Client]:
    """One client per worker, each holding a keep-alive connection the kernel gave to that worker."""
    clients: dict[int, httpx.Client] = {}
    for _ in range(300):  # the kernel picks the worker; a guard against hanging
        client = httpx.Client(base_url=url, timeout=30, limits=httpx.Limits(max_connections=1))
        number = int(client.get("/healthz").json()["worker"])
        if number in clients:
            client.close()
        else:
            clients[number] = client
            stack.callback(client.close)
        if len(clients) == count:
            return clients
    raise AssertionError(f"the kernel never handed a connection to each worker: {sorted(clients)}")


def ask(client: httpx.Client, worker: int, alias: str = "chat", secret: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {secret}"} if secret else {}
    answer = client.post("/v1/chat/completions", json={"model": alias, "messages": MESSAGES}, headers=headers)
    assert answer.headers["x-lifeline-worker"] == str(worker)
    return answer


def wait_for(condition: Any, what: str) -> None:
    for _ in range(600):  # a guard against hanging, not a measure of speed
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


def test_two_workers_share_circuits_and_one_rpm_limit(wall: FaultWall, tmp_path: Path) -> None:
    config: dict[str, Any] = {
        "admin": {"master_key": MASTER},
        "auth": {"enabled": True},
        "retry": {"max_retries": 0},
        "accounting": {"data_dir": str(tmp_path), "key_refresh_interval": 0.2},
        "targets": {
            "cut": {"kind": "openai", "base_url": wall.base_url, "model": "status?code=403"},
            "steady": {"kind": "openai", "base_url": wall.base_url, "model": "ok"},
        },
        "aliases": {"chat": {"targets": ["steady"]}, "guarded": {"targets": ["cut", "steady"]}},
    }
    admin = {"authorization": f"Bearer {MASTER}"}
    with workers(config, tmp_path) as gateway, ExitStack() as stack:
        clients = clients_per_worker(gateway.url, 2, stack)
        one, two = clients[1], clients[2]

        # --- one RPM limit of 5 across both workers, not 5 on each ---
        secret = one.post("/admin/keys", json={"name": "shared", "rpm": 5}, headers=admin).json()["secret"]
        for client in (one, two):  # keys are refreshed in the background; listing models costs no request
            wait_for(
                lambda c=client: c.get("/v1/models", headers={"authorization": f"Bearer {secret}"}).status_code == 200,
                "the worker knows the new key",
            )
        statuses = [ask(client, n, secret=secret).status_code for _ in range(4) for n, client in ((1, one), (2, two))]
        assert statuses[:5] == [200] * 5
        assert statuses[5:] == [429] * 3
        assert len(wall.attempts_for("ok")) == 5  # what was refused never reached an upstream

        # --- a cut-off seen by worker 1 keeps worker 2 off the target ---
        free = one.post("/admin/keys", json={"name": "free"}, headers=admin).json()["secret"]
        wait_for(
            lambda: all(
                c.get("/v1/models", headers={"authorization": f"Bearer {free}"}).status_code == 200 for c in (one, two)
            ),
            "both workers know the new key",
        )
        first = ask(one, 1, "guarded", free)
        assert first.headers["x-lifeline-target"] == "steady"
        assert len(wall.attempts_for("status?code=403")) == 1  # the cut-off that opened worker 1's circuit

        def open_on_two() -> bool:
            rows = two.get("/admin/targets", headers=admin).json()["targets"]
            return {r["target"]: r["state"] for r in rows}["cut"] == "open"

        wait_for(open_on_two, "worker 2 hears of the open circuit")
        for n, client in ((2, two), (1, one)) * 5:
            answer = ask(client, n, "guarded", free)
            assert answer.headers["x-lifeline-target"] == "steady"
            assert answer.headers["x-lifeline-attempts"] == "1"
        # Worker 2 applied the open before its first request here, so the bound is the one call that opened it.
        assert len(wall.attempts_for("status?code=403")) == 1

        # --- /metrics on either worker shows both, each sample labelled with its worker ---
        for client in (one, two):
            text = client.get("/metrics").text
            assert text.count("# TYPE lifeline_requests_total counter") == 1

            def answered(worker: str, text: str = text) -> float:
                prefix = f'lifeline_requests_total{{worker="{worker}",alias="chat",'
                rows = [line for line in text.splitlines() if line.startswith(prefix) and 'status="200"' in line]
                return sum(float(line.rsplit(" ", 1)[1]) for line in rows)

            assert (answered("1"), answered("2")) == (3, 2)  # what the RPM limit let through above, per worker

        # --- an operator's drain, and a reload, made on worker 1 reach worker 2 ---
        assert one.post("/admin/targets/steady", json={"state": "drained"}, headers=admin).status_code == 200

        def override_on_two() -> str | None:
            rows = two.get("/admin/targets", headers=admin).json()["targets"]
            return {r["target"]: r["override"] for r in rows}["steady"]  # type: ignore[no-any-return]

        wait_for(lambda: override_on_two() == "drained", "worker 2 drains the target too")
        one.post("/admin/targets/steady", json={"state": "healthy"}, headers=admin)
        wait_for(lambda: override_on_two() is None, "worker 2 heals it too")

        path = tmp_path / "workers.yaml"
        changed = yaml.safe_load(path.read_text())
        changed["aliases"]["added"] = {"targets": ["steady"]}
        path.write_text(yaml.safe_dump(changed))
        assert one.post("/admin/reload", headers=admin).json()["reloaded"] is True
        bearer = {"authorization": f"Bearer {free}"}
        wait_for(
            lambda: "added" in {m["id"] for m in two.get("/v1/models", headers=bearer).json()["data"]},
            "worker 2 reloads the file too",
        )


def test_sigterm_under_load_drains_every_worker_and_loses_no_ledger_record(wall: FaultWall, tmp_path: Path) -> None:
    config = {
        "accounting": {"data_dir": str(tmp_path), "ledger": {"commit_interval": 2.0}},
        "targets": {"slow": {"kind": "openai", "base_url": wall.base_url, "model": "ok?latency_ms=400"}},
        "aliases": {"chat": {"targets": ["slow"]}},
    }
    per_worker = 10
    with workers(config, tmp_path) as gateway:

        async def load() -> list[tuple[int, str, str]]:
            # Keep-alive connections the kernel handed to each worker, `per_worker` of each: both hold requests.
            pinned: dict[int, list[httpx.AsyncClient]] = {1: [], 2: []}
            spare: list[httpx.AsyncClient] = []
            for _ in range(600):  # the kernel picks the worker; a guard against hanging
                client = httpx.AsyncClient(base_url=gateway.url, timeout=60, limits=httpx.Limits(max_connections=1))
                number = int((await client.get("/healthz")).json()["worker"])
                (pinned[number] if len(pinned[number]) < per_worker else spare).append(client)
                if all(len(clients) == per_worker for clients in pinned.values()):
                    break
            assert all(len(clients) == per_worker for clients in pinned.values())
            for client in spare:
                await client.aclose()

            async def one(client: httpx.AsyncClient, worker: int) -> tuple[int, str, str]:
                try:
                    answer = await client.post("/v1/chat/completions", json={"model": "chat", "messages": MESSAGES})
                    return answer.status_code, answer.headers.get("x-lifeline-worker", ""), str(worker)
                except httpx.TransportError:
                    return 0, "", str(worker)
                finally:
                    await client.aclose()

            tasks = [asyncio.create_task(one(c, n)) for n, clients in pinned.items() for c in clients]
            for _ in range(600):  # until the upstream holds every request: a guard, not a measure
                if len(wall.attempts) >= 2 * per_worker:
                    break
                await asyncio.sleep(0.02)
            in_flight = len(wall.attempts)
            gateway.process.send_signal(signal.SIGTERM)
            results = list(await asyncio.gather(*tasks))
            assert in_flight == 2 * per_worker
            return results

        results = asyncio.run(load())
        assert gateway.process.wait(timeout=90) == 0, gateway.output()
    # every request both workers held when SIGTERM came was answered, by the worker holding it
    assert [status for status, _, _ in results] == [200] * 2 * per_worker
    assert all(answered_by == held_by for _, answered_by, held_by in results)
    # commit_interval is 2 s: the drain on SIGTERM wrote these, from both workers into the one database
    rows = sqlite3.connect(tmp_path / "lifeline.db").execute("SELECT count(*) FROM ledger WHERE status = 200")
    assert rows.fetchone()[0] == 2 * per_worker
    assert "all workers have stopped" in gateway.output()


def test_a_killed_worker_is_replaced_and_the_gateway_keeps_answering(wall: FaultWall, tmp_path: Path) -> None:
    config = {
        "accounting": {"data_dir": str(tmp_path)},
        "targets": {"steady": {"kind": "openai", "base_url": wall.base_url, "model": "ok"}},
        "aliases": {"chat": {"targets": ["steady"]}},
    }
    with workers(config, tmp_path) as gateway, ExitStack() as stack:
        clients = clients_per_worker(gateway.url, 2, stack)
        victim = int(clients[1].get("/healthz").json()["pid"])
        survivor = int(clients[2].get("/healthz").json()["pid"])
        os.kill(victim, signal.SIGKILL)

        # Only worker 2 accepts until worker 1 is back: every request on a new connection is answered.
        answered: set[int] = set()
        for _ in range(20):
            answer = httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": "chat", "messages": MESSAGES})
            assert answer.status_code == 200
            answered.add(int(answer.headers["x-lifeline-worker"]))

        def replaced() -> bool:
            health = httpx.get(f"{gateway.url}/healthz").json()
            return bool(health["worker"] == 1 and health["pid"] != victim)

        wait_for(replaced, "a new worker 1 answers")
        assert int(clients[2].get("/healthz").json()["pid"]) == survivor
        assert "worker 1 (pid" in gateway.output() and "killed by SIGKILL" in gateway.output()
        assert gateway.process.poll() is None


def _maps_model(pid: int) -> bool:
    """Whether process `pid` has a GGUF file mapped (llama.cpp maps the model it loads)."""
    return ".gguf" in Path(f"/proc/{pid}/maps").read_text()


def test_workers_share_one_engine_process_for_the_embedded_model(tmp_path: Path) -> None:
    local = {"kind": "llamacpp", "model": "builtin:smollm2", "n_ctx": 512, "n_threads": 1}
    config = {"targets": {"local": local}, "aliases": {"chat": {"targets": ["local"]}}}
    with workers(config, tmp_path, count=2) as running, ExitStack() as stack:
        clients = clients_per_worker(running.url, 2, stack)
        for number, client in clients.items():
            answer = client.post(
                "/v1/chat/completions",
                json={"model": "chat", "messages": MESSAGES, "max_tokens": 4, "temperature": 0},
            )
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-lifeline-worker"] == str(number)
            assert answer.headers["x-lifeline-target"] == "local"
        engines = _engine_pids(running.process.pid)
        assert len(engines) == 1, engines
        assert _maps_model(engines[0])
        worker_pids = [int(client.get("/healthz").json()["pid"]) for client in clients.values()]
        assert not any(_maps_model(pid) for pid in worker_pids)

        # /metrics on either worker shows the engine process's queue and counts once, with no worker label
        for client in clients.values():
            text = client.get("/metrics").text
            assert text.count("# TYPE lifeline_engine_queue_depth gauge") == 1
            assert _samples(text, "lifeline_engine_queue_depth") == ['lifeline_engine_queue_depth{target="local"} 0']
            assert _samples(text, "lifeline_engine_calls_total") == ['lifeline_engine_calls_total{target="local"} 2']
            assert _samples(text, "lifeline_engine_up") == ["lifeline_engine_up 1"]
            assert _samples(text, "lifeline_engine_models_loaded") == ["lifeline_engine_models_loaded 1"]


def _samples(text: str, family: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith((family + "{", family + " "))]


def _engine_pids(supervisor: int) -> list[int]:
    tasks = Path(f"/proc/{supervisor}/task")  # a thread's children are listed under that thread
    children = [int(pid) for task in tasks.iterdir() for pid in (task / "children").read_text().split()]
    return [pid for pid in children if b"lifeline.server.engine_process" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def test_a_reload_serves_added_and_changed_embedded_targets_from_the_engine_process(tmp_path: Path) -> None:
    local = {"kind": "llamacpp", "model": "builtin:smollm2", "n_ctx": 512, "n_threads": 1}
    config: dict[str, Any] = {"targets": {"local": local}, "aliases": {"chat": {"targets": ["local"]}}}
    with workers(config, tmp_path, count=2) as running, ExitStack() as stack:
        clients = clients_per_worker(running.url, 2, stack)
        (engine,) = _engine_pids(running.process.pid)
        path = tmp_path / "workers.yaml"

        def reload(change: Any, aliases: set[str]) -> None:
            written = yaml.safe_load(path.read_text())
            change(written)
            path.write_text(yaml.safe_dump(written))
            running.process.send_signal(signal.SIGHUP)  # the supervisor passes it on to both workers
            for client in clients.values():
                wait_for(
                    lambda c=client: {m["id"] for m in c.get("/v1/models").json()["data"]} == aliases,
                    "the worker reloads the file",
                )

        def loaded() -> str:
            return _samples(clients[1].get("/metrics").text, "lifeline_engine_models_loaded")[0]

        # a target added on the same file with other settings, and the first one changed: both are loaded once,
        # into the engine process, and the model the old settings loaded is unloaded once both workers moved
        def add_and_change(written: dict[str, Any]) -> None:
            written["targets"]["local"]["n_ctx"] = 384
            written["targets"]["small"] = {**local, "n_ctx": 256, "max_queue": 2}
            written["aliases"]["small"] = {"targets": ["small"]}

        reload(add_and_change, {"chat", "small"})
        for number, client in clients.items():
            for alias, target in (("chat", "local"), ("small", "small")):
                answer = client.post(
                    "/v1/chat/completions",
                    json={"model": alias, "messages": MESSAGES, "max_tokens": 2, "temperature": 0},
                )
                assert answer.status_code == 200, answer.text
                assert (answer.headers["x-lifeline-worker"], answer.headers["x-lifeline-target"]) == (
                    str(number),
                    target,
                )
        worker_pids = [int(client.get("/healthz").json()["pid"]) for client in clients.values()]
        assert not any(_maps_model(pid) for pid in worker_pids)
        assert _engine_pids(running.process.pid) == [engine]  # the same engine process, not a new one
        assert _maps_model(engine)
        wait_for(lambda: loaded() == "lifeline_engine_models_loaded 2", "the old settings' model is unloaded")
        text = clients[2].get("/metrics").text
        assert sorted(_samples(text, "lifeline_engine_calls_total")) == [
            'lifeline_engine_calls_total{target="local"} 2',
            'lifeline_engine_calls_total{target="small"} 2',
        ]

        # a target removed is unloaded
        def remove(written: dict[str, Any]) -> None:
            del written["targets"]["small"], written["aliases"]["small"]

        reload(remove, {"chat"})
        wait_for(lambda: loaded() == "lifeline_engine_models_loaded 1", "the removed target's model is unloaded")
        answer = clients[1].post(
            "/v1/chat/completions", json={"model": "chat", "messages": MESSAGES, "max_tokens": 2, "temperature": 0}
        )
        assert answer.status_code == 200, answer.text
        assert not any(_maps_model(pid) for pid in worker_pids)
        assert "could not load" not in running.output()


def test_a_reload_that_adds_the_first_embedded_target_starts_the_engine_process(tmp_path: Path) -> None:
    hosted = {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
    config: dict[str, Any] = {"targets": {"hosted": hosted}, "aliases": {"remote": {"targets": ["hosted"]}}}
    with workers(config, tmp_path, count=2) as running, ExitStack() as stack:
        clients = clients_per_worker(running.url, 2, stack)
        assert _engine_pids(running.process.pid) == []
        path = tmp_path / "workers.yaml"
        written = yaml.safe_load(path.read_text())
        written["targets"]["local"] = {"kind": "llamacpp", "model": "builtin:smollm2", "n_ctx": 256, "n_threads": 1}
        written["aliases"]["chat"] = {"targets": ["local"]}
        path.write_text(yaml.safe_dump(written))
        running.process.send_signal(signal.SIGHUP)
        for number, client in clients.items():
            wait_for(
                lambda c=client: "chat" in {m["id"] for m in c.get("/v1/models").json()["data"]},
                "the worker reloads the file",
            )
            answer = ask(client, number)
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-lifeline-target"] == "local"
        (engine,) = _engine_pids(running.process.pid)
        assert _maps_model(engine)
        worker_pids = [int(client.get("/healthz").json()["pid"]) for client in clients.values()]
        assert not any(_maps_model(pid) for pid in worker_pids)
