"""The statistics against values computed by hand (the formulas are in docs/eval.md "Statistics")."""

from __future__ import annotations

import pytest

from lifeline.eval.stats import mean, p50, p95, paired_ratio, percentile, wilson


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        (8, 10, 0.490, 0.943),  # the example
        (0, 10, 0.000, 0.278),  # no failure seen in 10 is not 0 %: up to 27.8 %
        (10, 10, 0.722, 1.000),
        (3, 4, 0.301, 0.954),
        (196, 200, 0.950, 0.992),
    ],
)
def test_wilson_interval_matches_hand_computed_bounds(k: int, n: int, low: float, high: float) -> None:
    interval = wilson(k, n)
    assert interval.low == pytest.approx(low, abs=5e-4)
    assert interval.high == pytest.approx(high, abs=5e-4)
    assert interval.rate == k / n


def test_wilson_of_nothing_has_no_interval_and_impossible_counts_are_refused() -> None:
    assert wilson(0, 0).low is None and wilson(0, 0).rate is None
    with pytest.raises(ValueError):
        wilson(5, 4)


def test_nearest_rank_percentiles_are_values_that_occurred() -> None:
    values = [40.0, 10.0, 30.0, 20.0]
    assert percentile(values, 50) == 20.0  # ceil(0.5 * 4) = 2nd smallest
    assert p95(values) == 40.0
    assert p50([7.0]) == 7.0
    assert percentile([], 50) is None
    assert mean([1.0, 2.0, 6.0]) == 3.0


def test_paired_ratio_of_a_constant_factor_has_a_point_interval() -> None:
    pairs = [(2.0 * b, b) for b in (1.0, 3.0, 5.0, 8.0, 13.0)]
    ratio = paired_ratio(pairs, mean, seed=1)
    assert ratio.value == pytest.approx(2.0)
    assert ratio.low == pytest.approx(2.0) and ratio.high == pytest.approx(2.0)
    assert ratio.pairs == 5


def test_paired_ratio_is_seeded_and_brackets_its_point_estimate() -> None:
    pairs = [
        (c, b) for c, b in zip([12.0, 9.0, 15.0, 11.0, 30.0, 8.0], [10.0, 10.0, 10.0, 10.0, 10.0, 10.0], strict=True)
    ]
    first, again, other = (paired_ratio(pairs, p50, seed=s) for s in (7, 7, 8))
    assert first == again
    assert first.value == pytest.approx(1.1)  # p50 of the candidate's values is 11, the baseline's 10
    assert first.low is not None and first.high is not None
    assert first.low <= first.value <= first.high
    assert first.low < first.high
    assert other.value == first.value


def test_paired_ratio_without_pairs_or_with_a_zero_baseline_is_none() -> None:
    assert paired_ratio([], mean, seed=0).value is None
    assert paired_ratio([(1.0, 0.0), (2.0, 0.0)], mean, seed=0).value is None
