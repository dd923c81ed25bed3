"""The statistics of an eval, as pure functions: Wilson score intervals for proportions, nearest-rank
percentiles, and paired bootstrap intervals (seeded) for ratios to the baseline.

Every figure of a report comes from here, so each can be recomputed by hand from results.jsonl
(docs/eval.md "Statistics" shows how).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: the two-sided 95 % normal quantile
Z95 = 1.959963984540054
#: bootstrap resamples of a ratio's interval
RESAMPLES = 2000


@dataclass(frozen=True, slots=True)
class Proportion:
    """k of n, with its Wilson score interval (both None when n is 0)."""

    k: int
    n: int
    low: float | None
    high: float | None

    @property
    def rate(self) -> float | None:
        return self.k / self.n if self.n else None

    def as_dict(self) -> dict[str, float | int | None]:
        return {"k": self.k, "n": self.n, "rate": self.rate, "low": self.low, "high": self.high}


def wilson(k: int, n: int, z: float = Z95) -> Proportion:
    """Wilson's score interval of k successes in n trials: unlike p ± z·√(p(1-p)/n) it stays inside [0, 1]
    and does not collapse to a point at 0 of n or n of n, which small samples of good models produce."""
    if n <= 0:
        return Proportion(k, 0, None, None)
    if not 0 <= k <= n:
        raise ValueError(f"{k} successes in {n} trials")
    p = k / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    margin = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    return Proportion(k, n, max(0.0, centre - margin), min(1.0, centre + margin))


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (the drill's definition): a value some request really had."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass(frozen=True, slots=True)
class Ratio:
    """stat(candidate) / stat(baseline) over paired items, with a percentile bootstrap interval."""

    value: float | None
    low: float | None
    high: float | None
    pairs: int

    def as_dict(self) -> dict[str, float | int | None]:
        return {"value": self.value, "low": self.low, "high": self.high, "pairs": self.pairs}


Statistic = Callable[[Sequence[float]], float | None]


def paired_ratio(
    pairs: Sequence[tuple[float, float]], statistic: Statistic, *, seed: int, resamples: int = RESAMPLES
) -> Ratio:
    """The ratio of `statistic` of the candidate's values to the baseline's, and its 95 % interval from
    resampling the *pairs* (the same items on both sides, so that the items' own spread cancels out)."""
    if not pairs:
        return Ratio(None, None, None, 0)
    value = _ratio(pairs, statistic)
    rng = random.Random(seed)
    n = len(pairs)
    ratios: list[float] = []
    for _ in range(resamples):
        sample = [pairs[rng.randrange(n)] for _ in range(n)]
        ratio = _ratio(sample, statistic)
        if ratio is not None:
            ratios.append(ratio)
    if not ratios:
        return Ratio(value, None, None, n)
    return Ratio(value, percentile(ratios, 2.5), percentile(ratios, 97.5), n)


def _ratio(pairs: Sequence[tuple[float, float]], statistic: Statistic) -> float | None:
    top = statistic([c for c, _ in pairs])
    bottom = statistic([b for _, b in pairs])
    if top is None or bottom is None or bottom == 0:
        return None
    return top / bottom


def p50(values: Sequence[float]) -> float | None:
    return percentile(values, 50)


def p95(values: Sequence[float]) -> float | None:
    return percentile(values, 95)


def small_sample(n: int, minimum: int) -> bool:
    """Fewer items than the interval asked for needs to say anything useful (thresholds.min_sample)."""
    return n < minimum
