"""Capture and shadow traffic through a real gateway on loopback, with fault-wall upstreams and the capture
store in SQLite (and PostgreSQL where it says so): what is captured, what is not, what a shadow call does
and never does to the client, its budget and the ledger."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import typer
from typer.testing import CliRunner

from lifeline.accounting.captures import iter_items
from lifeline.accounting.db import Database
from lifeline.accounting.ledger import spent_since
from lifeline.accounting.service import DEFAULT_COMPLETION_RESERVE
from lifeline.cli.capture import register
from lifeline.errors import DatabaseUnavailable
from lifeline.protocol.usage import reservation_prompt_tokens
from lifeline.testing import FaultWall
from lifeline.testing.gateway import RunningGateway
from tests.conftest import GatewayFactory, make_config, wall_target
from tests.integration.test_accounting import DOLLAR_A_TOKEN, MASTER, new_key

INCUMBENT = "ok?who=incumbent"
CANDIDATE = "ok?who=candidate"
MESSAGES = [{"role": "user", "content": "hello there, write to ann@example.org"}]


def config(
    wall: FaultWall,
    tmp_path: Path,
    *,
    capture: dict[str, Any] | None = None,
    shadow: dict[str, Any] | None = None,
    candidate: str = CANDIDATE,
    database_url: str | None = None,
    auth: bool = False,
    incumbent: str = INCUMBENT,
    candidate_extra: dict[str, Any] | None = None,
    captures: dict[str, Any] | None = None,
) -> Any:
    alias: dict[str, Any] = {"targets": ["incumbent"]}
    if capture is not None:
        alias["capture"] = capture
    if shadow is not None:
        alias["shadow"] = {"candidates": ["candidate"], "max_usd_per_day": 1_000_000, **shadow}
    accounting: dict[str, Any] = {
        "data_dir": str(tmp_path),
        "ledger": {"commit_interval": 0.05},
        "captures": {"commit_interval": 0.05, **(captures or {})},
    }
    if database_url:
        accounting["database_url"] = database_url
    return make_config(
        {
            "incumbent": wall_target(wall, incumbent, price=DOLLAR_A_TOKEN),
            "candidate": wall_target(wall, candidate, price=DOLLAR_A_TOKEN, **(candidate_extra or {})),
        },
        aliases={"chat": alias},
        retry={"max_retries": 0},
        admin={"master_key": MASTER},
        auth={"enabled": auth},
        accounting=accounting,
    )


def ask(gw: RunningGateway, secret: str | None = None, path: str = "/chat/completions", **extra: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {secret}"} if secret else {}
    body = {"model": "chat", "messages": MESSAGES, **extra}
    return httpx.post(f"{gw.base_url}{path}", json=body, headers=headers, timeout=60)


def wait_for(condition: Callable[[], Any], what: str) -> Any:
    """Poll `condition` until it returns something truthy (a guard against hanging, not a measure of speed)."""
    for _ in range(1500):
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"never: {what}")


def items(gw: RunningGateway, **filters: Any) -> list[dict[str, Any]]:
    """The eval items of the gateway's capture store, once everything queued is committed."""
    accounting = gw.gateway.accounting
    assert accounting.captures.writer.flush(10)
    db = accounting.open_db()
    try:
        return list(iter_items(db, **filters))
    finally:
        db.close()


def shadowed_items(gw: RunningGateway, count: int, shadows: int = 1) -> list[dict[str, Any]]:
    def ready() -> list[dict[str, Any]] | None:
        found = items(gw)
        done = len(found) >= count and all(len(i.get("shadows", [])) >= shadows for i in found)
        return found if done else None

    return wait_for(ready, f"{count} capture(s) with {shadows} shadow answer(s)")  # type: ignore[no-any-return]


def metric(gw: RunningGateway, prefix: str) -> float:
    """The value of the /metrics line starting with `prefix` (0 when absent)."""
    for line in httpx.get(f"{gw.url}/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def ledger(gw: RunningGateway) -> list[dict[str, Any]]:
    accounting = gw.gateway.accounting
    assert accounting.ledger is not None and accounting.ledger.flush(10)
    columns = ("request_id", "key_id", "alias", "target", "outcome", "status", "cost_nusd", "shadow")
    rows = accounting.db.query(f"SELECT {', '.join(columns)} FROM ledger ORDER BY started_at")
    return [dict(zip(columns, row, strict=True)) for row in rows]


def cli() -> typer.Typer:
    """The `lifeline` app with the capture commands, as `lifeline` registers them."""
    root = typer.Typer()
    root.command("noop")(lambda: None)  # a second command keeps `capture` a group of its own
    register(root)
    return root


# --- capture -----------------------------------------------------------------------------------------


def test_whole_and_streamed_answers_are_captured_redacted_with_what_the_client_received(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    with gateway(config(wall, tmp_path, capture={})) as gw:
        whole = ask(gw, max_tokens=5)
        with httpx.stream(
            "POST",
            f"{gw.base_url}/chat/completions",
            json={"model": "chat", "messages": MESSAGES, "stream": True, "max_tokens": 6},
            timeout=60,
        ) as response:
            streamed_text = "".join(
                orjson.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                for line in response.iter_lines()
                if line.startswith("data: {") and orjson.loads(line[6:]).get("choices")
            )
        found = wait_for(lambda: len(items(gw)) == 2 and items(gw), "two captures")
    assert whole.status_code == 200
    first, second = found
    assert first["alias"] == "chat" and first["id"].startswith("cap_")
    assert first["request"]["messages"][0]["content"] == "hello there, write to [email]"
    assert first["baseline"]["target"] == "incumbent" and first["baseline"]["error"] is None
    message = first["baseline"]["response"]["choices"][0]["message"]
    assert message["content"] == whole.json()["choices"][0]["message"]["content"]
    assert first["baseline"]["cost_usd"] > 0 and "shadows" not in first
    assert second["request"]["stream"] is True
    assert second["baseline"]["response"]["object"] == "chat.completion"
    assert second["baseline"]["response"]["choices"][0]["message"]["content"] == streamed_text
    assert second["baseline"]["response"]["choices"][0]["finish_reason"] == "length"
    assert second["baseline"]["ttft_ms"] is not None


def test_messages_requests_are_captured_in_openai_form(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    with gateway(config(wall, tmp_path, capture={})) as gw:
        response = ask(gw, path="/messages", max_tokens=4)
        (item,) = wait_for(lambda: items(gw), "a capture")
    assert response.status_code == 200
    assert item["request"]["messages"][0]["role"] == "user"
    assert item["baseline"]["response"]["object"] == "chat.completion"
    assert item["baseline"]["response"]["choices"][0]["message"]["content"] == response.json()["content"][0]["text"]


def test_sampling_zero_captures_nothing_and_one_captures_everything(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    with gateway(config(wall, tmp_path / "zero", capture={"sample": 0})) as gw:
        assert all(ask(gw, max_tokens=2).status_code == 200 for _ in range(5))
        assert items(gw) == []
    with gateway(config(wall, tmp_path / "one", capture={"sample": 1})) as gw:
        assert all(ask(gw, max_tokens=2).status_code == 200 for _ in range(5))
        assert len(wait_for(lambda: len(items(gw)) == 5 and items(gw), "five captures")) == 5


def test_a_key_that_opts_out_is_neither_captured_nor_shadowed(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    with gateway(config(wall, tmp_path, capture={}, shadow={}, auth=True)) as gw:
        _, private = new_key(gw, metadata={"capture": False})
        _, public = new_key(gw)
        assert ask(gw, private, max_tokens=2).status_code == 200
        assert ask(gw, public, max_tokens=2).status_code == 200
        (item,) = shadowed_items(gw, 1)
        assert len(ledger(gw)) == 3  # two client requests and one shadow call
    assert item["baseline"]["target"] == "incumbent"
    assert len(wall.attempts_for(CANDIDATE)) == 1, "only the public key's request was shadowed"


def test_requests_larger_than_max_bytes_are_not_captured_and_are_counted(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    with gateway(config(wall, tmp_path, capture={"max_bytes": 200})) as gw:
        assert ask(gw, max_tokens=2, messages=[{"role": "user", "content": "x" * 500}]).status_code == 200
        assert ask(gw, max_tokens=2).status_code == 200
        assert len(wait_for(lambda: items(gw), "a capture")) == 1
        assert metric(gw, 'lifeline_captures_skipped_total{alias="chat",reason="too_large"}') == 1


def test_a_capture_store_outage_loses_no_request(wall: FaultWall, gateway: GatewayFactory, tmp_path: Path) -> None:
    with gateway(config(wall, tmp_path, capture={}, shadow={}, captures={"buffer_size": 2})) as gw:
        writer = gw.gateway.accounting.captures.writer

        def down() -> Database:
            raise DatabaseUnavailable("the capture store is down")

        writer._open_db = down
        writer._db = None  # the writer's connection is gone: every commit needs a new one, which fails
        responses = [ask(gw, max_tokens=2) for _ in range(4)]
        responses.append(ask(gw, max_tokens=2, stream=True))
        wait_for(lambda: writer.write_errors > 0, "a failed capture commit")
        rows = wait_for(lambda: len([r for r in ledger(gw) if not r["shadow"]]) == 5 and ledger(gw), "5 requests")
        assert metric(gw, "lifeline_capture_write_errors_total") >= 1
        # two captures wait in the buffer; the other three, and any shadow answer, were dropped and counted
        assert metric(gw, "lifeline_capture_dropped_total") >= 3
    assert [r.status_code for r in responses] == [200] * 5
    assert all(r["outcome"] == "ok" for r in rows if not r["shadow"])


# --- shadow ------------------------------------------------------------------------------------------


def test_the_clients_answer_is_complete_before_the_shadow_call_starts(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    paced = "ok?who=incumbent&tps=4&tokens=12"  # a stream under way for a while
    with gateway(config(wall, tmp_path, shadow={}, incumbent=paced)) as gw:
        body = {"model": "chat", "messages": MESSAGES, "stream": True}
        with httpx.stream("POST", f"{gw.base_url}/chat/completions", json=body, timeout=60) as response:
            lines = response.iter_lines()
            first = next(line for line in lines if line.startswith("data: {"))
            seen_mid_answer = len(wall.attempts_for(CANDIDATE))
            rest = [line for line in lines if line.startswith("data: ")]
            seen_at_end = len(wall.attempts_for(CANDIDATE))
        shadowed_items(gw, 1)
    assert first and rest[-1] == "data: [DONE]"
    assert seen_mid_answer == 0 and seen_at_end in (0, 1)
    order = [a.model for a in wall.attempts if a.model in (paced, CANDIDATE)]
    assert order == [paced, CANDIDATE], "the shadow call follows the client's answer"
    shadow = wall.attempts_for(CANDIDATE)[0]
    assert shadow.stream is False and shadow.body is not None and "stream_options" not in shadow.body


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_shadow_answers_are_stored_beside_the_incumbents_and_exported(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("postgres_db_url") if store == "postgres" else None
    with gateway(config(wall, tmp_path, shadow={}, database_url=url)) as gw:
        assert ask(gw, max_tokens=3).status_code == 200
        assert ask(gw, max_tokens=4, stream=True).status_code == 200
        shadowed_items(gw, 2)
        config_file = tmp_path / "lifeline.yaml"
        accounting: dict[str, Any] = {"data_dir": str(tmp_path)}
        if url:
            accounting["database_url"] = url
        config_file.write_text(
            orjson.dumps(
                {
                    "accounting": accounting,
                    "aliases": {"chat": {"targets": ["x"]}},
                    "targets": {"x": {"kind": "openai", "base_url": wall.base_url, "model": "ok"}},
                }
            ).decode()
        )
        out = tmp_path / "items.jsonl"
        result = CliRunner().invoke(
            cli(),
            [
                "capture",
                "export",
                "-c",
                str(config_file),
                "--alias",
                "chat",
                "--since",
                "2000-01-01",
                "--out",
                str(out),
            ],
        )
        rows = ledger(gw)
    assert result.exit_code == 0, result.output
    exported = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert len(exported) == 2 and len({i["id"] for i in exported}) == 2
    for item in exported:
        assert item["request"]["messages"] and item["alias"] == "chat"
        assert item["captured_at"].endswith("Z")
        (shadow,) = item["shadows"]
        assert shadow["target"] == "candidate" and shadow["error"] is None
        assert shadow["response"]["choices"][0]["message"]["content"]
        assert shadow["latency_ms"] > 0 and shadow["cost_usd"] > 0
    assert exported[0]["shadows"][0]["response"]["usage"]["completion_tokens"] == 3
    shadow_rows = [r for r in rows if r["shadow"]]
    assert len(shadow_rows) == 2 and {r["target"] for r in shadow_rows} == {"candidate"}
    assert all(r["key_id"] is None for r in shadow_rows)


def test_shadow_calls_never_touch_a_keys_budget(wall: FaultWall, gateway: GatewayFactory, tmp_path: Path) -> None:
    with gateway(config(wall, tmp_path, shadow={}, auth=True)) as gw:
        key_id, secret = new_key(gw, budget_usd=1000, budget_period="total")
        for _ in range(3):
            assert ask(gw, secret, max_tokens=4).status_code == 200
        shadowed_items(gw, 3)
        rows = ledger(gw)
        spent = spent_since(gw.gateway.accounting.db, key_id, 0)
        admin = {"authorization": f"Bearer {MASTER}"}
        clients = httpx.get(f"{gw.url}/admin/usage", headers=admin, timeout=30).json()["data"]
        shadowed = httpx.get(f"{gw.url}/admin/usage", headers=admin, params={"shadow": "true"}, timeout=30).json()[
            "data"
        ]
    client = [r for r in rows if not r["shadow"]]
    shadows = [r for r in rows if r["shadow"]]
    assert len(client) == 3 and len(shadows) == 3
    assert spent == sum(r["cost_nusd"] for r in client) and all(r["key_id"] is None for r in shadows)
    # the usage report shows client traffic, and shadow calls only when asked for
    assert clients[0]["requests"] == 3 and clients[0]["cost_usd"] * 1e9 == pytest.approx(spent)
    assert shadowed[0]["requests"] == 3


def test_a_shadow_failure_never_reaches_the_client(wall: FaultWall, gateway: GatewayFactory, tmp_path: Path) -> None:
    with gateway(config(wall, tmp_path, shadow={}, candidate="status?code=500")) as gw:
        response = ask(gw, max_tokens=3)
        (item,) = shadowed_items(gw, 1)
        assert metric(gw, 'lifeline_shadow_calls_total{alias="chat",candidate="candidate",outcome="error"}') == 1
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"]
    (shadow,) = item["shadows"]
    assert shadow["response"] is None and shadow["error"]["status"] >= 500
    assert len(wall.attempts_for("status?code=500")) == 1, "pinned: no retry, no failover"


def test_the_daily_cap_stops_shadowing(wall: FaultWall, gateway: GatewayFactory, tmp_path: Path) -> None:
    body = {"model": "chat", "messages": MESSAGES, "max_tokens": 5}
    # USD: the worst case of one call at $1 a token, so a second call (after the first cost > 0) would pass it
    cap = float(reservation_prompt_tokens(body) + (body["max_tokens"] or DEFAULT_COMPLETION_RESERVE))
    with gateway(config(wall, tmp_path, shadow={"max_usd_per_day": cap})) as gw:
        assert ask(gw, max_tokens=5).status_code == 200
        shadowed_items(gw, 1)
        for _ in range(2):
            assert ask(gw, max_tokens=5).status_code == 200
        wait_for(lambda: metric(gw, 'lifeline_shadow_dropped_total{alias="chat",reason="daily_cap"}') == 2, "2 drops")
        assert len(items(gw)) == 3
    assert len(wall.attempts_for(CANDIDATE)) == 1


def test_shadow_calls_beyond_the_concurrency_limit_are_dropped_and_counted(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    hanging = "hang?who=candidate"
    extra = {"timeouts": {"response": 60, "first_byte": 60}}
    with gateway(config(wall, tmp_path, shadow={"max_concurrency": 1}, candidate=hanging, candidate_extra=extra)) as gw:
        assert ask(gw, max_tokens=2).status_code == 200
        wait_for(lambda: wall.attempts_for(hanging), "the first shadow call at the wall")
        assert ask(gw, max_tokens=2).status_code == 200
        wait_for(lambda: metric(gw, 'lifeline_shadow_dropped_total{alias="chat",reason="concurrency"}') == 1, "a drop")
        assert len(wall.attempts_for(hanging)) == 1


def test_export_refuses_a_bad_date_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli(), ["capture", "export", "--since", "last tuesday", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: --since 'last tuesday' is not a date (write 2026-11-30 or 2026-11-30T18:00:00Z)"
    ]
    assert not (tmp_path / "x").exists()


# --- the whole workflow: capture → shadow → eval ------------------------------------------------------


def test_captured_and_shadowed_pairs_feed_lifeline_eval(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    """What the gateway captured (the incumbent's answers) is the baseline `lifeline eval --from-captures`
    compares a candidate against; the eval reads the same database through the config file."""
    from lifeline.cli.eval import register as register_eval

    with gateway(config(wall, tmp_path, capture={}, shadow={})) as gw:
        for n in range(3):
            assert ask(gw, max_tokens=3 + n).status_code == 200
        shadowed_items(gw, 3)
    config_file = tmp_path / "lifeline.yaml"
    config_file.write_text(
        orjson.dumps(
            {
                "accounting": {"data_dir": str(tmp_path)},
                "aliases": {"chat": {"targets": ["candidate"]}},
                "targets": {"candidate": {"kind": "openai", "base_url": wall.base_url, "model": CANDIDATE}},
                "eval": {"min_sample": 2},
            }
        ).decode()
    )
    root = typer.Typer()
    root.command("noop")(lambda: None)
    register_eval(root)
    out = tmp_path / "eval"
    before = len(wall.attempts_for(CANDIDATE))
    result = CliRunner().invoke(
        root,
        ["eval", "-c", str(config_file), "--from-captures", "--alias", "chat", "--candidates", "candidate",
         "--baseline", "captured", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    figures = orjson.loads((out / "results.json").read_bytes())
    (candidate,) = figures["candidates"]
    assert candidate["name"] == "candidate"
    assert candidate["outcomes"]["win_or_tie"]["n"] == 3  # the three captured pairs, each compared once
    assert len(wall.attempts_for(CANDIDATE)) - before == 3  # the eval called the candidate once per item
    assert (out / "report.html").exists() and (out / "report.md").exists()
