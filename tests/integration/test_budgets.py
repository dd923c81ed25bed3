"""Budgets and rate limits under concurrency, through a real gateway with the fault wall upstream, with the
limits kept in process and in Redis: what was admitted and spent never passes a limit (the reservation is an
upper bound of the prompt's tokens, token-id input counted exactly), and a refused request counts against
no rate limit.

The wall counts a prompt's tokens by its words, as a real tokenizer does for short words; a prompt of
one-letter words is the case an estimate of ~4 characters a token undercounts by half.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from lifeline.accounting.records import NANO
from lifeline.testing import FaultWall
from lifeline.testing.gateway import RunningGateway
from tests.conftest import GatewayFactory, make_config, wall_target
from tests.integration.test_accounting import DOLLAR_A_TOKEN, MASTER, ledger_rows, new_key

#: 50 one-letter words: 99 characters, 50 tokens for the wall and for any real tokenizer
SHORT_WORDS = " ".join(["a"] * 50)
COMPLETION = 12  # what each answer is held to with max_tokens


@pytest.fixture(params=["memory", "redis"])
def limits(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The accounting settings for where the limits live: this process, or a fresh Redis (failing closed,
    so that a Redis problem fails the test rather than lifting the limits)."""
    if request.param == "redis":
        # closed: an unreachable Redis would refuse, and the counts below would not be the limits'; a generous
        # timeout, so that a busy machine's slow connect is not taken for an outage
        return {"redis_url": request.getfixturevalue("fresh_redis_url"), "redis_failure": "closed", "redis_timeout": 30}
    return {}


def config(wall: FaultWall, tmp_path: Path, limits: dict[str, Any], **extra: Any) -> Any:
    targets = extra.pop("targets", {"only": wall_target(wall, "ok", price=DOLLAR_A_TOKEN)})
    return make_config(
        targets,
        aliases=extra.pop("aliases", None),
        retry={"max_retries": 0},
        admin={"master_key": MASTER},
        auth={"enabled": True},
        accounting={"data_dir": str(tmp_path), "ledger": {"commit_interval": 0.05}, **limits},
    )


def burst(gw: RunningGateway, secret: str, path: str, body: dict[str, Any], n: int = 100) -> list[httpx.Response]:
    """`n` identical requests at once."""

    async def main() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            return await asyncio.gather(
                *(
                    client.post(f"{gw.base_url}{path}", json=body, headers={"authorization": f"Bearer {secret}"})
                    for _ in range(n)
                )
            )

    return asyncio.run(main())


def answered_rows(gw: RunningGateway, key_id: str, answered: int) -> list[dict[str, Any]]:
    rows = [r for r in ledger_rows(gw, expect=answered) if r["key_id"] == key_id and r["outcome"] == "ok"]
    assert len(rows) == answered, "one ledger row per answer"
    return rows


@pytest.mark.parametrize("limit", ["budget", "tpm"])
def test_concurrent_short_word_prompts_never_pass_a_budget_or_a_tpm_limit(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path, limits: dict[str, Any], limit: str
) -> None:
    # $1 a token, so the budget in dollars and the TPM limit in tokens are the same number
    key = {"budget_usd": 1000, "budget_period": "total"} if limit == "budget" else {"tpm": 1000}
    body = {"model": "chat", "messages": [{"role": "user", "content": SHORT_WORDS}], "max_tokens": COMPLETION}
    with gateway(config(wall, tmp_path, limits)) as gw:
        key_id, secret = new_key(gw, **key)
        responses = burst(gw, secret, "/chat/completions", body)
        answered = [r for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code == 429]
        rows = answered_rows(gw, key_id, len(answered))
    assert len(answered) + len(refused) == 100
    assert answered and refused
    code = "budget_exceeded" if limit == "budget" else "rate_limit_exceeded"
    assert {r.json()["error"]["code"] for r in refused} == {code}
    assert all(r["prompt_tokens"] == 50 and r["completion_tokens"] == COMPLETION for r in rows)
    tokens = sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows)
    spent = sum(r["cost_nusd"] for r in rows)
    assert spent == tokens * NANO
    assert tokens <= 1000, f"{len(answered)} answers used {tokens} tokens of a limit of 1000"


def test_concurrent_short_word_messages_never_pass_a_budget(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path, limits: dict[str, Any]
) -> None:
    """/v1/messages reserves through the same bound as /v1/chat/completions."""
    body = {"model": "chat", "messages": [{"role": "user", "content": SHORT_WORDS}], "max_tokens": COMPLETION}
    with gateway(config(wall, tmp_path, limits)) as gw:
        key_id, secret = new_key(gw, budget_usd=1000, budget_period="total")
        responses = burst(gw, secret, "/messages", body)
        answered = [r for r in responses if r.status_code == 200]
        rows = answered_rows(gw, key_id, len(answered))
    refused = [r for r in responses if r.status_code == 429]
    assert answered and len(answered) + len(refused) == 100
    assert all("budget" in r.json()["error"]["message"].lower() for r in refused)
    assert all(r.json()["usage"]["input_tokens"] == 50 for r in answered)
    assert sum(r["cost_nusd"] for r in rows) <= 1000 * NANO


def test_embeddings_of_token_ids_are_reserved_at_their_length(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path, limits: dict[str, Any]
) -> None:
    targets = {"embedder": wall_target(wall, "ok", price=DOLLAR_A_TOKEN, embedding_space="wall-8")}
    aliases: dict[str, Any] = {"embed": {"kind": "embeddings", "targets": ["embedder"]}}
    token_ids = list(range(5000))  # the wall counts token-id input by its length, as providers do
    with gateway(config(wall, tmp_path, limits, targets=targets, aliases=aliases)) as gw:
        key_id, secret = new_key(gw, budget_usd=12_000, budget_period="total")
        single = burst(gw, secret, "/embeddings", {"model": "embed", "input": token_ids})
        key_id2, secret2 = new_key(gw, budget_usd=12_000, budget_period="total")
        batched = burst(gw, secret2, "/embeddings", {"model": "embed", "input": [token_ids[:2500]] * 2})
        rows = answered_rows(gw, key_id, sum(r.status_code == 200 for r in single))
        rows2 = answered_rows(gw, key_id2, sum(r.status_code == 200 for r in batched))
    for responses, key_rows in ((single, rows), (batched, rows2)):
        # each answer costs $5,000: two fit in $12,000, a third does not
        assert sorted(r.status_code for r in responses) == [200] * 2 + [429] * 98
        assert all(r["prompt_tokens"] == 5000 for r in key_rows)
        assert sum(r["cost_nusd"] for r in key_rows) == 10_000 * NANO


def test_refused_requests_do_not_count_against_the_rate_limits(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path, limits: dict[str, Any]
) -> None:
    def ask(gw: RunningGateway, secret: str, max_tokens: int) -> httpx.Response:
        body = {"model": "chat", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": max_tokens}
        return httpx.post(
            f"{gw.base_url}/chat/completions", json=body, headers={"authorization": f"Bearer {secret}"}, timeout=30
        )

    with gateway(config(wall, tmp_path, limits)) as gw:
        _, secret = new_key(gw, rpm=3, tpm=2000, budget_usd=150, budget_period="total")
        too_dear = [ask(gw, secret, max_tokens=1000) for _ in range(5)]  # $1,000 of answer for a $150 budget
        too_long = [ask(gw, secret, max_tokens=5000) for _ in range(5)]  # more tokens than 2,000 a minute
        small = [ask(gw, secret, max_tokens=COMPLETION) for _ in range(4)]
    assert {r.json()["error"]["code"] for r in too_dear} == {"budget_exceeded"}
    assert {r.json()["error"]["code"] for r in too_long} == {"rate_limit_exceeded"}
    assert [r.status_code for r in small] == [200, 200, 200, 429], "ten refusals took none of the 3 a minute"
    assert small[3].json()["error"]["code"] == "rate_limit_exceeded"
    assert "requests per minute" in small[3].json()["error"]["message"].lower()
