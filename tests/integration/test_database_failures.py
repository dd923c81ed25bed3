"""What a client and an operator see when the gateway's database fails, through a real gateway on loopback
with real SQLite and PostgreSQL: a record the database refuses is set aside and counted while the ledger
goes on; an outage answers 503 with Retry-After, never 500."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from lifeline.accounting.db import Database
from lifeline.testing import FaultWall
from lifeline.testing.gateway import RunningGateway
from tests.conftest import GatewayFactory
from tests.fixtures.postgres import PostgresServer
from tests.integration.processes import free_port
from tests.integration.test_accounting import admin, ask, config_with, ledger_rows, new_key
from tests.integration.test_api import assert_envelope


def metric(gw: RunningGateway, name: str) -> tuple[str | None, float | None]:
    """The TYPE line's kind and the (unlabelled) value of one metric at GET /metrics."""
    text = httpx.get(f"{gw.url}/metrics").text
    kind = next((line.split()[-1] for line in text.splitlines() if line.startswith(f"# TYPE {name} ")), None)
    value = next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(f"{name} ")), None)
    return kind, value


def database_url(dialect: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    return {"database_url": request.getfixturevalue("postgres_db_url")} if dialect == "postgres" else {}


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_a_nul_in_the_upstreams_model_name_does_not_stop_the_ledger(
    dialect: str, wall: FaultWall, gateway: GatewayFactory, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The reproduction: PostgreSQL refused the record, the writer retried the batch forever and every later
    record was lost."""
    targets = {"odd": _target(wall, "ok?served_model=gpt%00evil")}
    config = config_with(wall, tmp_path, auth=False, targets=targets, accounting=database_url(dialect, request))
    with gateway(config) as gw:
        answers = [ask(gw, None).status_code for _ in range(3)]
        assert gw.gateway.accounting.ledger is not None
        assert gw.gateway.accounting.ledger.flush(10)
        models = gw.gateway.accounting.db.query("SELECT model FROM ledger")
    assert answers == [200] * 3
    assert models == [("gpt\ufffdevil",)] * 3


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_a_record_the_database_refuses_is_counted_and_the_ledger_goes_on(
    dialect: str, wall: FaultWall, gateway: GatewayFactory, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    accounting = database_url(dialect, request)
    targets = {"refused": {**_target(wall, "ok")}, "fine": {**_target(wall, "ok?tokens=3")}}
    config = config_with(
        wall, tmp_path, auth=False, targets=targets, aliases={"chat": ["refused"], "other": ["fine"]},
        accounting=accounting,
    )  # fmt: skip
    with gateway(config) as gw:
        assert metric(gw, "lifeline_ledger_rejected_total") == ("counter", 0)
        db = gw.gateway.accounting.db
        _refuse_model(db, "ok")  # the model the wall answers with on target `refused`
        assert ask(gw, None).status_code == 200
        fine = httpx.post(
            f"{gw.base_url}/chat/completions", json={"model": "other", "messages": [{"role": "user", "content": "x"}]}
        )
        assert fine.status_code == 200
        rows = ledger_rows(gw)
        rejected = db.query("SELECT record FROM ledger_rejected")
        assert metric(gw, "lifeline_ledger_rejected_total") == ("counter", 1)
    assert [r["alias"] for r in rows] == ["other"]
    assert [orjson.loads(r[0])["alias"] for r in rejected] == ["chat"]


# --- outages -----------------------------------------------------------------------------------------


def test_during_a_postgres_outage_what_needs_the_database_is_503_with_retry_after(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path, postgres_server: PostgresServer, postgres_db_url: str
) -> None:
    """They were 500s: a budgeted key's first request (its spend is read from the ledger), creating a key,
    listing keys, a usage report. Requests that need no database go on being served."""
    config = config_with(
        wall, tmp_path, targets={"backup": _target(wall, "ok")}, accounting={"database_url": postgres_db_url}
    )
    with gateway(config) as gw:
        _, budgeted = new_key(gw, budget_usd=100, budget_period="day")
        _, plain = new_key(gw)
        client = admin(gw)
        postgres_server.stop()
        try:
            first = ask(gw, budgeted)
            served = ask(gw, plain)
            created = client.post("/keys", json={"name": "during"})
            listed = client.get("/keys")
            usage = client.get("/usage")
        finally:
            postgres_server.start()
        after = ask(gw, budgeted)
    assert served.status_code == 200
    for response in (first, created, listed, usage):
        error = assert_envelope(response, 503, type="api_error", code="database_unavailable")
        assert response.headers["retry-after"] == "5" and "5 seconds" in error["message"]
        assert "://" not in response.text and "127.0.0.1" not in response.text
    assert after.status_code == 200


def test_a_budgeted_request_during_an_outage_is_503_in_anthropics_envelope_on_v1_messages(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path, postgres_server: PostgresServer, postgres_db_url: str
) -> None:
    config = config_with(
        wall, tmp_path, targets={"backup": _target(wall, "ok")}, accounting={"database_url": postgres_db_url}
    )
    with gateway(config) as gw:
        _, budgeted = new_key(gw, budget_usd=100, budget_period="day")
        postgres_server.stop()
        try:
            response = httpx.post(
                f"{gw.base_url}/messages",
                json={"model": "chat", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
                headers={"x-api-key": budgeted},
                timeout=30,
            )
        finally:
            postgres_server.start()
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert response.json()["type"] == "error"


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_serve_with_the_database_down_is_one_line_and_exit_2(dialect: str, wall: FaultWall, tmp_path: Path) -> None:
    """It was uvicorn's traceback of the lifespan and exit 3."""
    if dialect == "postgres":
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))  # bound, never listening: connection refused
            port = closed.getsockname()[1]
            accounting = {"database_url": f"postgresql://lifeline:{PASSWORD}@127.0.0.1:{port}/lifeline"}
            where = f"PostgreSQL at 127.0.0.1:{port}/lifeline"
            result = _serve(wall, tmp_path, accounting)
    else:
        (tmp_path / "data" / "lifeline.db").mkdir(parents=True)  # a directory where the file goes
        where = f"SQLite at {tmp_path / 'data' / 'lifeline.db'}"
        result = _serve(wall, tmp_path, {"data_dir": str(tmp_path / "data")})
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("error: ") and where in errors[0]
    assert result.stderr.strip().splitlines()[-1] == errors[0]
    assert "Traceback" not in result.stdout + result.stderr and PASSWORD not in result.stdout + result.stderr


PASSWORD = "pw-not-for-logs-42"


def _serve(wall: FaultWall, tmp_path: Path, accounting: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    config = {
        "server": {"port": free_port()},
        "targets": {"backup": _target(wall, "ok")},
        "aliases": {"chat": {"targets": ["backup"]}},
        "accounting": accounting,
    }
    path = tmp_path / "lifeline.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [sys.executable, "-m", "lifeline.cli.main", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _target(wall: FaultWall, model: str) -> dict[str, Any]:
    from tests.conftest import wall_target

    return wall_target(wall, model)


def _refuse_model(db: Database, model: str) -> None:
    if db.dialect == "postgres":
        db.execute(f"ALTER TABLE ledger ADD CONSTRAINT refused_model CHECK (model IS NULL OR model <> '{model}')")
    else:
        db.execute(
            f"CREATE TRIGGER refused_model BEFORE INSERT ON ledger WHEN NEW.model = '{model}' "
            "BEGIN SELECT RAISE(ABORT, 'refused model'); END"
        )
