"""Keys, budgets, limits and the ledger through a real gateway on loopback, with the fault wall upstream and
SQLite underneath: what the client gets, and what the ledger says afterwards."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from lifeline.accounting.records import NANO
from lifeline.testing import FaultWall
from lifeline.testing.gateway import RunningGateway
from tests.conftest import UPSTREAM_KEY, GatewayFactory, make_config, wall_target

MASTER = "mk-test-master-key-0123456789"
MESSAGES = [{"role": "user", "content": "hello there"}]  # the wall counts 2 prompt tokens
DOLLAR_A_TOKEN = {"input": 1_000_000, "output": 1_000_000}  # USD per 1M tokens: $1 a token keeps sums readable


def config_with(wall: FaultWall, tmp_path: Path, *, auth: bool = True, **extra: Any) -> Any:
    targets = extra.pop(
        "targets",
        {
            "primary": wall_target(wall, "status?code=503", price=DOLLAR_A_TOKEN),
            "backup": wall_target(wall, "ok", price=DOLLAR_A_TOKEN),
        },
    )
    return make_config(
        targets,
        aliases=extra.pop("aliases", None) or {"chat": list(targets), "other": list(targets)},
        retry={"max_retries": 0},
        admin={"master_key": MASTER},
        auth={"enabled": auth},
        accounting={"data_dir": str(tmp_path), "ledger": {"commit_interval": 0.05}, **extra.pop("accounting", {})},
        **extra,
    )


def admin(gw: RunningGateway) -> httpx.Client:
    return httpx.Client(base_url=f"{gw.url}/admin", headers={"authorization": f"Bearer {MASTER}"}, timeout=30)


def new_key(gw: RunningGateway, **fields: Any) -> tuple[str, str]:
    response = admin(gw).post("/keys", json={"name": "test", **fields})
    assert response.status_code == 201, response.text
    return response.json()["key"]["id"], response.json()["secret"]


def ask(gw: RunningGateway, secret: str | None, **extra: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {secret}"} if secret else {}
    body = {"model": "chat", "messages": MESSAGES, **extra}
    return httpx.post(f"{gw.base_url}/chat/completions", json=body, headers=headers, timeout=30)


def ledger_rows(gw: RunningGateway, expect: int | None = None) -> list[dict[str, Any]]:
    """The ledger's rows; with `expect`, wait (briefly) for that many — a streamed request is recorded just
    after its last event reaches the client."""
    accounting = gw.gateway.accounting
    assert accounting.ledger is not None
    for _ in range(1500):  # a guard against hanging, not a measure of speed
        accounting.ledger.flush(10)
        rows = _rows(gw)
        if expect is None or len(rows) >= expect:
            break
        time.sleep(0.02)
    return rows


def ledger_metrics(gw: RunningGateway, until: Callable[[dict[str, str]], bool]) -> dict[str, str]:
    """The ledger's lines of /metrics, polled until `until` holds of them (a bounded number of scrapes)."""
    for _ in range(1500):
        text = httpx.get(f"{gw.url}/metrics").text
        metrics = dict(line.split(" ") for line in text.splitlines() if line.startswith("lifeline_ledger_"))
        if until(metrics):
            break
        time.sleep(0.02)
    return metrics


def _rows(gw: RunningGateway) -> list[dict[str, Any]]:
    columns = (
        "request_id",
        "key_id",
        "alias",
        "target",
        "outcome",
        "status",
        "attempts",
        "prompt_tokens",
        "completion_tokens",
        "usage_estimated",
        "cost_nusd",
        "streamed",
    )
    rows = gw.gateway.accounting.db.query(f"SELECT {', '.join(columns)} FROM ledger ORDER BY started_at")
    return [dict(zip(columns, row, strict=True)) for row in rows]


def test_requests_need_a_valid_key_when_auth_is_on(wall: FaultWall, gateway: GatewayFactory, tmp_path: Path) -> None:
    with gateway(config_with(wall, tmp_path)) as gw:
        key_id, secret = new_key(gw, aliases=["chat"])
        missing = ask(gw, None)
        malformed = ask(gw, "sk-whatever")
        ok = ask(gw, secret)
        forbidden = httpx.post(
            f"{gw.base_url}/chat/completions",
            json={"model": "other", "messages": MESSAGES},
            headers={"authorization": f"Bearer {secret}"},
        )
        models = OpenAI(base_url=gw.base_url, api_key=secret, max_retries=0).models.list()
        revoked = admin(gw).delete(f"/keys/{key_id}")
        after_revoke = ask(gw, secret)
    assert missing.status_code == malformed.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_api_key"
    assert ok.status_code == 200
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["code"] == "permission_denied"
    assert [m.id for m in models.data] == ["chat"]
    assert revoked.json()["status"] == "revoked"
    assert after_revoke.status_code == 401
    assert after_revoke.json()["error"]["code"] == "key_revoked"
    for response in (missing, malformed, ok, forbidden, after_revoke):
        assert secret not in response.text and UPSTREAM_KEY not in response.text


def test_the_admin_api_for_keys(wall: FaultWall, gateway: GatewayFactory, tmp_path: Path) -> None:
    with gateway(config_with(wall, tmp_path)) as gw:
        client = admin(gw)
        created = client.post(
            "/keys",
            json={"name": "team-a", "rpm": 5, "budget_usd": 2, "budget_period": "day", "metadata": {"team": "a"}},
        )
        key_id, secret = created.json()["key"]["id"], created.json()["secret"]
        listed = client.get("/keys")
        one = client.get(f"/keys/{key_id}")
        patched = client.patch(f"/keys/{key_id}", json={"rpm": 7})
        bad_field = client.patch(f"/keys/{key_id}", json={"rpm": "many"})
        unknown = client.get("/keys/' OR '1'='1")
        no_master = httpx.get(f"{gw.url}/admin/keys")
        wrong_master = httpx.get(f"{gw.url}/admin/keys", headers={"authorization": f"Bearer {secret}"})
        oversized = client.post("/keys", json={"name": "big", "metadata": {"x": "y" * 10_000}})
    assert created.status_code == 201
    assert secret.startswith("ll-")
    assert secret not in listed.text and secret not in one.text and "secret_hash" not in listed.text
    assert listed.json()["data"][0]["metadata"] == {"team": "a"}
    assert one.json()["budget_spent_usd"] == 0
    assert patched.json()["rpm"] == 7
    assert bad_field.status_code == 400 and bad_field.json()["error"]["param"] == "rpm"
    assert unknown.status_code == 404
    assert no_master.status_code == wrong_master.status_code == 401
    assert oversized.status_code == 400 and oversized.json()["error"]["param"] == "metadata"


def test_key_management_needs_a_master_key_configured(wall: FaultWall, gateway: GatewayFactory, tmp_path: Path) -> None:
    config = make_config({"backup": wall_target(wall, "ok")}, accounting={"data_dir": str(tmp_path)})
    with gateway(config) as gw:
        response = httpx.post(f"{gw.url}/admin/keys", json={"name": "x"})
    assert response.status_code == 403


def test_one_ledger_row_per_request_and_only_the_answer_costs(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    with gateway(config_with(wall, tmp_path)) as gw:
        key_id, secret = new_key(gw)
        client = OpenAI(base_url=gw.base_url, api_key=secret, max_retries=0)
        for _ in range(3):
            client.chat.completions.create(model="chat", messages=MESSAGES)
        stream = client.chat.completions.create(model="chat", messages=MESSAGES, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        rows = ledger_rows(gw, expect=4)
    # 4 client requests, each with a failed attempt at the primary and an answer from the backup: 4 rows
    assert len(rows) == 4
    assert len({r["request_id"] for r in rows}) == 4
    for row in rows:
        assert row["key_id"] == key_id
        assert row["target"] == "backup" and row["outcome"] == "ok" and row["status"] == 200
        assert row["prompt_tokens"] == 2 and row["completion_tokens"] == 12
        assert row["cost_nusd"] == 14 * NANO  # the backup's tokens only; the failed attempt cost nothing
        assert '"primary"' in row["attempts"] and '"unavailable"' in row["attempts"]
    assert [r["streamed"] for r in rows] == [0, 0, 0, 1]


def test_a_request_no_target_answered_is_recorded_at_no_cost(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    targets = {"only": wall_target(wall, "status?code=503", price=DOLLAR_A_TOKEN)}
    with gateway(config_with(wall, tmp_path, auth=False, targets=targets)) as gw:
        response = ask(gw, None)
        rows = ledger_rows(gw)
    assert response.status_code == 502
    assert len(rows) == 1
    assert rows[0]["outcome"] == "error" and rows[0]["status"] == 502
    assert rows[0]["cost_nusd"] == 0 and rows[0]["target"] is None and rows[0]["key_id"] is None


def test_an_exhausted_budget_refuses_the_next_request(wall: FaultWall, gateway: GatewayFactory, tmp_path: Path) -> None:
    with gateway(config_with(wall, tmp_path)) as gw:
        _, secret = new_key(gw, budget_usd=120, budget_period="day")
        answers = [ask(gw, secret, max_tokens=12) for _ in range(3)]
    # $14 each. Each reserves its worst case first ($87 for the prompt's upper bound: 15 bytes of text and
    # role, 72 of framing; + $12 max_tokens = $99): the second fits ($14 + $99 <= $120), the third does not
    assert [a.status_code for a in answers] == [200, 200, 429]
    error = answers[2].json()["error"]
    assert error["code"] == "budget_exceeded"
    assert "day" in error["message"]


def test_concurrent_requests_cannot_overspend_a_budget(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    with gateway(config_with(wall, tmp_path)) as gw:
        key_id, secret = new_key(gw, budget_usd=100, budget_period="total")

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=30) as client:
                return await asyncio.gather(
                    *(
                        client.post(
                            f"{gw.base_url}/chat/completions",
                            json={"model": "chat", "messages": MESSAGES, "max_tokens": 12},
                            headers={"authorization": f"Bearer {secret}"},
                        )
                        for _ in range(50)
                    )
                )

        responses = asyncio.run(burst())
        rows = [r for r in ledger_rows(gw) if r["key_id"] == key_id]
    answered = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(answered) + len(refused) == 50
    assert refused and all(r.json()["error"]["code"] == "budget_exceeded" for r in refused)
    spent = sum(r["cost_nusd"] for r in rows)
    assert spent <= 100 * NANO
    assert len(answered) == len([r for r in rows if r["outcome"] == "ok"])


def test_requests_per_minute_limit(wall: FaultWall, gateway: GatewayFactory, tmp_path: Path) -> None:
    with gateway(config_with(wall, tmp_path)) as gw:
        _, secret = new_key(gw, rpm=3)
        answers = [ask(gw, secret) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[3].json()["error"]["code"] == "rate_limit_exceeded"
    assert int(answers[3].headers["retry-after"]) >= 1


def test_metrics_count_requests_attempts_tokens_and_cost(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    with gateway(config_with(wall, tmp_path, auth=False)) as gw:
        ask(gw, None)
        text = httpx.get(f"{gw.url}/metrics").text
    assert 'lifeline_requests_total{alias="chat",outcome="ok",status="200"} 1' in text
    assert 'lifeline_attempts_total{outcome="unavailable",target="primary"} 1' in text
    assert 'lifeline_failovers_total{alias="chat",target="backup"} 1' in text
    assert 'lifeline_tokens_total{alias="chat",kind="completion",target="backup"} 12' in text
    assert 'lifeline_cost_usd_total{alias="chat",target="backup"} 14' in text
    assert 'lifeline_circuit_state{target="primary"} 0' in text
    assert "lifeline_ledger_queue_depth" in text
    assert "lifeline_request_latency_seconds_bucket" in text
    assert UPSTREAM_KEY not in text


def test_metrics_have_ledger_counters_attempt_latency_in_flight_and_process_figures(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    def scrape(gw: RunningGateway) -> tuple[str, dict[str, float]]:
        text = httpx.get(f"{gw.url}/metrics").text
        lines = [line.split(" ") for line in text.splitlines() if not line.startswith("#")]
        return text, {line[0]: float(line[1]) for line in lines}

    with gateway(config_with(wall, tmp_path, auth=False)) as gw:
        ask(gw, None)
        ledger_rows(gw, expect=1)
        text, samples = scrape(gw)
        ask(gw, None)
        _, later = scrape(gw)
    # the ledger's counts are counters named _total; the old gauge names are gone
    for name in ("written", "dropped", "write_errors"):
        assert f"# TYPE lifeline_ledger_{name}_total counter" in text
        assert f"lifeline_ledger_{name} " not in text
    assert samples["lifeline_ledger_written_total"] == 1
    assert samples["lifeline_ledger_dropped_total"] == samples["lifeline_ledger_write_errors_total"] == 0
    # one latency histogram per target, labelled by target only: one attempt each (primary failed, backup answered)
    assert "# TYPE lifeline_attempt_latency_seconds histogram" in text
    assert samples['lifeline_attempt_latency_seconds_count{target="primary"}'] == 1
    assert samples['lifeline_attempt_latency_seconds_count{target="backup"}'] == 1
    assert 'lifeline_attempt_latency_seconds_bucket{target="backup",le="+Inf"} 1' in text
    assert samples["lifeline_requests_in_flight"] == 1  # the scrape itself
    # the process's own figures, under the usual names: a counter that never goes back between two scrapes, and
    # a start time that is a fact of the process, the same at every scrape (the gateway runs in this process)
    assert "# TYPE process_cpu_seconds_total counter" in text
    assert 0 <= samples["process_cpu_seconds_total"] <= later["process_cpu_seconds_total"]
    assert samples["process_resident_memory_bytes"] > 1_000_000
    assert samples["process_open_fds"] >= 3 and samples["process_max_fds"] >= samples["process_open_fds"]
    assert samples["process_start_time_seconds"] == later["process_start_time_seconds"] > 0


@pytest.mark.parametrize("stream", [False, True])
def test_usage_of_a_streamed_answer_is_costed_too(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path, stream: bool
) -> None:
    targets = {"only": wall_target(wall, "no_usage", price=DOLLAR_A_TOKEN)}
    with gateway(config_with(wall, tmp_path, auth=False, targets=targets)) as gw:
        response = ask(gw, None, stream=stream)
        rows = ledger_rows(gw, expect=1)
    assert response.status_code == 200
    assert rows[0]["usage_estimated"] == 1
    assert rows[0]["cost_nusd"] > 0


def test_usage_report_through_the_admin_api(wall: FaultWall, gateway: GatewayFactory, tmp_path: Path) -> None:
    with gateway(config_with(wall, tmp_path)) as gw:
        key_id, secret = new_key(gw)
        for _ in range(2):
            assert ask(gw, secret).status_code == 200
        client = admin(gw)
        by_key = client.get("/usage", params={"by": "key,target"}).json()
        csv_text = client.get("/usage", params={"by": "alias", "format": "csv"}).text
        injected = client.get("/usage", params={"by": "key", "key": "x' OR '1'='1"}).json()
        bad = client.get("/usage", params={"by": "password"})
        unauthorised = httpx.get(f"{gw.url}/admin/usage")
    row = by_key["data"][0]
    assert row["key"] == key_id and row["target"] == "backup"
    assert row["requests"] == 2 and row["cost_usd"] == 28
    assert csv_text.splitlines()[0].startswith("alias,")
    assert injected["data"] == []
    assert bad.status_code == 400
    assert unauthorised.status_code == 401


def test_no_secret_reaches_a_log_line_an_error_or_a_metric(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="lifeline")
    # an upstream that echoes the key it was sent in its error message, as some do
    echo = "status?code=400&message=Incorrect+API+key+provided:+" + UPSTREAM_KEY
    targets = {
        "echo": wall_target(wall, "ok", price=DOLLAR_A_TOKEN, headers={"x-wall-behaviour": echo}),
        "cut": wall_target(wall, "status?code=401", price=DOLLAR_A_TOKEN),
        "backup": wall_target(wall, "ok", price=DOLLAR_A_TOKEN),
    }
    aliases = {"chat": ["cut", "backup"], "echo": ["echo"]}
    with gateway(config_with(wall, tmp_path, targets=targets, aliases=aliases)) as gw:
        _, secret = new_key(gw)
        responses = [
            ask(gw, secret),
            ask(gw, secret[:-2] + "zz"),
            httpx.post(
                f"{gw.base_url}/chat/completions",
                json={"model": "echo", "messages": MESSAGES},
                headers={"authorization": f"Bearer {secret}"},
            ),
            httpx.get(f"{gw.base_url}/models", headers={"authorization": f"Bearer {secret}"}),
        ]
        metrics = httpx.get(f"{gw.url}/metrics").text
        targets_view = admin(gw).get("/targets").text
        ledger_rows(gw, expect=2)
    assert responses[0].status_code == 200 and responses[1].status_code == 401
    assert responses[2].status_code == 400 and "***" in responses[2].json()["error"]["message"]
    for text in [
        *(r.text for r in responses),
        *(str(r.headers) for r in responses),
        metrics,
        targets_view,
        caplog.text,
    ]:
        assert secret not in text
        assert secret.split(".")[1] not in text
        assert UPSTREAM_KEY not in text
        assert MASTER not in text


def test_a_database_outage_does_not_stop_requests_or_lose_records(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path, postgres_server: Any, postgres_db_url: str
) -> None:
    config = config_with(
        wall, tmp_path, auth=False, accounting={"database_url": postgres_db_url, "ledger": {"commit_interval": 0.05}}
    )
    with gateway(config) as gw:
        assert ask(gw, None).status_code == 200
        postgres_server.stop()
        try:
            during = [ask(gw, None).status_code for _ in range(5)]
            metrics = ledger_metrics(gw, until=lambda m: int(m["lifeline_ledger_write_errors_total"]) >= 1)
        finally:
            postgres_server.start()
        rows = ledger_rows(gw, expect=6)
    assert during == [200] * 5
    assert int(metrics["lifeline_ledger_queue_depth"]) >= 5  # waiting in the buffer, not lost
    assert int(metrics["lifeline_ledger_write_errors_total"]) >= 1
    assert len(rows) == 6


def test_an_answer_says_what_it_cost_as_the_ledger_records_it(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    """`x-lifeline-cost-usd` on every whole answer; `usage.cost` (USD) when the client asks for it with
    `x-lifeline-include-cost: true`, as OpenRouter does. Both are the ledger's figure for that request."""
    with gateway(config_with(wall, tmp_path, auth=False)) as gw:
        plain = ask(gw, None, max_tokens=5)
        body = {"model": "chat", "messages": MESSAGES, "max_tokens": 5}
        asked = httpx.post(
            f"{gw.base_url}/chat/completions", json=body, headers={"x-lifeline-include-cost": "true"}, timeout=30
        )
        rows = ledger_rows(gw, expect=2)
    assert plain.status_code == asked.status_code == 200
    by_request = {r["request_id"]: r for r in rows}
    for response in (plain, asked):
        recorded = by_request[response.headers["x-request-id"]]["cost_nusd"]
        assert recorded > 0  # $1 a token: never zero
        assert Decimal(response.headers["x-lifeline-cost-usd"]) == Decimal(recorded) / 10**9  # exact, no float
    assert "cost" not in plain.json()["usage"]
    assert asked.json()["usage"]["cost"] == by_request[asked.headers["x-request-id"]]["cost_nusd"] / 1e9
