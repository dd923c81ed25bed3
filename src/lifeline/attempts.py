"""What became of each attempt at a target, as types: an `Outcome`, a `SkipReason` for a target that was not
tried, an `Attempt` per target in the order they happened, and one request's `AttemptLog`; and `CacheUse`, for
an answer that came from the response cache instead.

The router writes the log; the request path reads its counts (`tries` for the x-lifeline-attempts header,
`summary` for error messages); the ledger stores it as `as_ledger()` words it. Nothing matches an outcome or
a skip reason by its wording: the words exist only in that serialisation (and `from_ledger`, its inverse).
This module sits beside errors.py, below the router, because every UpstreamError carries its Outcome and
the accounting reads the log, and neither may import the router.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any


class Outcome(enum.Enum):
    """How one attempt at one target ended. The value is its name in the ledger, the metrics and the traces."""

    OK = "ok"
    #: a stream that broke elsewhere was continued here (mid-stream continuation)
    CONTINUED = "continued"
    #: a stream that broke elsewhere was restarted here, and its regenerated text matched what the client
    #: had: only the remainder was sent (replay-verified restart)
    REPLAYED = "replayed"
    #: a replay-verified restart whose regenerated text differed from what the client had: nothing of it
    #: was sent (no verdict on the target: it answered, differently)
    DIVERGED = "diverged"
    #: a target of unknown prefill support refused to continue an assistant prefix (a 400): from then on
    #: it is not asked to continue
    PREFILL_REFUSED = "prefill_refused"
    #: a hedged attempt cancelled because its rival answered first: no verdict on the target
    HEDGE_LOST = "hedge_lost"
    #: not tried at all; the attempt's `skip` says why
    SKIPPED = "skipped"
    #: the client left (or the gateway failed) mid-attempt: traces only, never a record
    CANCELLED = "cancelled"
    #: the relayed stream ended with the client gone
    CLIENT_CLOSED = "client_closed"
    # The failures, one per UpstreamError class in errors.py.
    ERROR = "error"
    UNAVAILABLE = "unavailable"
    RATE_LIMITED = "rate_limited"
    CUT_OFF = "cut_off"
    MODEL_NOT_FOUND = "model_not_found"
    CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
    CONTENT_FILTER = "content_filter"
    REJECTED = "rejected"
    SILENT = "silent"
    OVERLOADED = "overloaded"
    POOL_FULL = "pool_full"
    #: a stream broke after content reached the client (and was not continued)
    BROKEN = "broken"

    @property
    def answered(self) -> bool:
        """Whether the target produced the answer (or its continuation) on this attempt."""
        return self in _ANSWERED

    @property
    def busy(self) -> bool:
        """Busy, come back later — rather than broken."""
        return self in _BUSY


_ANSWERED = frozenset({Outcome.OK, Outcome.CONTINUED, Outcome.REPLAYED})
_BUSY = frozenset({Outcome.RATE_LIMITED, Outcome.OVERLOADED, Outcome.POOL_FULL})


class SkipReason(enum.Enum):
    """Why a target was not tried. The value is its wording in the ledger and in error messages."""

    DRAINED = "drained"
    RATE_LIMITED = "rate limited"
    PROBE_IN_FLIGHT = "circuit half-open, probe in flight"
    CIRCUIT_OPEN = "circuit open"
    NO_TOOLS = "no tool calls"
    NO_JSON_SCHEMA = "no json_schema response format"
    NO_IMAGES = "no image input"
    #: the request's estimated size exceeds the target's context window (the detail gives the numbers)
    CONTEXT_WINDOW = "context window"
    #: a target with a larger window refused the request for its length: this one is no larger
    CONTEXT_TOO_SMALL = "context window too small"
    #: the request asks for several choices (n > 1) and the target returns one
    ONE_CHOICE = "one choice only (n=1)"
    #: a Responses request offers a built-in tool (web_search …) the target does not run: only a target that
    #: passes Responses through natively and lists the tool (responses_tools) can serve it
    NO_BUILTIN_TOOLS = "no built-in Responses tool:"


class CacheUse(enum.Enum):
    """How an answer came from an alias's response cache instead of a target (accounting/cache.py). The value is
    its word in the ledger's `cache` column and the `x-lifeline-cache` response header."""

    #: a deterministic request answered from the cache, no target asked
    HIT = "hit"
    #: every target failed, and the last good answer to this exact request was served
    STALE = "stale"


_SKIPPED = Outcome.SKIPPED.value + ": "


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt at one target, or the record that it was skipped (then `skip` is set, the rest empty)."""

    target: str
    outcome: Outcome
    #: the upstream's HTTP status, when it said anything (200 for an answer)
    status: int | None = None
    #: seconds to the answer (to the first content for a stream), or to the failure
    latency: float = 0.0
    skip: SkipReason | None = None
    #: the particulars of a skip reason, e.g. a context window's numbers
    detail: str = ""
    #: the alias the attempt was made for, in a request that named fallback aliases ('' otherwise)
    alias: str = ""

    def __post_init__(self) -> None:
        if (self.skip is not None) != (self.outcome is Outcome.SKIPPED):
            raise ValueError("an attempt has a skip reason exactly when it was skipped")

    @classmethod
    def skipped(cls, target: str, reason: SkipReason, detail: str = "") -> Attempt:
        return cls(target, Outcome.SKIPPED, skip=reason, detail=detail)

    @property
    def tried(self) -> bool:
        """Whether the target was sent the request (a skipped target was not)."""
        return self.outcome is not Outcome.SKIPPED

    @property
    def reason(self) -> str:
        """The skip reason in words, with its particulars ("context window 10 < ~50 tokens needed"); empty
        for a target that was tried."""
        if self.skip is None:
            return ""
        return self.skip.value + (f" {self.detail}" if self.detail else "")

    @property
    def why(self) -> str:
        """The outcome in words: its name, or for a skip "skipped: <reason>"."""
        return self.outcome.value if self.skip is None else _SKIPPED + self.reason

    def as_ledger(self) -> dict[str, Any]:
        row = {"target": self.target, "outcome": self.why, "status": self.status, "latency": round(self.latency, 4)}
        if self.alias:
            row["alias"] = self.alias
        return row

    @classmethod
    def from_ledger(cls, row: dict[str, Any]) -> Attempt:
        """The inverse of `as_ledger` (an unknown outcome reads as a plain error)."""
        target, words = str(row.get("target", "")), str(row.get("outcome", ""))
        alias = str(row.get("alias") or "")
        if words.startswith(_SKIPPED):
            reason, detail = _skip_from_words(words[len(_SKIPPED) :])
            return replace(cls.skipped(target, reason, detail), alias=alias)
        outcome = _OUTCOMES.get(words, Outcome.ERROR)
        status = row.get("status")
        latency = float(row.get("latency") or 0.0)
        return cls(target, outcome, status if isinstance(status, int) else None, latency, alias=alias)


_OUTCOMES = {o.value: o for o in Outcome if o is not Outcome.SKIPPED}
# Longest first, so that "context window too small" is not read as "context window" with a detail.
_REASONS = sorted(SkipReason, key=lambda r: len(r.value), reverse=True)


def _skip_from_words(words: str) -> tuple[SkipReason, str]:
    for reason in _REASONS:
        if words == reason.value:
            return reason, ""
        if words.startswith(reason.value + " "):
            return reason, words[len(reason.value) + 1 :]
    raise ValueError(f"not a skip reason: {words!r}")


@dataclass(slots=True)
class AttemptLog:
    """One request's attempts, in the order they happened; the answering one, if any, is the last."""

    attempts: list[Attempt] = field(default_factory=list)

    def append(self, attempt: Attempt) -> None:
        self.attempts.append(attempt)

    def extend(self, other: AttemptLog) -> None:
        self.attempts.extend(other.attempts)

    def for_alias(self, alias: str, start: int = 0) -> None:
        """Mark the attempts from `start` on as made for `alias` (a request that named fallback aliases)."""
        self.attempts[start:] = [replace(a, alias=alias) for a in self.attempts[start:]]

    @property
    def aliased(self) -> bool:
        """Whether the attempts say which alias each was made for (a request that named fallbacks)."""
        return any(a.alias for a in self.attempts)

    def relabel_last(self, outcome: Outcome) -> None:
        """Say what the last attempt turned out to be, once the router knows more than its status (a 400
        that refused a prefix, a replay that diverged)."""
        if self.attempts:
            self.attempts[-1] = replace(self.attempts[-1], outcome=outcome)

    def __iter__(self) -> Iterator[Attempt]:
        return iter(self.attempts)

    def __len__(self) -> int:
        return len(self.attempts)

    def __getitem__(self, index: int) -> Attempt:
        return self.attempts[index]

    @property
    def last(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def tries(self) -> int:
        """Attempts that reached a target (skipped targets not counted): the x-lifeline-attempts header."""
        return sum(1 for a in self.attempts if a.tried)

    @property
    def failed(self) -> int:
        """Tries that were not a plain answer: failures, hedges lost, continuations (a stream broke before
        each) and a relayed stream that broke or lost its client — what makes an answer a failover."""
        return sum(1 for a in self.attempts if a.tried and a.outcome is not Outcome.OK)

    @property
    def tried_targets(self) -> set[str]:
        return {a.target for a in self.attempts if a.tried}

    @property
    def all_busy(self) -> bool:
        """Whether something was tried and every try found its target busy (rate limits, full queues)."""
        tried = [a for a in self.attempts if a.tried]
        return bool(tried) and all(a.outcome.busy for a in tried)

    @property
    def summary(self) -> str:
        """For error messages: "a: unavailable (503); b: skipped: circuit open"."""
        return (
            "; ".join(f"{a.target}: {a.why}" + (f" ({a.status})" if a.status else "") for a in self.attempts) or "none"
        )

    def ended(self, outcome: Outcome) -> AttemptLog:
        """This log with the answering attempt's outcome replaced by how its relayed stream ended (broken,
        the client gone); the same log when the stream ended well. The answering attempt is the last that
        answered: attempts after it found no way to continue the answer."""
        if outcome is Outcome.OK or not self.attempts:
            return self
        at = next((i for i in range(len(self.attempts) - 1, -1, -1) if self.attempts[i].outcome.answered), -1)
        attempts = list(self.attempts)
        attempts[at] = replace(attempts[at], outcome=outcome)
        return AttemptLog(attempts)

    def as_ledger(self) -> list[dict[str, Any]]:
        """The ledger's form: [{"target", "outcome", "status", "latency"}], a skip as "skipped: <reason>"; in a
        request that named fallback aliases, each also says its "alias"."""
        return [a.as_ledger() for a in self.attempts]

    @classmethod
    def from_ledger(cls, rows: list[dict[str, Any]]) -> AttemptLog:
        return cls([Attempt.from_ledger(row) for row in rows])
