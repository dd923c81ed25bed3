"""Circuits: what the gateway currently believes about each target's health.

A circuit per target. Closed: requests flow. Open: the target is skipped until its cooldown ends — after N
consecutive failures, or at once (with a long cooldown) on a cut-off. Half-open: after the cooldown exactly
one request is let through as a probe; its success closes the circuit, its failure opens it again.
Separately, a target that answered 429 is left alone until its Retry-After has passed, so a rate-limited
provider is not hammered by every request that arrives meanwhile.

An operator may override a target (the admin API): *drained* — new requests skip it, those already on it
finish; *cut* — a fault is injected in front of it (lifeline.providers.faults), so it stays available and
fails as a real cut-off, silence or broken stream would; *healthy* — the override goes and the circuit
closes.
"""

from __future__ import annotations

import collections
import enum
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lifeline.attempts import SkipReason
from lifeline.config.schema import CircuitPolicy
from lifeline.errors import Failover, UpstreamError
from lifeline.providers.faults import Fault
from lifeline.providers.http import MAX_RETRY_AFTER


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


# Outcomes that say the target itself is unwell. A 429, a context overflow, a content refusal or the
# client's own mistake say nothing about the target's health.
_COUNTS_AS_FAILURE = frozenset({Failover.RETRY, Failover.SILENT, Failover.CUT_OFF, Failover.NEXT})


@dataclass
class Circuit:
    target: str
    state: State = State.CLOSED
    consecutive_failures: int = 0
    open_until: float = 0.0
    probe_in_flight: bool = False
    rate_limited_until: float = 0.0
    last_failure_at: float = 0.0
    last_error: str | None = None
    opened_count: int = 0
    #: exponentially weighted moving average of successful attempts' latency (to first content for
    #: streams), for the "latency" routing policy
    latency_ewma: float | None = None

    def snapshot(self, now: float) -> dict[str, Any]:
        return {
            "target": self.target,
            "state": self.state.value,
            "consecutive_failures": self.consecutive_failures,
            "open_for_seconds": round(max(0.0, self.open_until - now), 3) if self.state is State.OPEN else 0,
            "rate_limited_for_seconds": round(max(0.0, self.rate_limited_until - now), 3),
            "last_error": self.last_error,
            "seconds_since_last_failure": round(now - self.last_failure_at, 3) if self.last_failure_at else None,
            "times_opened": self.opened_count,
            "latency_ewma_seconds": round(self.latency_ewma, 4) if self.latency_ewma is not None else None,
        }


@dataclass
class Health:
    """Every target's circuit, the operator's overrides, and a ring of recent failovers for /admin/targets."""

    policy: CircuitPolicy
    circuits: dict[str, Circuit] = field(default_factory=dict)
    recent_failovers: collections.deque[dict[str, Any]] = field(default_factory=lambda: collections.deque(maxlen=100))
    #: called as listener(target, cooldown_seconds, reason) whenever a circuit opens here, so that other
    #: replicas can be told (lifeline.routing.shared); never called for an open applied from elsewhere
    open_listeners: list[Callable[[str, float, str], None]] = field(default_factory=list)
    #: targets an operator drained: new requests skip them (never probed either)
    drained: set[str] = field(default_factory=set)
    #: faults an operator injected in front of targets; read by each target's FaultInjector, which holds
    #: this very dict (so change it in place, never replace it)
    faults: dict[str, Fault] = field(default_factory=dict)
    #: each target's configured prefill support (True, False, or None: unknown), set by the router
    prefill_declared: dict[str, bool | None] = field(default_factory=dict)
    #: targets of unknown support that refused an assistant prefix (a 400): not asked again by this process
    prefill_refused: set[str] = field(default_factory=set)
    #: called as listener(target) when a target refuses a prefix here (lifeline.routing.shared tells the
    #: other replicas); never called for a refusal learnt from elsewhere
    prefill_listeners: list[Callable[[str], None]] = field(default_factory=list)

    def circuit(self, target: str) -> Circuit:
        circuit = self.circuits.get(target)
        if circuit is None:
            circuit = self.circuits[target] = Circuit(target)
        return circuit

    def available(self, target: str, now: float | None = None) -> bool:
        """Whether a request may go to this target now, without claiming a probe."""
        now = time.monotonic() if now is None else now
        if self.drained and target in self.drained:
            return False
        c = self.circuit(target)
        if c.rate_limited_until > now:
            return False
        if c.state is State.CLOSED:
            return True
        if c.state is State.OPEN:
            return now >= c.open_until
        return not c.probe_in_flight

    def acquire(self, target: str, now: float | None = None) -> bool:
        """Claim the right to send one attempt; an open circuit past its cooldown turns half-open and this
        attempt becomes its single probe."""
        now = time.monotonic() if now is None else now
        if not self.available(target, now):
            return False
        c = self.circuit(target)
        if c.state is not State.CLOSED:
            c.state = State.HALF_OPEN
            c.probe_in_flight = True
        return True

    def force_probe(self, target: str) -> None:
        """Every target is unavailable: let one request through to the least recently failed one."""
        c = self.circuit(target)
        if c.state is not State.CLOSED:
            c.state = State.HALF_OPEN
            c.probe_in_flight = True

    def release(self, target: str) -> None:
        """An attempt ended with no verdict on the target (the client went away, the deadline passed)."""
        self.circuit(target).probe_in_flight = False

    def least_recently_failed(self, targets: list[str]) -> str:
        # A drained target is probed only when there is nothing else at all.
        pool = [t for t in targets if t not in self.drained] or targets
        return min(pool, key=lambda t: self.circuit(t).last_failure_at)

    def why_unavailable(self, target: str, now: float | None = None) -> SkipReason:
        """Why `available` says no: the reason the attempt log gives for skipping the target."""
        now = time.monotonic() if now is None else now
        if target in self.drained:
            return SkipReason.DRAINED
        c = self.circuit(target)
        if c.rate_limited_until > now:
            return SkipReason.RATE_LIMITED
        if c.state is State.HALF_OPEN:
            return SkipReason.PROBE_IN_FLIGHT
        return SkipReason.CIRCUIT_OPEN

    # --- the operator's overrides ------------------------------------------------------------------

    def drain(self, target: str) -> None:
        self.faults.pop(target, None)
        self.drained.add(target)

    def cut(self, target: str, fault: Fault) -> None:
        self.drained.discard(target)
        self.faults[target] = fault

    def heal(self, target: str) -> None:
        """Clear the override and close the circuit, as if the target had just answered well."""
        self.drained.discard(target)
        self.faults.pop(target, None)
        c = self.circuit(target)
        c.state = State.CLOSED
        c.consecutive_failures = 0
        c.open_until = 0.0
        c.probe_in_flight = False
        c.rate_limited_until = 0.0

    def override(self, target: str) -> str | None:
        """The override as shown in snapshots: "drained", "cut:<fault>", or None."""
        if target in self.drained:
            return "drained"
        fault = self.faults.get(target)
        return f"cut:{fault}" if fault is not None else None

    def observe_latency(self, target: str, seconds: float, weight: float = 0.2) -> None:
        c = self.circuit(target)
        c.latency_ewma = seconds if c.latency_ewma is None else (1 - weight) * c.latency_ewma + weight * seconds

    def record_success(self, target: str) -> None:
        c = self.circuit(target)
        c.state = State.CLOSED
        c.consecutive_failures = 0
        c.probe_in_flight = False

    def record_failure(self, target: str, error: UpstreamError, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        c = self.circuit(target)
        c.probe_in_flight = False
        if error.failover is Failover.RATE_LIMITED:
            wait = error.retry_after if error.retry_after is not None else self.policy.rate_limit_pause
            wait = min(wait, MAX_RETRY_AFTER) if math.isfinite(wait) else MAX_RETRY_AFTER
            c.rate_limited_until = max(c.rate_limited_until, now + wait)
            c.last_error = f"{error.outcome.value} {error.upstream_status or ''}".strip()
            return
        if error.failover not in _COUNTS_AS_FAILURE:
            return
        c.consecutive_failures += 1
        c.last_failure_at = now
        c.last_error = f"{error.outcome.value} {error.upstream_status or ''}".strip()
        if error.failover is Failover.CUT_OFF:
            self._open(c, now, self.policy.cutoff_cooldown)
        elif c.state is State.HALF_OPEN or c.consecutive_failures >= self.policy.failure_threshold:
            self._open(c, now, self.policy.cooldown)

    def apply_remote_open(self, target: str, seconds_left: float, reason: str) -> None:
        """Another replica opened this target's circuit: open it here for the time it has left."""
        if seconds_left <= 0:
            return
        c = self.circuit(target)
        now = time.monotonic()
        if c.state is State.OPEN and c.open_until >= now + seconds_left:
            return
        c.last_error = reason
        c.last_failure_at = now
        self._open(c, now, seconds_left, notify=False)

    def _open(self, c: Circuit, now: float, cooldown: float, *, notify: bool = True) -> None:
        was_open = c.state is State.OPEN
        if not was_open:
            c.opened_count += 1
        c.state = State.OPEN
        # A cut-off's long cooldown is not shortened by a later, ordinary failure.
        c.open_until = max(c.open_until, now + cooldown) if was_open else now + cooldown
        c.probe_in_flight = False
        if notify:
            for listener in self.open_listeners:
                listener(c.target, c.open_until - now, c.last_error or "")

    def note_failover(self, event: dict[str, Any]) -> None:
        self.recent_failovers.append(event)

    # --- prefill support, learnt -------------------------------------------------------------------

    def prefill_support(self, target: str) -> bool | None:
        """Whether the target continues an assistant prefix: as configured; when the config leaves it unknown,
        no once the target has refused one (here or on another replica)."""
        declared = self.prefill_declared.get(target)
        if declared is not None:
            return declared
        return False if target in self.prefill_refused else None

    def refuse_prefill(self, target: str, *, announce: bool = True) -> None:
        """The target refused an assistant prefix: it is not asked to continue again (by this process, and
        by the other replicas when they are told)."""
        if target in self.prefill_refused:
            return
        self.prefill_refused.add(target)
        if announce:
            for listener in self.prefill_listeners:
                listener(target)

    def snapshot(self, targets: list[str]) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [
            {**self.circuit(t).snapshot(now), "override": self.override(t), "prefill": _word(self.prefill_support(t))}
            for t in targets
        ]


def _word(support: bool | None) -> str:
    return "unknown" if support is None else "yes" if support else "no"
