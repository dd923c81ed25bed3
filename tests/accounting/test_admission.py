"""The accounting service's admission, in process: the order of its checks, and that a request refused by a
later check (its budget) or abandoned during one leaves no trace in the key's rate limits (issue #15.10)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

import lifeline.accounting.service as service
from lifeline.accounting.keys import VirtualKey
from lifeline.accounting.service import Accounting
from lifeline.errors import BudgetExceeded, RateLimitExceeded
from lifeline.metrics import Metrics
from tests.conftest import make_config

T = TypeVar("T")
DOLLAR_A_TOKEN = {"input": 1_000_000, "output": 1_000_000}
HELLO = {"model": "chat", "messages": [{"role": "user", "content": "hello there"}]}


@pytest.fixture
def accounting(tmp_path: Path) -> Accounting:
    """An accounting service with virtual keys, limits in process and SQLite in tmp_path; `run` starts it."""
    target = {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-x", "model": "m"}
    config = make_config(
        {"only": {**target, "price": DOLLAR_A_TOKEN}},
        auth={"enabled": True},
        accounting={"data_dir": str(tmp_path), "ledger": {"enabled": False}},
    )
    return Accounting(config, Metrics())


def run(accounting: Accounting, body: Callable[[], Awaitable[T]]) -> T:
    """`body` with the service started and closed around it, on one event loop."""

    async def main() -> T:
        await accounting.start()
        try:
            return await body()
        finally:
            await accounting.close()

    return asyncio.run(main())


def new_key(accounting: Accounting, **fields: Any) -> VirtualKey:
    key, _ = accounting.store.create("test", **fields)
    return key


def test_a_budget_refusal_takes_no_request_slot(accounting: Accounting) -> None:
    async def main() -> list[str]:
        key = new_key(accounting, rpm=2, budget_usd=250, budget_period="total")
        outcomes = []
        for max_tokens in (1000, 1000, 1000, 12, 12, 12):
            try:
                await accounting.admit(key, "chat", HELLO, max_tokens, "req")
                outcomes.append("admitted")
            except (BudgetExceeded, RateLimitExceeded) as exc:
                outcomes.append(exc.code)
        return outcomes

    # $1,000 of answer is over the $250 budget; the two small ones ($99 each at most) fit it and the key's
    # 2 a minute; the third is refused for its rate, not because of the three refusals before it
    assert run(accounting, main) == ["budget_exceeded"] * 3 + ["admitted", "admitted", "rate_limit_exceeded"]


def test_a_client_leaving_during_the_budget_check_takes_no_request_slot(
    accounting: Accounting, monkeypatch: pytest.MonkeyPatch
) -> None:
    reading, release = threading.Event(), threading.Event()

    def slow_ledger(*args: Any) -> int:
        reading.set()
        release.wait(30)
        return 0

    monkeypatch.setattr(service, "spent_since", slow_ledger)

    async def main() -> None:
        key = new_key(accounting, rpm=1, tpm=1000, budget_usd=150, budget_period="total")
        leaving = asyncio.create_task(accounting.admit(key, "chat", HELLO, 12, "req-1"))
        await asyncio.to_thread(reading.wait, 30)  # admitted to the rate windows, reading the budget's spend
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        release.set()
        await accounting.limits.admit(key.id, rpm=1, tpm=1000, tokens_estimate=1000)  # the slot and tokens are free

    run(accounting, main)
