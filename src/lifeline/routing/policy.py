"""The failover table as data: what the router does after a failed attempt, and how long it waits.

failover class   action
RETRY            same target again after backoff with jitter (max_retries), then the next target
RATE_LIMITED     Retry-After within the deadline and the cap: wait it out and retry the same target;
                 no Retry-After: back off with jitter (rate_limit_retries), then the next target
CUT_OFF          no retry; the circuit opens for a long cooldown; the next target
NEXT             no retry; the next target (404 model not found)
BUSY             no retry; the next target; not counted against the circuit (a full engine queue, a full
                 connection pool)
CONTEXT          no retry; the next target with a larger configured context window, else the error
CONTENT_FILTER   the provider's refusal goes back to the client, unless the alias opts in to failover
SILENT           a silent target is not retried; the next target
CLIENT           the client's mistake: returned as is, no failover
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from lifeline.accounting.pricing import PriceBook
from lifeline.config.schema import Alias, RetryPolicy
from lifeline.errors import Failover, UpstreamError
from lifeline.providers.base import Deadline
from lifeline.routing.health import Health


class Step(enum.Enum):
    RETRY = "retry"  # the same target again, after `delay`
    NEXT = "next"  # the next target
    RETURN = "return"  # stop: the error goes back to the client


@dataclass(frozen=True, slots=True)
class Decision:
    step: Step
    delay: float = 0.0


def backoff(retry_number: int, policy: RetryPolicy, rng: random.Random | None = None) -> float:
    """Exponential backoff with "equal jitter": half the step is fixed, half random, so retries from many
    clients spread out but never come back-to-back."""
    step: float = min(policy.backoff_max, policy.backoff_base * 2.0 ** max(0, retry_number - 1))
    jitter: float = (rng or random).uniform(0, step / 2)
    return step / 2 + jitter


def order_targets(
    alias: Alias, names: list[str], health: Health, prices: PriceBook, rng: random.Random | None = None
) -> list[str]:
    """The order in which this request tries the alias's targets, by the alias's policy.

    ordered  — as listed.
    weighted — a weighted random order (each next target drawn in proportion to its weight; weight 0 last).
    latency  — lowest observed latency first (EWMA of successful attempts); targets not yet measured go
               first, so that they get measured.
    cost     — lowest price first (input + output per 1M tokens); targets with no known price last.
    """
    if alias.policy == "ordered" or len(names) < 2:
        return list(names)
    if alias.policy == "weighted":
        draw = (rng or random).random

        # Efraimidis-Spirakis: sorting by u^(1/w) draws a weighted permutation in one pass.
        def key(name: str) -> float:
            weight = alias.weights.get(name, 1.0)
            return draw() ** (1.0 / weight) if weight > 0 else -1.0

        return sorted(names, key=key, reverse=True)
    if alias.policy == "latency":
        return sorted(names, key=lambda n: health.circuit(n).latency_ewma or 0.0)

    def price(name: str) -> float:
        p = prices.price(name)
        return p.input + p.output if p is not None else float("inf")

    return sorted(names, key=price)


def decide(
    error: UpstreamError,
    retries_so_far: int,
    policy: RetryPolicy,
    alias: Alias,
    deadline: Deadline,
    rng: random.Random | None = None,
) -> Decision:
    """What to do after `error`, given how many retries this target already had in this request."""
    kind = error.failover
    if kind is Failover.CLIENT:
        return Decision(Step.RETURN)
    if kind is Failover.CONTENT_FILTER:
        return Decision(Step.NEXT if alias.failover_on_content_filter else Step.RETURN)
    if kind is Failover.RETRY and retries_so_far < policy.max_retries:
        return _wait_then_retry(backoff(retries_so_far + 1, policy, rng), deadline)
    if kind is Failover.RATE_LIMITED:
        if error.retry_after is not None:
            # One wait for a stated Retry-After: if the target says "later" twice, it means it.
            fits = error.retry_after <= policy.retry_after_cap and retries_so_far == 0
            return _wait_then_retry(error.retry_after, deadline) if fits else Decision(Step.NEXT)
        if retries_so_far < policy.rate_limit_retries:
            return _wait_then_retry(backoff(retries_so_far + 1, policy, rng), deadline)
    # RETRY out of retries, CUT_OFF, NEXT, BUSY, SILENT, CONTEXT: the router moves on (CONTEXT picks a larger one).
    return Decision(Step.NEXT)


def _wait_then_retry(delay: float, deadline: Deadline) -> Decision:
    # A wait that would eat the rest of the deadline is better spent on the next target.
    if delay >= deadline.remaining():
        return Decision(Step.NEXT)
    return Decision(Step.RETRY, delay)
