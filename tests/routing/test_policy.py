"""The failover table: `decide()` for every failover class, and backoff with equal jitter."""

from __future__ import annotations

import random

import pytest

from lifeline.config.schema import Alias, RetryPolicy
from lifeline.errors import (
    ContentFiltered,
    ContextLengthExceeded,
    UpstreamCutOff,
    UpstreamError,
    UpstreamModelNotFound,
    UpstreamOverloaded,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamSilent,
    UpstreamUnavailable,
)
from lifeline.providers.base import Deadline
from lifeline.routing.policy import Decision, Step, backoff, decide

POLICY = RetryPolicy(max_retries=2, rate_limit_retries=1, backoff_base=0.1, backoff_max=0.4, retry_after_cap=5.0)
ALIAS = Alias(targets=["a", "b"])
FILTER_ALIAS = Alias(targets=["a", "b"], failover_on_content_filter=True)


def far() -> Deadline:
    return Deadline.after(60)


def run_decide(
    error: UpstreamError,
    retries: int = 0,
    alias: Alias = ALIAS,
    deadline: Deadline | None = None,
    policy: RetryPolicy = POLICY,
) -> Decision:
    return decide(error, retries, policy, alias, deadline or far(), random.Random(7))


# --- backoff ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("retry_number", "step"), [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.4), (10, 0.4)])
def test_backoff_equal_jitter_bounds(retry_number: int, step: float) -> None:
    rng = random.Random(1234)
    values = [backoff(retry_number, POLICY, rng) for _ in range(500)]
    assert all(step / 2 <= v <= step for v in values)
    # it is jittered, not constant: the spread covers most of the half-step
    assert max(values) - min(values) > step / 2 * 0.8


def test_backoff_retry_zero_treated_as_first() -> None:
    rng = random.Random(1)
    assert all(0.05 <= backoff(0, POLICY, rng) <= 0.1 for _ in range(50))


def test_backoff_capped_at_backoff_max() -> None:
    policy = RetryPolicy(backoff_base=1.0, backoff_max=2.5)
    rng = random.Random(99)
    values = [backoff(30, policy, rng) for _ in range(200)]
    assert max(values) <= 2.5
    assert min(values) >= 1.25


def test_backoff_reproducible_with_seed() -> None:
    first = [backoff(2, POLICY, random.Random(42)) for _ in range(3)]
    again = [backoff(2, POLICY, random.Random(42)) for _ in range(3)]
    assert first == again


# --- decide -----------------------------------------------------------------------------------------


def test_transient_error_retried_with_backoff() -> None:
    decision = run_decide(UpstreamUnavailable("x"), retries=0)
    assert decision.step is Step.RETRY
    assert 0.05 <= decision.delay <= 0.1
    second = run_decide(UpstreamUnavailable("x"), retries=1)
    assert second.step is Step.RETRY
    assert 0.1 <= second.delay <= 0.2


def test_transient_error_out_of_retries_moves_on() -> None:
    assert run_decide(UpstreamUnavailable("x"), retries=2) == Decision(Step.NEXT)


def test_no_retries_configured() -> None:
    policy = RetryPolicy(max_retries=0, rate_limit_retries=0)
    assert run_decide(UpstreamUnavailable("x"), policy=policy).step is Step.NEXT
    assert run_decide(UpstreamRateLimited("x"), policy=policy).step is Step.NEXT


@pytest.mark.parametrize(
    "error",
    [
        UpstreamCutOff("x"),
        UpstreamModelNotFound("x"),
        UpstreamOverloaded("x"),
        UpstreamSilent("x"),
        ContextLengthExceeded("x"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_no_retry_classes_move_on(error: UpstreamError) -> None:
    assert run_decide(error, retries=0) == Decision(Step.NEXT)


def test_client_error_returned() -> None:
    assert run_decide(UpstreamRejected("x"), retries=0) == Decision(Step.RETURN)


def test_content_filter_returned_without_opt_in() -> None:
    assert run_decide(ContentFiltered("x"), alias=ALIAS) == Decision(Step.RETURN)


def test_content_filter_fails_over_with_opt_in() -> None:
    assert run_decide(ContentFiltered("x"), alias=FILTER_ALIAS) == Decision(Step.NEXT)


def test_retry_after_within_cap_is_waited_out() -> None:
    assert run_decide(UpstreamRateLimited("x", retry_after=1.5)) == Decision(Step.RETRY, 1.5)


def test_retry_after_at_the_cap_is_waited_out() -> None:
    assert run_decide(UpstreamRateLimited("x", retry_after=5.0)) == Decision(Step.RETRY, 5.0)


def test_retry_after_over_cap_moves_on() -> None:
    assert run_decide(UpstreamRateLimited("x", retry_after=5.01)) == Decision(Step.NEXT)


def test_second_429_with_retry_after_moves_on() -> None:
    assert run_decide(UpstreamRateLimited("x", retry_after=0.5), retries=1) == Decision(Step.NEXT)


def test_429_without_retry_after_backs_off_then_moves_on() -> None:
    first = run_decide(UpstreamRateLimited("x"), retries=0)
    assert first.step is Step.RETRY
    assert 0.05 <= first.delay <= 0.1
    assert run_decide(UpstreamRateLimited("x"), retries=1) == Decision(Step.NEXT)


def test_retry_after_longer_than_the_deadline_moves_on() -> None:
    deadline = Deadline.after(1.0)
    assert run_decide(UpstreamRateLimited("x", retry_after=3.0), deadline=deadline) == Decision(Step.NEXT)


def test_backoff_longer_than_the_deadline_moves_on() -> None:
    policy = RetryPolicy(backoff_base=10, backoff_max=10, max_retries=3)
    decision = run_decide(UpstreamUnavailable("x"), deadline=Deadline.after(2.0), policy=policy)
    assert decision == Decision(Step.NEXT)


def test_expired_deadline_never_waits() -> None:
    decision = run_decide(UpstreamRateLimited("x", retry_after=0.0), deadline=Deadline.after(-1))
    assert decision == Decision(Step.NEXT)
