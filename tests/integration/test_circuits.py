"""Circuit breakers on real sockets: open after N consecutive failures, half-open probe after the cooldown,
close on success, reopen on failure, and the least recently failed target probed when every one is open."""

from __future__ import annotations

import time

import httpx
import pytest

from lifeline.testing import FaultWall
from tests.conftest import GatewayFactory, make_config, wall_target

MESSAGES = [{"role": "user", "content": "hello there"}]


def ask(base_url: str) -> httpx.Response:
    return httpx.post(f"{base_url}/chat/completions", json={"model": "chat", "messages": MESSAGES}, timeout=30)


def circuit(url: str, target: str) -> dict[str, object]:
    rows = httpx.get(f"{url}/admin/targets").json()["targets"]
    return next(r for r in rows if r["target"] == target)


def test_the_circuit_opens_after_consecutive_failures_and_open_targets_are_skipped(
    wall: FaultWall, gateway: GatewayFactory
) -> None:
    primary = "status?code=503"
    config = make_config(
        {"primary": wall_target(wall, primary), "backup": wall_target(wall, "ok")},
        retry={"max_retries": 0},
        circuit={"failure_threshold": 2, "cooldown": 30},
    )
    with gateway(config) as gw:
        for _ in range(2):
            assert ask(gw.base_url).headers["x-lifeline-target"] == "backup"
        assert circuit(gw.url, "primary")["state"] == "open"
        third = ask(gw.base_url)
    assert third.status_code == 200
    assert third.headers["x-lifeline-attempts"] == "1"
    assert len(wall.attempts_for(primary)) == 2  # the open circuit kept the third request away


def test_half_open_probe_closes_the_circuit_on_success(wall: FaultWall, gateway: GatewayFactory) -> None:
    primary = "flap?down=0.6"
    config = make_config(
        {"primary": wall_target(wall, primary), "backup": wall_target(wall, "ok")},
        retry={"max_retries": 0},
        circuit={"failure_threshold": 1, "cooldown": 0.8},
    )
    with gateway(config) as gw:
        assert ask(gw.base_url).headers["x-lifeline-target"] == "backup"
        assert circuit(gw.url, "primary")["state"] == "open"
        assert ask(gw.base_url).headers["x-lifeline-target"] == "backup"  # skipped while open
        time.sleep(1.0)  # past the cooldown, and the flapping upstream is healthy again
        probe = ask(gw.base_url)
        assert probe.headers["x-lifeline-target"] == "primary"
        assert circuit(gw.url, "primary")["state"] == "closed"
    assert len(wall.attempts_for(primary)) == 2


def test_a_failed_probe_opens_the_circuit_again(wall: FaultWall, gateway: GatewayFactory) -> None:
    primary = "status?code=500"
    config = make_config(
        {"primary": wall_target(wall, primary), "backup": wall_target(wall, "ok")},
        retry={"max_retries": 3},
        circuit={"failure_threshold": 1, "cooldown": 0.3},
    )
    with gateway(config) as gw:
        ask(gw.base_url)
        time.sleep(0.4)
        probe = ask(gw.base_url)
        state = circuit(gw.url, "primary")
    assert probe.headers["x-lifeline-target"] == "backup"
    assert state["state"] == "open"
    assert state["times_opened"] == 2
    # the circuit opened on the first failure, so no retries were spent on an open target; one probe only
    assert len(wall.attempts_for(primary)) == 2


def test_when_every_target_is_open_the_least_recently_failed_is_probed(
    wall: FaultWall, gateway: GatewayFactory
) -> None:
    first, second = "fail_once?code=503&t=a", "status?code=503&t=b"
    config = make_config(
        {"a": wall_target(wall, first), "b": wall_target(wall, second)},
        retry={"max_retries": 0},
        circuit={"failure_threshold": 1, "cooldown": 60},
    )
    with gateway(config) as gw:
        failed = ask(gw.base_url)
        assert failed.status_code == 502
        ready = httpx.get(f"{gw.url}/readyz")
        recovered = ask(gw.base_url)
    assert ready.status_code == 503
    # a failed first (longest ago), so a is probed — and it has recovered
    assert recovered.status_code == 200
    assert recovered.headers["x-lifeline-target"] == "a"
    assert len(wall.attempts_for(first)) == 2
    assert len(wall.attempts_for(second)) == 1


@pytest.mark.parametrize("http_client", ["lean", "httpx"])
def test_requests_beyond_a_full_connection_pool_fail_over_and_leave_the_circuit_closed(
    wall: FaultWall, gateway: GatewayFactory, http_client: str
) -> None:
    # A slow but healthy target: its stream holds the only connection of its pool until the client leaves.
    slow = "stall?after=2&t=pool"
    timeouts = {"connect": 0.2, "first_byte": 2, "response": 2, "ttft": 2, "idle": 30}
    config = make_config(
        {
            "capped": wall_target(wall, slow, max_connections=1, timeouts=timeouts, http_client=http_client),
            "backup": wall_target(wall, "ok"),
        },
        retry={"max_retries": 0},
        circuit={"failure_threshold": 1},
    )
    body = {"model": "chat", "messages": MESSAGES, "stream": True}
    with gateway(config) as gw, httpx.stream("POST", f"{gw.base_url}/chat/completions", json=body, timeout=30) as held:
        assert held.headers["x-lifeline-target"] == "capped"
        lines = held.iter_lines()  # kept: a dropped iterator would close the stream
        next(line for line in lines if '"content":"Lifeline"' in line)  # content is flowing
        in_use = httpx.get(f"{gw.url}/metrics").text
        beyond = [ask(gw.base_url) for _ in range(3)]
        state = circuit(gw.url, "capped")
        metrics = httpx.get(f"{gw.url}/metrics").text
    assert [r.status_code for r in beyond] == [200, 200, 200]
    assert [r.headers["x-lifeline-target"] for r in beyond] == ["backup"] * 3
    assert [r.headers["x-lifeline-attempts"] for r in beyond] == ["2"] * 3  # the full pool, then the backup
    # a full pool is the gateway's own overload: no verdict on the target
    assert state["state"] == "closed" and state["consecutive_failures"] == 0
    assert 'lifeline_attempts_total{outcome="pool_full",target="capped"} 3' in metrics
    assert len(wall.attempts_for(slow)) == 1  # the requests beyond the cap never reached the target
    if http_client == "httpx":
        return  # httpx's own pool does not report its use
    assert 'lifeline_pool_connections_in_use{target="capped"} 1' in in_use
    assert 'lifeline_pool_connections_max{target="capped"} 1' in in_use
    assert 'lifeline_pool_requests_waiting{target="capped"} 0' in in_use
