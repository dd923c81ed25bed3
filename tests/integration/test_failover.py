"""Every row of the failover table, against real sockets: the gateway on loopback, the fault wall as the
upstreams, the official openai SDK or raw httpx as the client. Each test asserts what the client got and
what the upstream saw (attempt counts and the gaps between them)."""

from __future__ import annotations

import httpx
import pytest
from openai import OpenAI

from lifeline.testing import FaultWall, wall_text
from tests.conftest import GatewayFactory, make_config, wall_target

MESSAGES = [{"role": "user", "content": "hello there"}]


def ask(base_url: str, alias: str = "chat", **extra: object) -> httpx.Response:
    body = {"model": alias, "messages": MESSAGES, **extra}
    return httpx.post(f"{base_url}/chat/completions", json=body, timeout=30)


@pytest.mark.parametrize("code", [500, 502, 503, 504])
def test_5xx_is_retried_with_backoff_then_the_next_target(
    wall: FaultWall, gateway: GatewayFactory, code: int, router_waits: list[float]
) -> None:
    primary, backup = f"status?code={code}", "ok?served_model=backup-model"
    config = make_config({"primary": wall_target(wall, primary), "backup": wall_target(wall, backup)})
    with gateway(config) as gw:
        response = ask(gw.base_url)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == wall_text(12)
    assert response.json()["model"] == "backup-model"
    assert response.headers["x-lifeline-target"] == "backup"
    # max_retries=2: three attempts at the primary, then one at the backup
    assert len(wall.attempts_for(primary)) == 3
    assert len(wall.attempts_for(backup)) == 1
    assert response.headers["x-lifeline-attempts"] == "4"
    # backoff_base 0.05 with equal jitter: the first wait is 0.025-0.05 s, the second 0.05-0.1 s
    first, second = router_waits
    assert 0.025 <= first <= 0.05
    assert 0.05 <= second <= 0.1


def test_a_500_once_is_retried_on_the_same_target(wall: FaultWall, gateway: GatewayFactory) -> None:
    primary = "fail_once?code=500"
    config = make_config({"primary": wall_target(wall, primary), "backup": wall_target(wall, "ok?t=backup")})
    with gateway(config) as gw:
        response = ask(gw.base_url)
    assert response.status_code == 200
    assert response.headers["x-lifeline-target"] == "primary"
    assert response.headers["x-lifeline-attempts"] == "2"
    assert wall.attempts_for("ok?t=backup") == []


def test_a_reset_before_headers_is_retried_then_the_next_target(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config({"primary": wall_target(wall, "reset"), "backup": wall_target(wall, "ok?t=backup")})
    with gateway(config) as gw:
        response = ask(gw.base_url)
    assert response.status_code == 200
    assert response.headers["x-lifeline-target"] == "backup"
    assert len(wall.attempts_for("reset")) == 3


def test_connection_refused_is_retried_then_the_next_target(wall: FaultWall, gateway: GatewayFactory) -> None:
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    dead = {"kind": "openai", "base_url": f"http://127.0.0.1:{dead_port}/v1", "model": "x"}
    config = make_config({"dead": dead, "backup": wall_target(wall, "ok")})
    with gateway(config) as gw:
        response = ask(gw.base_url)
    assert response.status_code == 200
    assert response.headers["x-lifeline-target"] == "backup"
    assert response.headers["x-lifeline-attempts"] == "4"


def test_429_with_retry_after_within_the_cap_is_waited_out_once(
    wall: FaultWall, gateway: GatewayFactory, router_waits: list[float]
) -> None:
    primary = "rate_limit?retry_after=1"
    config = make_config({"primary": wall_target(wall, primary), "backup": wall_target(wall, "ok")})
    with gateway(config) as gw:
        response = ask(gw.base_url)
    assert response.status_code == 200
    assert response.headers["x-lifeline-target"] == "backup"
    # waited the stated second, asked once more, was refused again, moved on: never a tight loop
    assert len(wall.attempts_for(primary)) == 2
    assert router_waits == [1.0]


def test_429_with_retry_after_over_the_cap_moves_on_and_leaves_the_target_alone(
    wall: FaultWall, gateway: GatewayFactory
) -> None:
    primary = "rate_limit?retry_after=30"
    config = make_config({"primary": wall_target(wall, primary), "backup": wall_target(wall, "ok")})
    with gateway(config) as gw:
        first = ask(gw.base_url)
        second = ask(gw.base_url)
    assert first.status_code == second.status_code == 200
    assert first.headers["x-lifeline-target"] == second.headers["x-lifeline-target"] == "backup"
    # one attempt only: the second request does not knock on a door that said "in 30 seconds"
    assert len(wall.attempts_for(primary)) == 1
    assert second.headers["x-lifeline-attempts"] == "1"


def test_429_without_retry_after_backs_off_then_moves_on(
    wall: FaultWall, gateway: GatewayFactory, router_waits: list[float]
) -> None:
    primary = "rate_limit"
    config = make_config({"primary": wall_target(wall, primary), "backup": wall_target(wall, "ok")})
    with gateway(config) as gw:
        response = ask(gw.base_url)
    assert response.status_code == 200
    assert response.headers["x-lifeline-target"] == "backup"
    assert len(wall.attempts_for(primary)) == 2  # rate_limit_retries=1
    assert len(router_waits) == 1 and 0.025 <= router_waits[0] <= 0.05  # backoff with jitter, not a tight loop


def test_every_target_rate_limited_gives_429_with_retry_after(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config({"only": wall_target(wall, "rate_limit?retry_after=30")})
    with gateway(config) as gw:
        first = ask(gw.base_url)
        second = ask(gw.base_url)
    for response in (first, second):
        assert response.status_code == 429
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["error"]["type"] == "rate_limit_error"
    assert len(wall.attempts_for("rate_limit?retry_after=30")) == 1


@pytest.mark.parametrize(
    "primary",
    [
        "status?code=401",
        "status?code=402",
        "status?code=403",
        "status?code=451",
        "rate_limit?error_code=insufficient_quota",
        "status?code=400&error_code=unsupported_country_region_territory",
    ],
)
def test_a_cut_off_is_not_retried_and_opens_the_circuit(wall: FaultWall, gateway: GatewayFactory, primary: str) -> None:
    config = make_config({"primary": wall_target(wall, primary), "backup": wall_target(wall, "ok")})
    with gateway(config) as gw:
        first = ask(gw.base_url)
        second = ask(gw.base_url)
        targets = httpx.get(f"{gw.url}/admin/targets").json()
    assert first.status_code == second.status_code == 200
    assert first.headers["x-lifeline-target"] == "backup"
    assert first.headers["x-lifeline-attempts"] == "2"
    assert len(wall.attempts_for(primary)) == 1  # neither retried nor tried again by the second request
    assert second.headers["x-lifeline-attempts"] == "1"
    state = {t["target"]: t for t in targets["targets"]}
    assert state["primary"]["state"] == "open"
    assert state["primary"]["open_for_seconds"] > 500  # the long cut-off cooldown
    assert targets["recent_failovers"][0]["from"] == "primary"
    assert targets["recent_failovers"][0]["outcome"] == "cut_off"


def test_404_model_not_found_is_not_retried(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config({"primary": wall_target(wall, "status?code=404"), "backup": wall_target(wall, "ok")})
    with gateway(config) as gw:
        response = ask(gw.base_url)
    assert response.status_code == 200
    assert response.headers["x-lifeline-target"] == "backup"
    assert len(wall.attempts_for("status?code=404")) == 1


def test_context_length_exceeded_goes_to_a_target_with_a_larger_context(
    wall: FaultWall, gateway: GatewayFactory
) -> None:
    config = make_config(
        {
            "small": wall_target(wall, "context_length", context_window=4096),
            "smaller": wall_target(wall, "ok?t=smaller", context_window=2048),
            "large": wall_target(wall, "ok?t=large", context_window=128000),
        }
    )
    with gateway(config) as gw:
        response = ask(gw.base_url)
    assert response.status_code == 200
    assert response.headers["x-lifeline-target"] == "large"
    assert len(wall.attempts_for("context_length")) == 1
    assert wall.attempts_for("ok?t=smaller") == []


def test_context_length_exceeded_with_no_larger_target_is_a_clean_error(
    wall: FaultWall, gateway: GatewayFactory
) -> None:
    config = make_config(
        {
            "small": wall_target(wall, "context_length", context_window=4096),
            "other": wall_target(wall, "ok", context_window=4096),
        }
    )
    with gateway(config) as gw:
        response = ask(gw.base_url)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"
    assert len(wall.attempts_for("context_length")) == 1
    assert wall.attempts_for("ok") == []


def test_a_content_filter_refusal_goes_back_to_the_client(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config({"primary": wall_target(wall, "content_filter"), "backup": wall_target(wall, "ok")})
    with gateway(config) as gw:
        response = ask(gw.base_url)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "content_filter"
    assert "content management policy" in error["message"]  # the provider's own reason
    assert wall.attempts_for("ok") == []


def test_content_filter_failover_is_an_opt_in_per_alias(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config(
        {"primary": wall_target(wall, "content_filter"), "backup": wall_target(wall, "ok")},
        aliases={"chat": {"targets": ["primary", "backup"], "failover_on_content_filter": True}},
    )
    with gateway(config) as gw:
        response = ask(gw.base_url)
    assert response.status_code == 200
    assert response.headers["x-lifeline-target"] == "backup"


@pytest.mark.parametrize("code", [400, 422])
def test_the_clients_own_mistake_is_returned_as_is(wall: FaultWall, gateway: GatewayFactory, code: int) -> None:
    primary = f"status?code={code}&param=temperature&error_code=invalid_value&error_type=invalid_request_error"
    config = make_config({"primary": wall_target(wall, primary), "backup": wall_target(wall, "ok")})
    with gateway(config) as gw:
        response = ask(gw.base_url)
    assert response.status_code == code
    error = response.json()["error"]
    assert error["param"] == "temperature"
    assert error["code"] == "invalid_value"
    assert len(wall.attempts_for(primary)) == 1
    assert wall.attempts_for("ok") == []


def test_no_response_headers_within_the_timeout_is_a_silent_target(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config(
        {
            "primary": wall_target(wall, "hang", timeouts={"response": 0.5, "first_byte": 0.5}),
            "backup": wall_target(wall, "ok"),
        }
    )
    with gateway(config) as gw:
        plain = ask(gw.base_url)
        streamed = httpx.post(
            f"{gw.base_url}/chat/completions",
            json={"model": "chat", "messages": MESSAGES, "stream": True},
            timeout=30,
        )
    assert plain.status_code == streamed.status_code == 200
    assert plain.headers["x-lifeline-target"] == streamed.headers["x-lifeline-target"] == "backup"
    # a silent target is not retried: one attempt per request
    assert len(wall.attempts_for("hang")) == 2


def test_no_first_token_within_the_ttft_timeout_moves_on(wall: FaultWall, gateway: GatewayFactory) -> None:
    primary = "slow_first_token?delay=5"
    config = make_config(
        {"primary": wall_target(wall, primary, timeouts={"ttft": 0.5}), "backup": wall_target(wall, "ok")}
    )
    with gateway(config) as gw:
        client = OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        stream = client.chat.completions.create(model="chat", messages=MESSAGES, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == wall_text(12)
    assert len(wall.attempts_for(primary)) == 1


def test_the_request_deadline_header_bounds_every_wait(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config({"primary": wall_target(wall, "hang", timeouts={"response": 30})})
    with gateway(config) as gw:
        response = httpx.post(
            f"{gw.base_url}/chat/completions",
            json={"model": "chat", "messages": MESSAGES},
            headers={"x-lifeline-timeout": "0.5"},
            timeout=30,
        )
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "deadline_exceeded"
    assert len(wall.attempts_for("hang")) == 1


def test_every_target_failing_is_a_502_naming_each_attempt(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config(
        {"a": wall_target(wall, "status?code=503"), "b": wall_target(wall, "status?code=401")},
        retry={"max_retries": 0},
    )
    with gateway(config) as gw:
        response = ask(gw.base_url)
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "all_targets_failed"
    assert "a: unavailable (503)" in error["message"]
    assert "b: cut_off (401)" in error["message"]
    assert response.headers["x-lifeline-attempts"] == "2"
