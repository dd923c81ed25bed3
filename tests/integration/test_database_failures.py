"""What a client and an operator see when the gateway's database fails, through a real gateway on loopback
with real SQLite and PostgreSQL: a record the database refuses is set aside and counted while the ledger
goes on; an outage answers 503 with Retry-After, never 500."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from lifeline.accounting.db import Database
from lifeline.testing import FaultWall
from lifeline.testing.gateway import RunningGateway
from tests.conftest import GatewayFactory
from tests.integration.test_accounting import ask, config_with, ledger_rows


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
