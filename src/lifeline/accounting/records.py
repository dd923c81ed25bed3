"""The ledger record: one per client request, written exactly once (and one per shadow call, marked so)."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Any

#: costs are kept as integers in nano-USD (1e-9 USD), so sums are exact
NANO = 1_000_000_000


# uuid4's version (4) and variant (RFC 4122) bits, set on 128 random bits
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


class RecordIds:
    """New record ids: 32 lowercase hex digits, each a valid version-4 UUID as `uuid.uuid4().hex` writes it,
    made without a system call (one record is made per request): a random base drawn once per process, its
    low 62 bits XORed with a counter. A forked worker draws a base of its own; two processes' ids meet only
    if their bases agree on 60 random bits (1 in 2^60)."""

    def __init__(self) -> None:
        self._renew()
        os.register_at_fork(after_in_child=self._renew)

    def _renew(self) -> None:
        self._base = (int.from_bytes(os.urandom(16), "big") & _UUID4_CLEAR) | _UUID4_SET
        self._counter = itertools.count(1)

    def new(self) -> str:
        return f"{self._base ^ next(self._counter):032x}"


_ids = RecordIds()


def new_id() -> str:
    """A new ledger record id (see `RecordIds`)."""
    return _ids.new()


def usd(nusd: int) -> float:
    return nusd / NANO


def nusd(usd_amount: float) -> int:
    return round(usd_amount * NANO)


@dataclass(slots=True)
class LedgerRecord:
    request_id: str
    key_id: str | None
    alias: str
    #: the target and model that answered (None when none did)
    target: str | None
    model: str | None
    #: "ok", "error" (no answer), "broken" (a stream failed after content), "client_closed"
    outcome: str
    #: the HTTP status the client got
    status: int
    #: every attempt: {"target", "outcome", "status", "latency"}; failed attempts cost nothing
    attempts: list[dict[str, Any]]
    prompt_tokens: int
    completion_tokens: int
    usage_estimated: bool
    cost_nusd: int
    ttft_ms: float | None
    latency_ms: float
    streamed: bool
    started_at: float
    finished_at: float
    #: a shadow call (a candidate sent a copy of a client's request; docs/eval.md), not a client request
    shadow: bool = False
    #: answered from the response cache ("hit" or "stale", a `CacheUse` value; no upstream cost); None otherwise
    cache: str | None = None
    id: str = field(default_factory=new_id)

    COLUMNS = (
        "id", "request_id", "key_id", "alias", "target", "model", "outcome", "status", "attempts",
        "prompt_tokens", "completion_tokens", "usage_estimated", "cost_nusd", "ttft_ms", "latency_ms",
        "streamed", "started_at", "finished_at", "shadow", "cache",
    )  # fmt: skip
