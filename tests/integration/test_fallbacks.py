"""Per-request fallbacks and the cost of a streamed answer, through a real gateway on loopback with the fault wall
upstream and the official SDKs as clients: the requested alias cut off (401) → the next alias the request
named answers, whole and streamed, on chat completions, the Responses API and Messages; a key that may not
use a fallback and an unknown fallback are refused before anything is sent; a client's own mistake is not
retried on a fallback. A streamed answer's `usage.cost` is the ledger row's cost, to the nano-dollar."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import openai
import orjson
import pytest
from openai import OpenAI

from lifeline.testing import FaultWall, wall_text
from lifeline.testing.gateway import RunningGateway
from tests.conftest import GatewayFactory, make_config, wall_target
from tests.integration.test_accounting import MASTER, MESSAGES, ledger_rows, new_key

ASK_COST = {"x-lifeline-include-cost": "true"}
PRICE = {"input": 1_000_000, "output": 3_000_000}  # USD per 1M tokens: $1 a prompt token, $3 a completion token
CUT_OFF = "status?code=401"  # a revoked key: a cut-off
REFUSED = "bad_request"  # the upstream says the request itself is wrong


def config(wall: FaultWall, tmp_path: Path, *, auth: bool = False) -> Any:
    targets = {
        "primary": wall_target(wall, CUT_OFF, price=PRICE),
        "backup": wall_target(wall, "ok", price=PRICE),
        "strict": wall_target(wall, REFUSED, price=PRICE),
    }
    return make_config(
        targets,
        aliases={"chat": ["primary"], "backup": ["backup"], "strict": ["strict"]},
        retry={"max_retries": 0},
        admin={"master_key": MASTER},
        auth={"enabled": auth},
        accounting={"data_dir": str(tmp_path), "ledger": {"commit_interval": 0.05}},
    )


def client(gw: RunningGateway, key: str = "unused") -> OpenAI:
    return OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=30)


def by_request(gw: RunningGateway, expect: int) -> dict[str, dict[str, Any]]:
    return {row["request_id"]: row for row in ledger_rows(gw, expect=expect)}


def attempts(row: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    return [(a["target"], a["outcome"], a.get("alias")) for a in orjson.loads(row["attempts"])]


def sent_upstream(wall: FaultWall) -> list[dict[str, Any]]:
    return [a.body or {} for a in wall.attempts]


def test_a_cut_off_alias_falls_back_to_the_next_one_the_request_named(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    with gateway(config(wall, tmp_path)) as gw:
        raw = client(gw).chat.completions.with_raw_response.create(
            model="chat", messages=MESSAGES, extra_body={"models": ["backup"]}
        )
        row = by_request(gw, 1)[raw.headers["x-request-id"]]
    completion = raw.parse()
    assert completion.choices[0].message.content == wall_text(12)
    assert (raw.headers["x-lifeline-alias"], raw.headers["x-lifeline-target"]) == ("backup", "backup")
    assert raw.headers["x-lifeline-attempts"] == "2"
    assert (row["alias"], row["target"], row["outcome"]) == ("backup", "backup", "ok")
    assert attempts(row) == [("primary", "cut_off", "chat"), ("backup", "ok", "backup")]
    assert [a.model for a in wall.attempts] == [CUT_OFF, "ok"]
    assert all("models" not in body and "fallbacks" not in body for body in sent_upstream(wall))


def test_a_stream_falls_back_and_its_usage_carries_the_ledgers_cost(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    with gateway(config(wall, tmp_path)) as gw:
        with client(gw).chat.completions.with_streaming_response.create(
            model="chat",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"fallbacks": ["backup"]},
            extra_headers=ASK_COST,
        ) as raw:
            headers = raw.headers
            chunks = list(raw.parse())
        row = by_request(gw, 1)[headers["x-request-id"]]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == wall_text(12)
    assert headers["x-lifeline-alias"] == "backup" and "x-lifeline-cost-usd" not in headers  # headers go first
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []
    assert (usage.prompt_tokens, usage.completion_tokens) == (row["prompt_tokens"], row["completion_tokens"])
    assert (row["alias"], row["streamed"]) == ("backup", True)
    assert row["cost_nusd"] > 0
    assert usage.model_extra is not None and usage.model_extra["cost"] == row["cost_nusd"] / 1e9
    assert all("fallbacks" not in body for body in sent_upstream(wall))


def test_a_responses_stream_falls_back_and_reports_the_ledgers_cost(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    with gateway(config(wall, tmp_path)) as gw:
        sdk = client(gw)
        whole = sdk.responses.create(model="chat", input="hello there", extra_body={"models": ["backup"]})
        events = list(
            sdk.responses.create(
                model="chat",
                input="hello there",
                stream=True,
                extra_body={"models": ["backup"]},
                extra_headers=ASK_COST,
            )
        )
        rows = ledger_rows(gw, expect=2)
    assert whole.output_text == wall_text(12)
    completed = events[-1]
    assert completed.type == "response.completed"
    usage = completed.response.usage
    assert usage is not None and usage.model_extra is not None
    assert [r["alias"] for r in rows] == ["backup", "backup"]
    assert usage.model_extra["cost"] == rows[1]["cost_nusd"] / 1e9 > 0


def test_a_messages_stream_falls_back_and_its_message_delta_carries_the_ledgers_cost(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    with gateway(config(wall, tmp_path)) as gw:
        claude = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)
        events = list(
            claude.messages.create(
                model="chat",
                max_tokens=64,
                messages=[{"role": "user", "content": "hello there"}],
                stream=True,
                extra_body={"fallbacks": [{"model": "backup"}]},
                extra_headers=ASK_COST,
            )
        )
        [row] = ledger_rows(gw, expect=1)
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta")
    assert text == wall_text(12)
    [delta] = [e for e in events if e.type == "message_delta"]
    assert row["alias"] == "backup"
    assert delta.usage.model_extra is not None and delta.usage.model_extra["cost"] == row["cost_nusd"] / 1e9 > 0


def test_a_fallback_the_key_may_not_use_is_refused_before_anything_is_sent(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    with gateway(config(wall, tmp_path, auth=True)) as gw:
        _, secret = new_key(gw, aliases=["chat"])
        with pytest.raises(openai.PermissionDeniedError) as refused:
            client(gw, secret).chat.completions.create(
                model="chat", messages=MESSAGES, extra_body={"models": ["backup"]}
            )
        claude = anthropic.Anthropic(base_url=gw.url, api_key=secret, max_retries=0)
        with pytest.raises(anthropic.PermissionDeniedError):
            claude.messages.create(
                model="chat",
                max_tokens=64,
                messages=[{"role": "user", "content": "hi"}],
                extra_body={"fallbacks": ["backup"]},
            )
        rows = ledger_rows(gw)
    assert refused.value.status_code == 403
    assert refused.value.body["param"] == "models"  # type: ignore[index]
    assert "backup" in refused.value.message
    assert wall.attempts == [] and rows == []


def test_an_unknown_fallback_is_a_clear_400(wall: FaultWall, gateway: GatewayFactory, tmp_path: Path) -> None:
    with gateway(config(wall, tmp_path)) as gw:
        with pytest.raises(openai.BadRequestError) as refused:
            client(gw).chat.completions.create(model="chat", messages=MESSAGES, extra_body={"fallbacks": ["nope"]})
        with pytest.raises(openai.BadRequestError) as streamed:
            client(gw).chat.completions.create(
                model="chat", messages=MESSAGES, stream=True, extra_body={"models": ["backup", "nope"]}
            )
    for error in (refused.value, streamed.value):
        assert error.status_code == 400 and error.code == "model_not_found"
        assert "'nope'" in error.message
    assert wall.attempts == []


def test_a_client_mistake_is_not_retried_on_a_fallback(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    with gateway(config(wall, tmp_path)) as gw:
        with pytest.raises(openai.BadRequestError):
            client(gw).chat.completions.create(model="strict", messages=MESSAGES, extra_body={"models": ["backup"]})
        [row] = ledger_rows(gw, expect=1)
    assert [a.model for a in wall.attempts] == [REFUSED]
    assert attempts(row) == [("strict", "rejected", "strict")]
