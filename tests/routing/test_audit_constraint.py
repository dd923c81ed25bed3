"""`max_censorship_gap`: an alias's targets whose latest stored audit exceeds the limit are excluded when the
gateway is built (or reloaded); the others are kept, and a target never audited is kept unless
`require_audit` — with the audits in a real SQLite file, and in PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from lifeline.accounting.audits import GapRow, latest_gaps, store_audit
from lifeline.accounting.db import Database
from lifeline.config import Config
from lifeline.config.schema import Constraints
from lifeline.server.gateway import Gateway
from lifeline.testing import FaultWall
from tests.conftest import GatewayFactory, make_config, wall_target
from tests.integration.test_runtime_control import AUTH, MASTER, reload, serving, write


def _row(target: str, language: str, gap: float | None) -> GapRow:
    return GapRow(target, language, gap, None if gap is None else gap - 0.2, None if gap is None else gap + 0.2, 8, 8)


def _store(db: Database) -> None:
    # "censor" was clean in an old audit and censors in its latest; "open" the other way round
    store_audit(db, "speech-cn", [_row("censor", "zh", 0.0), _row("open", "zh", 0.6)], audited_at=1000.0)
    store_audit(db, "speech-cn", [_row("censor", "zh", 0.5), _row("censor", "en", 0.1), _row("open", "zh", 0.1)],
                audited_at=2000.0)  # fmt: skip


def _config(wall: FaultWall, constraints: dict[str, Any], **accounting: Any) -> Config:
    targets = {name: wall_target(wall, "speech?style=open") for name in ("censor", "open", "never")}
    return make_config(
        targets, {"chat": {"targets": ["censor", "open", "never"], "constraints": constraints}}, accounting=accounting
    )


def test_the_latest_audit_per_target_is_read(tmp_path: Path) -> None:
    db = Database(data_dir=tmp_path)
    try:
        _store(db)
        assert latest_gaps(db) == {"censor": {"zh": 0.5, "en": 0.1}, "open": {"zh": 0.1}}
    finally:
        db.close()


def test_a_target_over_the_limit_is_excluded_and_the_others_kept(
    wall: FaultWall, tmp_path: Path, gateway: GatewayFactory
) -> None:
    db = Database(data_dir=tmp_path)
    _store(db)
    db.close()
    cfg = _config(wall, {"max_censorship_gap": {"zh": 0.2, "en": 0.2}}, data_dir=str(tmp_path))
    built = Gateway.build(cfg)
    assert built.router.permitted["chat"] == ["open", "never"]  # never audited: kept
    with gateway(cfg) as gw:
        for _ in range(3):
            answer = httpx.post(f"{gw.base_url}/chat/completions",
                                json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
            assert answer.status_code == 200 and answer.headers["x-lifeline-target"] == "open"

    required = Gateway.build(_config(wall, {"max_censorship_gap": {"zh": 0.2}, "require_audit": True},
                                     data_dir=str(tmp_path)))  # fmt: skip
    assert required.router.permitted["chat"] == ["open"]
    looser = Gateway.build(_config(wall, {"max_censorship_gap": {"zh": 0.6}}, data_dir=str(tmp_path)))
    assert looser.router.permitted["chat"] == ["censor", "open", "never"]
    unconstrained = Gateway.build(_config(wall, {}, data_dir=str(tmp_path / "empty")))
    assert unconstrained.router.permitted["chat"] == ["censor", "open", "never"]


def test_the_constraint_reads_postgresql_too(wall: FaultWall, postgres_db_url: str) -> None:
    db = Database(url=postgres_db_url)
    try:
        _store(db)
    finally:
        db.close()
    built = Gateway.build(_config(wall, {"max_censorship_gap": {"zh": 0.2}}, database_url=postgres_db_url))
    assert built.router.permitted["chat"] == ["open", "never"]


@pytest.mark.parametrize(
    ("gaps", "constraints", "reason"),
    [
        ({"zh": 0.3}, {"max_censorship_gap": {"zh": 0.2}}, "censorship gap +0.30 in zh over +0.20 (latest audit)"),
        ({"zh": 0.2}, {"max_censorship_gap": {"zh": 0.2}}, None),  # at the limit: kept
        ({"en": 0.9}, {"max_censorship_gap": {"zh": 0.2}}, None),  # not audited in zh: kept
        ({"en": 0.0}, {"max_censorship_gap": {"zh": 0.2}, "require_audit": True}, "no stored audit in zh"),
        (None, {"require_audit": True}, "never audited (require_audit)"),
        ({"zh": None}, {"max_censorship_gap": {"zh": 0.2}}, None),  # no gap measurable: as never audited
    ],
)
def test_excludes_by_audit(
    gaps: dict[str, float | None] | None, constraints: dict[str, Any], reason: str | None
) -> None:
    found = Constraints.model_validate(constraints).excludes_by_audit(gaps)
    assert found == reason or (reason is not None and found is not None and found.startswith(reason))


def test_at_load_the_audit_constraints_are_not_checked(wall: FaultWall) -> None:
    cfg = _config(wall, {"max_censorship_gap": {"zh": 0.2}, "require_audit": True})
    assert cfg.permitted_targets(cfg.aliases["chat"])[0] == ["censor", "open", "never"]
    assert cfg.permitted_targets(cfg.aliases["chat"], {})[0] == []


def test_a_reload_reads_the_latest_audit(wall: FaultWall, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "lifeline.yaml"
    write(path, {
        "targets": {name: wall_target(wall, "speech?style=open") for name in ("censor", "open")},
        "aliases": {"chat": {"targets": ["censor", "open"], "constraints": {"max_censorship_gap": {"zh": 0.2}}}},
        "admin": {"master_key": MASTER},
        "accounting": {"data_dir": str(tmp_path / "data")},
    })  # fmt: skip

    def answered_by(gw: Any) -> str:
        body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
        answer = httpx.post(f"{gw.base_url}/chat/completions", json=body, headers=AUTH)
        assert answer.status_code == 200, answer.text
        return str(answer.headers["x-lifeline-target"])

    with serving(path, monkeypatch) as gw:
        assert answered_by(gw) == "censor"  # never audited: kept, and first
        db = Database(data_dir=tmp_path / "data")
        try:
            store_audit(db, "speech-cn", [_row("censor", "zh", 0.5), _row("open", "zh", 0.0)])
        finally:
            db.close()
        assert answered_by(gw) == "censor"  # read once per gateway, not per request
        assert reload(gw).status_code == 200
        assert answered_by(gw) == "open"
