"""Two replicas — two `lifeline serve` processes on loopback — behind one PostgreSQL and one Redis: they
enforce one limit, not two; a cut-off seen by one opens the circuit for both; both write one ledger."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from lifeline.testing import FaultWall
from tests.integration.processes import replica

MASTER = "mk-replicas-master-key-000000"
MESSAGES = [{"role": "user", "content": "hi"}]


def ask(url: str, secret: str, alias: str = "chat") -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": alias, "messages": MESSAGES},
        headers={"authorization": f"Bearer {secret}"},
        timeout=30,
    )


def knows_key(url: str, secret: str) -> None:
    """Wait until the replica at `url` accepts `secret` (listing models costs no request of its limits)."""
    for _ in range(600):  # keys are refreshed in the background: a guard against hanging, not a measure
        if httpx.get(f"{url}/v1/models", headers={"authorization": f"Bearer {secret}"}).status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError("the replica never picked the key up")


def test_two_replicas_share_limits_circuits_and_the_ledger(
    wall: FaultWall, tmp_path: Path, postgres_db_url: str, fresh_redis_url: str
) -> None:
    config: dict[str, Any] = {
        "admin": {"master_key": MASTER},
        "auth": {"enabled": True},
        "retry": {"max_retries": 0},
        "accounting": {
            "database_url": postgres_db_url,
            "redis_url": fresh_redis_url,
            "key_refresh_interval": 0.2,
            "ledger": {"commit_interval": 0.05},
        },
        "targets": {
            "cut": {"kind": "openai", "base_url": wall.base_url, "model": "status?code=403"},
            "steady": {"kind": "openai", "base_url": wall.base_url, "model": "ok"},
        },
        "aliases": {"chat": {"targets": ["steady"]}, "guarded": {"targets": ["cut", "steady"]}},
    }
    with replica(config, tmp_path, "a") as a, replica(config, tmp_path, "b") as b:
        created = httpx.post(
            f"{a.url}/admin/keys",
            json={"name": "shared", "rpm": 4},
            headers={"authorization": f"Bearer {MASTER}"},
        )
        secret = created.json()["secret"]
        knows_key(b.url, secret)  # replica b picks the new key up at its next refresh

        # one limit of 4 requests a minute across both replicas, not 4 on each
        statuses = [ask(url, secret).status_code for url in (a.url, b.url) * 3]
        assert sorted(statuses) == [200] * 4 + [429] * 2
        assert statuses[:4] == [200] * 4

        # a cut-off seen by replica a opens the circuit on replica b too
        unlimited = httpx.post(
            f"{a.url}/admin/keys", json={"name": "free"}, headers={"authorization": f"Bearer {MASTER}"}
        ).json()["secret"]
        knows_key(a.url, unlimited)
        knows_key(b.url, unlimited)
        assert ask(a.url, unlimited, "guarded").headers["x-lifeline-target"] == "steady"
        for _ in range(600):  # wait for the news to reach b (a guard against hanging, not a measure)
            rows = httpx.get(f"{b.url}/admin/targets", headers={"authorization": f"Bearer {MASTER}"}).json()
            state = {r["target"]: r["state"] for r in rows["targets"]}
            if state["cut"] == "open":
                break
            time.sleep(0.05)
        assert state["cut"] == "open"
        on_b = ask(b.url, unlimited, "guarded")
        assert on_b.headers["x-lifeline-target"] == "steady"
        assert on_b.headers["x-lifeline-attempts"] == "1"
        assert len(wall.attempts_for("status?code=403")) == 1  # b never knocked on the cut-off target

    # both replicas drained into the one ledger: 4 admitted + 2 on the guarded alias
    with psycopg.connect(postgres_db_url) as conn:
        count = conn.execute("SELECT count(*) FROM ledger").fetchone()
    assert count is not None and count[0] == 6
