"""The attempt loop, with fake in-process providers that fail on a script."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from lifeline.attempts import Outcome, SkipReason
from lifeline.config import parse_config
from lifeline.errors import (
    AllTargetsBusy,
    AllTargetsFailed,
    ContentFiltered,
    ContextLengthExceeded,
    DeadlineExceeded,
    InvalidRequest,
    ModelNotFound,
    UpstreamCutOff,
    UpstreamModelNotFound,
    UpstreamOverloaded,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamSilent,
    UpstreamUnavailable,
)
from lifeline.protocol.parse import validate_chat_request
from lifeline.providers.base import ChatCall, Chunk, Completion, Deadline, inspect_chunk
from lifeline.routing.health import Health, State
from lifeline.routing.router import Routed, Router

FAST_RETRY = {
    "max_retries": 2,
    "rate_limit_retries": 1,
    "backoff_base": 0.001,
    "backoff_max": 0.004,
    "retry_after_cap": 1.0,
}
OK = "ok"


class Fake:
    """A provider whose attempts follow a script: each entry is an exception to raise, or OK."""

    def __init__(
        self,
        name: str,
        *script: BaseException | str,
        context_window: int | None = None,
        supports_n: bool = True,
        delay: float = 0.0,
    ) -> None:
        self.name = name
        self.model = f"{name}-model"
        self.context_window = context_window
        self.supports_n = supports_n
        self.script = list(script)
        self.delay = delay
        self.calls = 0

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def _next(self) -> None:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        step = self.script.pop(0) if self.script else OK
        if isinstance(step, BaseException):
            raise step

    async def complete(self, call: ChatCall) -> Completion:
        await self._next()
        return Completion(body={"answered_by": self.name}, model=self.model, usage=None)

    async def stream(self, call: ChatCall) -> AsyncIterator[Chunk]:
        yield chunk({"role": "assistant"})  # no content yet: a failure after this is still invisible
        await self._next()
        yield chunk({"content": f"from {self.name}"})
        yield chunk({}, finish="stop")


def chunk(delta: dict[str, Any], finish: str | None = None) -> Chunk:
    data = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return inspect_chunk(data, b"{}")


def make_router(
    *fakes: Fake,
    aliases: dict[str, Any] | None = None,
    retry: dict[str, Any] | None = None,
    circuit: dict[str, Any] | None = None,
) -> Router:
    targets = {f.name: {"kind": "openai", "base_url": "http://unused.invalid", "model": f.model} for f in fakes}
    config = parse_config(
        {
            "targets": targets,
            "aliases": aliases or {"chat": {"targets": [f.name for f in fakes]}},
            "retry": {**FAST_RETRY, **(retry or {})},
            "circuit": {
                "failure_threshold": 5,
                "cooldown": 30,
                "cutoff_cooldown": 600,
                "rate_limit_pause": 1.0,
                **(circuit or {}),
            },
        },
        env={},
    )
    return Router(config, {f.name: f for f in fakes}, Health(config.circuit))  # type: ignore[misc]


def make_call(seconds: float = 10, **extra: Any) -> ChatCall:
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], **extra}
    return ChatCall(body=body, request=validate_chat_request(body), request_id="r1", deadline=Deadline.after(seconds))


def complete(router: Router, alias: str = "chat", call: ChatCall | None = None) -> Routed[Completion]:
    return asyncio.run(router.complete(alias, call or make_call()))


def outcomes(routed: Routed[Any]) -> list[tuple[str, Outcome | SkipReason]]:
    """Each attempt as (target, outcome), or (target, skip reason) for a target that was skipped."""
    return [(a.target, a.skip or a.outcome) for a in routed.attempts]


# --- order and retries ------------------------------------------------------------------------------


def test_first_target_answers() -> None:
    a, b = Fake("a"), Fake("b")
    routed = complete(make_router(a, b))
    assert routed.target == "a"
    assert routed.model == "a-model"
    assert routed.result.body == {"answered_by": "a"}
    assert outcomes(routed) == [("a", Outcome.OK)]
    assert routed.attempts[0].status == 200
    assert routed.tries == 1
    assert (a.calls, b.calls) == (1, 0)


def test_targets_tried_in_alias_order() -> None:
    a, b, c = Fake("a", UpstreamModelNotFound("x")), Fake("b", UpstreamSilent("x")), Fake("c")
    router = make_router(a, b, c, aliases={"chat": {"targets": ["b", "a", "c"]}})
    routed = complete(router)
    assert outcomes(routed) == [("b", Outcome.SILENT), ("a", Outcome.MODEL_NOT_FOUND), ("c", Outcome.OK)]
    assert routed.tries == 3


def test_transient_failure_retried_on_the_same_target() -> None:
    a, b = Fake("a", UpstreamUnavailable("x"), UpstreamUnavailable("x")), Fake("b")
    routed = complete(make_router(a, b))
    assert routed.target == "a"
    assert outcomes(routed) == [("a", Outcome.UNAVAILABLE), ("a", Outcome.UNAVAILABLE), ("a", Outcome.OK)]
    assert routed.tries == 3
    assert (a.calls, b.calls) == (3, 0)


def test_retries_exhausted_then_next_target() -> None:
    a = Fake("a", *[UpstreamUnavailable("x", upstream_status=503)] * 3)
    b = Fake("b")
    router = make_router(a, b)
    routed = complete(router)
    assert routed.target == "b"
    assert a.calls == 3  # the attempt and max_retries=2 retries
    assert routed.tries == 4
    assert [att.status for att in routed.attempts] == [503, 503, 503, 200]
    assert router.health.circuit("a").consecutive_failures == 3
    failovers = list(router.health.recent_failovers)
    assert len(failovers) == 1
    assert failovers[0]["from"] == "a"
    assert failovers[0]["remaining"] == ["b"]


def test_per_target_retry_policy() -> None:
    a = Fake("a", *[UpstreamUnavailable("x")] * 5)
    router = make_router(a, Fake("b"))
    data = router.config.model_dump()
    data["targets"]["a"]["retry"] = {**FAST_RETRY, "max_retries": 0}
    router.config = parse_config(data, env={})
    routed = complete(router)
    assert a.calls == 1
    assert routed.target == "b"


def test_retry_counter_resets_for_the_next_target() -> None:
    a = Fake("a", *[UpstreamUnavailable("x")] * 3)
    b = Fake("b", UpstreamUnavailable("x"), UpstreamUnavailable("x"))
    routed = complete(make_router(a, b))
    assert routed.target == "b"
    assert (a.calls, b.calls) == (3, 3)


def test_circuit_opening_mid_request_stops_retries() -> None:
    a = Fake("a", *[UpstreamUnavailable("x")] * 5)
    router = make_router(a, Fake("b"), retry={"max_retries": 5}, circuit={"failure_threshold": 2})
    routed = complete(router)
    assert a.calls == 2
    assert routed.target == "b"
    assert router.health.circuit("a").state is State.OPEN


def test_all_targets_failed() -> None:
    a = Fake("a", UpstreamCutOff("no", upstream_status=402))
    b = Fake("b", *[UpstreamUnavailable("x", upstream_status=500)] * 3)
    with pytest.raises(AllTargetsFailed) as info:
        complete(make_router(a, b))
    err = info.value
    assert err.status == 502
    assert err.headers["x-lifeline-attempts"] == "4"
    assert "a: cut_off (402)" in err.message
    assert "b: unavailable (500)" in err.message


# --- circuits ---------------------------------------------------------------------------------------


def test_open_circuit_skipped() -> None:
    a, b = Fake("a"), Fake("b")
    router = make_router(a, b)
    router.health.record_failure("a", UpstreamCutOff("billing"))
    routed = complete(router)
    assert routed.target == "b"
    assert a.calls == 0
    assert outcomes(routed) == [("a", SkipReason.CIRCUIT_OPEN), ("b", Outcome.OK)]
    assert routed.tries == 1


def test_forced_probe_when_every_circuit_is_open() -> None:
    a, b = Fake("a"), Fake("b")
    router = make_router(a, b)
    now = time.monotonic()
    router.health.record_failure("a", UpstreamCutOff("x"), now=now)
    router.health.record_failure("b", UpstreamCutOff("x"), now=now - 5)  # failed longer ago
    routed = complete(router)
    assert routed.target == "b"
    assert (a.calls, b.calls) == (0, 1)
    assert router.health.circuit("b").state is State.CLOSED
    assert router.health.circuit("a").state is State.OPEN


def test_forced_probe_is_not_retried() -> None:
    a = Fake("a", *[UpstreamUnavailable("x")] * 3)
    router = make_router(a)
    router.health.record_failure("a", UpstreamCutOff("x"))
    with pytest.raises(AllTargetsFailed):
        complete(router)
    assert a.calls == 1
    circuit = router.health.circuit("a")
    assert circuit.state is State.OPEN
    assert not circuit.probe_in_flight


def test_half_open_probe_in_flight_skipped() -> None:
    a, b = Fake("a"), Fake("b")
    router = make_router(a, b)
    circuit = router.health.circuit("a")
    circuit.state, circuit.probe_in_flight = State.HALF_OPEN, True
    routed = complete(router)
    assert outcomes(routed) == [("a", SkipReason.PROBE_IN_FLIGHT), ("b", Outcome.OK)]


def test_unexpected_exception_frees_the_probe() -> None:
    a = Fake("a", RuntimeError("bug in provider"))
    router = make_router(a)
    router.health.record_failure("a", UpstreamCutOff("x"))
    with pytest.raises(RuntimeError, match="bug in provider"):
        complete(router)
    assert not router.health.circuit("a").probe_in_flight


# --- rate limits ------------------------------------------------------------------------------------


def test_all_rate_limited_is_busy_without_an_attempt() -> None:
    a, b = Fake("a"), Fake("b")
    router = make_router(a, b)
    router.health.record_failure("a", UpstreamRateLimited("x", retry_after=30))
    router.health.record_failure("b", UpstreamRateLimited("x", retry_after=20))
    with pytest.raises(AllTargetsBusy) as info:
        complete(router)
    assert info.value.status == 429
    assert info.value.headers["retry-after"] == "20"
    assert (a.calls, b.calls) == (0, 0)


def test_rate_limited_target_skipped_for_another() -> None:
    a, b = Fake("a"), Fake("b")
    router = make_router(a, b)
    router.health.record_failure("a", UpstreamRateLimited("x", retry_after=30))
    routed = complete(router)
    assert outcomes(routed) == [("a", SkipReason.RATE_LIMITED), ("b", Outcome.OK)]


def test_short_retry_after_waited_out_on_the_same_target(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def recorded(delay: float) -> None:
        waits.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", recorded)
    a, b = Fake("a", UpstreamRateLimited("x", retry_after=0.02)), Fake("b")
    routed = complete(make_router(a, b))
    assert waits == [0.02]  # the stated Retry-After, waited once before the retry
    assert routed.target == "a"
    assert outcomes(routed) == [("a", Outcome.RATE_LIMITED), ("a", Outcome.OK)]


def test_429_without_retry_after_retried_on_the_same_target() -> None:
    # the target's rate-limit pause keeps other requests away, not this request's own retry
    a, b = Fake("a", UpstreamRateLimited("x")), Fake("b")
    routed = complete(make_router(a, b))
    assert routed.target == "a"
    assert (a.calls, b.calls) == (2, 0)


def test_every_target_busy_after_attempts() -> None:
    a = Fake("a", UpstreamRateLimited("x", retry_after=9.2))
    b = Fake("b", UpstreamOverloaded("queue full"))
    router = make_router(a, b, aliases={"chat": {"targets": ["b", "a"]}})
    with pytest.raises(AllTargetsBusy) as info:
        complete(router)
    assert info.value.headers["retry-after"] == "10"
    assert info.value.headers["x-lifeline-attempts"] == "2"


def test_infinite_retry_after_still_gives_a_busy_answer() -> None:
    a = Fake("a", UpstreamRateLimited("x", retry_after=float("inf")))
    with pytest.raises(AllTargetsBusy):
        complete(make_router(a))


def test_infinite_rate_limit_pause_still_gives_a_busy_answer() -> None:
    a = Fake("a")
    router = make_router(a)
    router.health.record_failure("a", UpstreamRateLimited("x", retry_after=float("inf")))
    with pytest.raises(AllTargetsBusy):
        complete(router)


# --- failover classes -------------------------------------------------------------------------------


def test_client_error_returned_as_is() -> None:
    error = UpstreamRejected("bad param", param="top_p")
    a, b = Fake("a", error), Fake("b")
    with pytest.raises(UpstreamRejected) as info:
        complete(make_router(a, b))
    assert info.value is error
    assert info.value.headers["x-lifeline-attempts"] == "1"
    assert b.calls == 0


def test_content_filter_returned_without_opt_in() -> None:
    a, b = Fake("a", ContentFiltered("no")), Fake("b")
    with pytest.raises(ContentFiltered):
        complete(make_router(a, b))
    assert b.calls == 0


def test_content_filter_fails_over_with_opt_in() -> None:
    a, b = Fake("a", ContentFiltered("no")), Fake("b")
    router = make_router(a, b, aliases={"chat": {"targets": ["a", "b"], "failover_on_content_filter": True}})
    assert complete(router).target == "b"


def test_context_overflow_skips_to_a_larger_target() -> None:
    a = Fake("a", ContextLengthExceeded("long"), context_window=8000)
    b = Fake("b", context_window=4000)
    c = Fake("c", context_window=8000)
    d = Fake("d", context_window=128000)
    routed = complete(make_router(a, b, c, d))
    assert routed.target == "d"
    assert outcomes(routed) == [
        ("a", Outcome.CONTEXT_LENGTH_EXCEEDED),
        ("b", SkipReason.CONTEXT_TOO_SMALL),
        ("c", SkipReason.CONTEXT_TOO_SMALL),
        ("d", Outcome.OK),
    ]
    assert (b.calls, c.calls) == (0, 0)


def test_context_overflow_with_no_larger_target_returns_the_error() -> None:
    error = ContextLengthExceeded("long")
    a = Fake("a", error, context_window=8000)
    b = Fake("b", context_window=4000)
    c = Fake("c")  # unknown window: not known to be larger
    with pytest.raises(ContextLengthExceeded) as info:
        complete(make_router(a, b, c))
    assert info.value is error
    assert info.value.headers["x-lifeline-attempts"] == "1"
    assert (b.calls, c.calls) == (0, 0)


def test_context_overflow_does_not_count_against_the_circuit() -> None:
    a = Fake("a", ContextLengthExceeded("long"), context_window=10)
    router = make_router(a, Fake("b", context_window=20))
    complete(router)
    assert router.health.circuit("a").consecutive_failures == 0


# --- request checks ---------------------------------------------------------------------------------


def test_n_above_one_without_a_capable_target() -> None:
    a, b = Fake("a", supports_n=False), Fake("b", supports_n=False)
    with pytest.raises(InvalidRequest) as info:
        complete(make_router(a, b), call=make_call(n=2))
    assert info.value.param == "n"
    assert info.value.code == "unsupported_parameter"
    assert (a.calls, b.calls) == (0, 0)


def test_n_above_one_only_tries_capable_targets() -> None:
    a, b = Fake("a", supports_n=False), Fake("b", supports_n=True)
    routed = complete(make_router(a, b), call=make_call(n=3))
    assert outcomes(routed) == [("a", SkipReason.ONE_CHOICE), ("b", Outcome.OK)]


def test_n_of_one_uses_every_target() -> None:
    a = Fake("a", supports_n=False)
    assert complete(make_router(a), call=make_call(n=1)).target == "a"


def test_unknown_alias() -> None:
    with pytest.raises(ModelNotFound) as info:
        complete(make_router(Fake("a")), alias="gpt-17")
    assert "gpt-17" in info.value.message
    assert "chat" in info.value.message
    assert info.value.status == 404


# --- deadline ---------------------------------------------------------------------------------------


def test_expired_deadline_before_any_attempt() -> None:
    a = Fake("a")
    with pytest.raises(DeadlineExceeded) as info:
        complete(make_router(a), call=make_call(seconds=-1))
    assert a.calls == 0
    assert info.value.status == 504
    assert info.value.headers["x-lifeline-attempts"] == "0"


def test_deadline_passing_during_an_attempt() -> None:
    a = Fake("a", UpstreamUnavailable("x"), delay=0.08)
    b = Fake("b")
    with pytest.raises(DeadlineExceeded) as info:
        complete(make_router(a, b), call=make_call(seconds=0.05))
    assert info.value.headers["x-lifeline-attempts"] == "1"
    assert b.calls == 0


def test_retry_wait_longer_than_the_deadline_moves_on() -> None:
    a, b = Fake("a", UpstreamRateLimited("x", retry_after=0.9)), Fake("b")
    routed = complete(make_router(a, b), call=make_call(seconds=0.5))
    assert routed.target == "b"
    assert a.calls == 1


# --- streams ----------------------------------------------------------------------------------------


def test_stream_failure_before_content_moves_on_invisibly() -> None:
    a, b = Fake("a", UpstreamUnavailable("x"), *[UpstreamSilent("x")]), Fake("b")
    router = make_router(a, b)

    async def main() -> tuple[str, list[Chunk], list[Chunk]]:
        routed = await router.open_stream("chat", make_call(stream=True))
        rest = [c async for c in routed.result.rest]
        return routed.target, routed.result.head, rest

    target, head, rest = asyncio.run(main())
    assert target == "b"
    assert head[-1].content
    assert head[-1].data["choices"][0]["delta"]["content"] == "from b"
    assert [c.finish for c in rest] == [True]
    assert a.calls == 2  # one retry of the transient failure, then the silent one moved on


def test_an_alias_of_the_other_kind_is_named_with_the_right_article() -> None:
    """#15.24: "The model 'chat' is an chat model"."""
    router = make_router(
        Fake("a"), aliases={"chat": {"targets": ["a"]}, "embed": {"kind": "embeddings", "targets": ["a"]}}
    )
    with pytest.raises(InvalidRequest) as chat:
        router.alias("chat", "embeddings")
    with pytest.raises(InvalidRequest) as embed:
        router.alias("embed", "chat")
    assert chat.value.message == "The model 'chat' is a chat model; use it with /v1/chat/completions."
    assert embed.value.message == "The model 'embed' is an embeddings model; use it with /v1/embeddings."


# --- hedging and continuation: the same attempt, recorded the same way -------------------------------

HEDGED = {"chat": {"targets": ["a", "b"], "hedge_after_ms": 10}}


def test_a_hedge_keeps_the_partner_that_answers_and_records_the_loser_before_it() -> None:
    a, b = Fake("a", delay=60), Fake("b")
    router = make_router(a, b, aliases=HEDGED)
    routed = complete(router)
    assert routed.target == "b"
    assert outcomes(routed) == [("a", Outcome.HEDGE_LOST), ("b", Outcome.OK)]  # the answer is the last
    assert routed.tries == 2
    loser = router.health.circuit("a")
    assert loser.consecutive_failures == 0 and not loser.probe_in_flight  # no verdict on the loser


def test_a_hedged_stream_keeps_the_winner_whole() -> None:
    a, b = Fake("a", delay=60), Fake("b")
    router = make_router(a, b, aliases=HEDGED)

    async def main() -> tuple[Routed[Any], list[Chunk]]:
        routed = await router.open_stream("chat", make_call(stream=True))
        return routed, [c async for c in routed.result.rest]

    routed, rest = asyncio.run(main())
    assert routed.target == "b" and routed.result.head[-1].content
    assert [c.finish for c in rest] == [True]
    assert outcomes(routed) == [("a", Outcome.HEDGE_LOST), ("b", Outcome.OK)]


def test_a_hedge_whose_first_target_fails_counts_that_failure() -> None:
    a, b = Fake("a", UpstreamUnavailable("x"), delay=0.05), Fake("b", delay=0.2)
    router = make_router(a, b, aliases=HEDGED, retry={"max_retries": 0})
    routed = complete(router)
    assert routed.target == "b"
    assert outcomes(routed) == [("a", Outcome.UNAVAILABLE), ("b", Outcome.OK)]
    assert router.health.circuit("a").consecutive_failures == 1


def test_when_both_hedged_attempts_fail_each_is_recorded_once_and_the_next_answers() -> None:
    a, b, c = (
        Fake("a", UpstreamUnavailable("x"), delay=0.05),
        Fake("b", UpstreamUnavailable("y"), delay=0.05),
        Fake("c"),
    )
    aliases = {"chat": {"targets": ["a", "b", "c"], "hedge_after_ms": 10}}
    router = make_router(a, b, c, aliases=aliases, retry={"max_retries": 0})
    routed = complete(router)
    assert routed.target == "c"
    assert set(outcomes(routed)[:2]) == {("a", Outcome.UNAVAILABLE), ("b", Outcome.UNAVAILABLE)}
    assert outcomes(routed)[2:] == [("c", Outcome.OK)]
    assert (a.calls, b.calls, c.calls) == (1, 1, 1)  # the partner is not tried again


def test_a_continuation_is_recorded_as_continued_after_the_failures_before_it() -> None:
    a, b, c = Fake("a"), Fake("b", UpstreamUnavailable("x")), Fake("c")
    router = make_router(a, b, c)
    for name in ("b", "c"):
        router.abilities[name] = dataclasses.replace(router.abilities[name], prefill=True)
    tried = {"a"}
    follow, _ = asyncio.run(router.continue_stream("chat", make_call(stream=True), "partial", tried))
    assert follow is not None and follow.target == "c"
    assert outcomes(follow) == [("b", Outcome.UNAVAILABLE), ("c", Outcome.CONTINUED)]
    assert tried == {"a", "b", "c"}
    assert router.health.circuit("b").consecutive_failures == 1
    assert router.health.circuit("c").latency_ewma is None  # a continuation's time is not the target's pace


def test_a_pinned_call_to_a_target_that_cannot_serve_it_is_unsupported_capability() -> None:
    """The same refusal, the same code, whether a request meets it on an alias or pinned to one target
    (a shadow call): `unsupported_capability`, never the generic `invalid_value`."""
    router = make_router(Fake("plain"))
    router.abilities["plain"] = dataclasses.replace(router.abilities["plain"], tools=False)
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    call = make_call(tools=[tool])
    for work in (lambda: router.complete_on("plain", call), lambda: router.complete("chat", call)):
        with pytest.raises(InvalidRequest) as raised:
            asyncio.run(work())
        assert raised.value.code == "unsupported_capability"


# --- the per-request shortcuts: the same answers as the long way --------------------------------------


def test_an_alias_whose_targets_serve_anything_skips_the_look_at_needs_and_keeps_every_target(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Targets that all run tools, json_schema and images and have no context window to check are kept without
    working out what the request needs: the candidates are what `why_not` would have kept, for every kind of
    chat request. An alias with a context window, a target that cannot run tools, or a request for several
    choices goes the long way."""
    from lifeline.attempts import AttemptLog
    from lifeline.routing.capabilities import needs_of, why_not

    bodies: list[dict[str, Any]] = [
        {},
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "s"}}},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]},
        {"messages": [{"role": "user", "content": "x" * 400_000}], "max_tokens": 100_000},
        {"n": 2},
    ]
    router = make_router(
        Fake("a"),
        Fake("b"),
        Fake("small", context_window=1000),
        Fake("one", supports_n=False),
        aliases={"open": {"targets": ["a", "b"]}, "windowed": {"targets": ["a", "small"]}},
    )
    raw = {
        "targets": {
            "a": {"kind": "openai", "base_url": "http://unused.invalid", "model": "a-model"},
            "b": {"kind": "openai", "base_url": "http://u.invalid", "model": "b", "capabilities": {"tools": False}},
        },
        "aliases": {"open": {"targets": ["a", "b"]}},
    }
    config = parse_config(raw, env={})
    no_tools = Router(config, {"a": Fake("a"), "b": Fake("b")}, Health(config.circuit))  # type: ignore[dict-item]
    for body in bodies:
        call = make_call(**body)
        needs = needs_of(call.request, call.body)
        for r, alias in ((router, "open"), (router, "windowed"), (no_tools, "open")):
            expected = [
                t
                for t in r.config.aliases[alias].targets
                if why_not(needs, r.abilities[t]) is None and (not body.get("n") or r.providers[t].supports_n)
            ]
            log = AttemptLog()
            try:
                got = r._candidates(alias, r.alias(alias), call, log)
            except InvalidRequest:
                got = []
            assert got == expected, (alias, body)
            assert [a.target for a in log] == [t for t in r.config.aliases[alias].targets if t not in expected]
    looked: list[ChatCall] = []
    monkeypatch.setattr("lifeline.routing.router.needs_of", lambda *a: looked.append(a) or needs_of(*a))
    for alias, long_way in (("open", False), ("windowed", True)):
        router._candidates(alias, router.alias(alias), make_call(), AttemptLog())
        assert bool(looked) is long_way


def test_an_attempts_call_with_its_first_token_limit_is_a_copy_of_every_field() -> None:
    from lifeline.routing.router import with_ttft

    call = dataclasses.replace(make_call(), prefill="so far", responses={"input": "hi"}, ttft=1.5)
    made = with_ttft(call, 2.5)
    assert made is not call and call.ttft == 1.5
    assert made == dataclasses.replace(call, ttft=2.5)
    # every field carried over, one added to ChatCall later (with a default) included: each holds its own object
    marked = dataclasses.replace(call)
    for field in dataclasses.fields(ChatCall):
        setattr(marked, field.name, object())
    made = with_ttft(marked, 2.5)
    assert made.ttft == 2.5
    for field in dataclasses.fields(ChatCall):
        if field.name != "ttft":
            assert getattr(made, field.name) is getattr(marked, field.name), field.name
