"""A pass's numbers: share served, who served, latency and TTFT percentiles, continuations, errors.

Pure functions of the `RequestResult`s, so every figure in a report can be recomputed from results.json.
Percentiles are nearest-rank: p90 is the smallest measured value that at least 90 % of the values do not
exceed — always a latency some request really had, never an interpolation between two.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from lifeline.drill.runner import PassResult, RequestResult

PERCENTILES = (50, 90, 99)

K = TypeVar("K")


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of `values` (any order); None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class Spread:
    """Percentiles of one measure over the requests that have it."""

    count: int
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        seen = list(values)
        p50, p90, p99 = (percentile(seen, p) for p in PERCENTILES)
        return cls(len(seen), p50, p90, p99, max(seen) if seen else None)

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "p50": self.p50, "p90": self.p90, "p99": self.p99, "max": self.max}


@dataclass(frozen=True, slots=True)
class ErrorGroup:
    """Failed requests sharing an error code."""

    code: str
    count: int
    statuses: tuple[int | None, ...]
    example: str


@dataclass(frozen=True, slots=True)
class Summary:
    total: int
    answered: int
    errors: int
    #: answers that stopped without a finish reason or [DONE] and without an error: a gateway bug
    incomplete: int
    #: answered requests by the target that answered (x-lifeline-target)
    served_by: dict[str, int]
    #: answered requests by the target that wrote the end of the answer (differs after a continuation)
    finished_by: dict[str, int]
    #: requests continued at least once
    continued: int
    #: every seam, (from, to) → how many
    continuations: dict[tuple[str, str], int]
    continuation_reasons: dict[str, int]
    error_groups: list[ErrorGroup]
    #: of answered requests: from sending to the end of the answer
    latency: Spread
    #: of answered streams: from sending to the first content
    ttft: Spread
    #: of every request, whatever its outcome (a failure's latency is how long the client waited to learn it)
    latency_all: Spread
    #: upstream attempts the gateway reported (x-lifeline-attempts), summed over requests with the header
    attempts: int
    #: requests that took more than one attempt before an answer began
    failed_over: int
    completion_tokens: int
    duration: float

    @property
    def share_served(self) -> float:
        return self.answered / self.total if self.total else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "answered": self.answered,
            "share_served": self.share_served,
            "errors": self.errors,
            "incomplete": self.incomplete,
            "served_by": self.served_by,
            "finished_by": self.finished_by,
            "continued": self.continued,
            "continuations": [{"from": s, "to": t, "count": n} for (s, t), n in self.continuations.items()],
            "continuation_reasons": self.continuation_reasons,
            "errors_by_code": [
                {"code": g.code, "count": g.count, "statuses": list(g.statuses), "example": g.example}
                for g in self.error_groups
            ],
            "latency_seconds": self.latency.as_dict(),
            "ttft_seconds": self.ttft.as_dict(),
            "latency_all_seconds": self.latency_all.as_dict(),
            "attempts": self.attempts,
            "failed_over": self.failed_over,
            "completion_tokens": self.completion_tokens,
            "duration_seconds": self.duration,
        }


def summarise(run: PassResult) -> Summary:
    results = run.results
    answered = [r for r in results if r.outcome == "answered"]
    seams = [c for r in answered for c in r.continued]
    return Summary(
        total=len(results),
        answered=len(answered),
        errors=sum(r.outcome == "error" for r in results),
        incomplete=sum(r.outcome == "incomplete" for r in results),
        served_by=_most_first(r.target or "?" for r in answered),
        finished_by=_most_first(r.finished_by or "?" for r in answered),
        continued=sum(bool(r.continued) for r in answered),
        continuations=_most_first((c.source, c.to) for c in seams),
        continuation_reasons=_most_first(c.reason or "?" for c in seams),
        error_groups=_error_groups(r for r in results if r.outcome == "error"),
        latency=Spread.of(r.latency for r in answered),
        ttft=Spread.of(r.ttft for r in answered if r.ttft is not None),
        latency_all=Spread.of(r.latency for r in results),
        attempts=sum(r.attempts or 0 for r in results),
        failed_over=sum((r.attempts or 0) > 1 for r in results),
        completion_tokens=sum(r.completion_tokens or 0 for r in answered),
        duration=run.duration,
    )


def _most_first(keys: Iterable[K]) -> dict[K, int]:
    return dict(Counter(keys).most_common())


def _error_groups(failed: Iterable[RequestResult]) -> list[ErrorGroup]:
    groups: dict[str, list[RequestResult]] = {}
    for result in failed:
        groups.setdefault(result.error_code or "unknown", []).append(result)
    return [
        ErrorGroup(
            code=code,
            count=len(members),
            statuses=tuple(sorted({m.status for m in members}, key=lambda s: -1 if s is None else s)),
            example=members[0].error_message or "",
        )
        for code, members in sorted(groups.items(), key=lambda item: -len(item[1]))
    ]
