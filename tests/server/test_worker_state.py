"""The state the workers of one machine share through their supervisor (server/worker_state.py), on a real Unix
socket in one event loop: links stand in for the workers. tests/integration/test_workers.py runs the processes."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from lifeline.accounting.limits import RedisLimits
from lifeline.config import parse_config
from lifeline.config.schema import CircuitPolicy
from lifeline.errors import BudgetExceeded, LimitBackendUnavailable, RateLimitExceeded, UpstreamCutOff
from lifeline.routing.health import Health, State
from lifeline.server.gateway import Gateway
from lifeline.server.worker_state import LinkedCircuits, LinkedLimits, StateLink, StateService, _frame, _Frames


@asynccontextmanager
async def service(tmp_path: Path) -> AsyncIterator[StateService]:
    state = StateService(str(tmp_path / "state.sock"))
    await state.start()
    try:
        yield state
    finally:
        await state.close()


@asynccontextmanager
async def link(state: StateService, worker: int) -> AsyncIterator[StateLink]:
    linked = StateLink(state.path, worker)
    await linked.start()
    try:
        yield linked
    finally:
        await linked.close()


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(1000):  # a guard against hanging, not a measure of speed
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("never happened")


def seeded(value: int, calls: list[int]) -> Callable[[], Awaitable[int]]:
    async def seed() -> int:
        calls.append(value)
        return value

    return seed


def health() -> Health:
    return Health(CircuitPolicy())


def test_one_rpm_and_tpm_window_across_workers(tmp_path: Path) -> None:
    asyncio.run(_one_rpm_and_tpm_window_across_workers(tmp_path))


async def _one_rpm_and_tpm_window_across_workers(tmp_path: Path) -> None:
    async with service(tmp_path) as state, link(state, 1) as a, link(state, 2) as b:
        one, two = LinkedLimits(a), LinkedLimits(b)
        admitted = [await store.admit("k", rpm=3, tpm=None, tokens_estimate=0) for store in (one, two, one)]
        with pytest.raises(RateLimitExceeded) as refused:
            await two.admit("k", rpm=3, tpm=None, tokens_estimate=0)
        assert refused.value.limit == "rpm" and refused.value.headers["retry-after"]
        # a request a later check refused leaves the window: its slot is free for the other worker
        await one.withdraw(admitted[0])
        assert (await two.admit("k", rpm=3, tpm=None, tokens_estimate=0)).in_requests
        # tokens: the estimate is held, then settled to the actual count, through the other worker's link
        entry = await one.admit("t", rpm=None, tpm=100, tokens_estimate=80)
        with pytest.raises(RateLimitExceeded):
            await two.admit("t", rpm=None, tpm=100, tokens_estimate=30)
        await one.settle_tokens(entry, 10)
        assert (await two.admit("t", rpm=None, tpm=100, tokens_estimate=30)).tokens == 30
        # a key without rate limits costs no round trip and counts nothing
        free = await one.admit("free", rpm=None, tpm=None, tokens_estimate=5)
        assert not free.in_requests and free.tokens is None


def test_budget_reservations_hold_across_workers_seeded_once(tmp_path: Path) -> None:
    asyncio.run(_budget_reservations_hold_across_workers_seeded_once(tmp_path))


async def _budget_reservations_hold_across_workers_seeded_once(tmp_path: Path) -> None:
    async with service(tmp_path) as state, link(state, 1) as a, link(state, 2) as b:
        one, two = LinkedLimits(a), LinkedLimits(b)
        ledger: list[int] = []
        first = await one.reserve("k", limit_nusd=100, period="day", amount_nusd=40, seed=seeded(20, ledger))
        second = await two.reserve("k", limit_nusd=100, period="day", amount_nusd=40, seed=seeded(20, ledger))
        assert ledger == [20]  # the ledger is read once, by the first worker to need the counter
        with pytest.raises(BudgetExceeded) as refused:
            await one.reserve("k", limit_nusd=100, period="day", amount_nusd=40, seed=seeded(20, ledger))
        assert (refused.value.spent_nusd, refused.value.reserved_nusd) == (20, 80)
        await one.settle(first, 5)
        await two.release(second)
        assert await two.spent("k", "day") == (25, 0)
        await two.reserve("k", limit_nusd=100, period="day", amount_nusd=75, seed=seeded(20, ledger))


def test_an_open_circuit_reaches_the_other_workers_and_later_ones(tmp_path: Path) -> None:
    asyncio.run(_an_open_circuit_reaches_the_other_workers_and_later_ones(tmp_path))


async def _an_open_circuit_reaches_the_other_workers_and_later_ones(tmp_path: Path) -> None:
    async with service(tmp_path) as state, link(state, 1) as a, link(state, 2) as b:
        here, there = health(), health()
        mine, theirs = LinkedCircuits(here, a), LinkedCircuits(there, b)
        await mine.start()
        await theirs.start()
        here.record_failure("cut", UpstreamCutOff("cut off", upstream_status=403))
        assert here.circuit("cut").state is State.OPEN
        await until(lambda: there.circuit("cut").state is State.OPEN)
        assert "(on another worker)" in (there.circuit("cut").last_error or "")
        assert mine.received == 0 and theirs.received == 1  # no echo back to the worker that opened it
        here.refuse_prefill("picky")
        await until(lambda: there.prefill_support("picky") is False)
        # a worker (re)starting after the open learns it as it connects
        async with link(state, 3) as c:
            late = health()
            await LinkedCircuits(late, c).start()
            assert late.circuit("cut").state is State.OPEN
            assert late.prefill_support("picky") is False
        await theirs.close()
        await mine.close()


def test_without_the_supervisor_limits_follow_the_failure_mode(tmp_path: Path) -> None:
    asyncio.run(_without_the_supervisor_limits_follow_the_failure_mode(tmp_path))


async def _without_the_supervisor_limits_follow_the_failure_mode(tmp_path: Path) -> None:
    async with service(tmp_path) as state:
        a = StateLink(state.path, 1)
        await a.start()
    await until(lambda: not a.connected)
    assert (await LinkedLimits(a, "open").admit("k", rpm=1, tpm=None, tokens_estimate=0)).in_requests is False
    with pytest.raises(LimitBackendUnavailable):
        await LinkedLimits(a, "closed").admit("k", rpm=1, tpm=None, tokens_estimate=0)
    await a.close()


def test_with_redis_configured_the_workers_share_through_redis_alone(tmp_path: Path) -> None:
    targets = {"t": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}}
    base = {"targets": targets, "aliases": {"chat": {"targets": ["t"]}}}
    linked = StateLink(str(tmp_path / "unused.sock"), 1)
    local = Gateway.build(parse_config(base, env={}), link=linked)
    assert isinstance(local.accounting.limits, LinkedLimits)
    with_redis = {**base, "accounting": {"redis_url": "redis://127.0.0.1:9/0"}}
    replicas = Gateway.build(parse_config(with_redis, env={}), link=linked)
    assert isinstance(replicas.accounting.limits, RedisLimits)


def test_an_operators_override_reaches_the_others_and_later_workers(tmp_path: Path) -> None:
    asyncio.run(_an_operators_override_reaches_the_others_and_later_workers(tmp_path))


async def _an_operators_override_reaches_the_others_and_later_workers(tmp_path: Path) -> None:
    async with service(tmp_path) as state, link(state, 1) as a, link(state, 2) as b:
        heard: list[tuple[str, dict[str, object]]] = []
        a.on_override = lambda target, fields: heard.append((target, fields))
        b.on_override = lambda target, fields: heard.append((target, fields))
        a.send({"op": "override", "target": "t", "fields": {"state": "drained"}})
        await until(lambda: heard == [("t", {"state": "drained"})])  # b heard it; a, which made it, did not
        late: list[tuple[str, dict[str, object]]] = []
        c = StateLink(state.path, 3)
        c.on_override = lambda target, fields: late.append((target, fields))
        await c.start()
        assert late == [("t", {"state": "drained"})]  # told before its hello is answered
        b.send({"op": "override", "target": "t", "fields": {"state": "healthy"}})
        await until(lambda: late[-1] == ("t", {"state": "healthy"}))
        assert state.overrides == {}
        await c.close()


#: a worker process that reserves 40 of key k's budget through its link, says so, and waits to be killed
KILLED_WORKER = """
import asyncio, sys
from lifeline.server.worker_state import LinkedLimits, StateLink

async def main():
    link = StateLink(sys.argv[1], 1)
    await link.start()
    async def seed():
        return 0
    await LinkedLimits(link).reserve("k", limit_nusd=100, period="day", amount_nusd=40, seed=seed)
    print("reserved", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def test_a_killed_workers_reservations_are_released_and_a_live_ones_kept(tmp_path: Path) -> None:
    asyncio.run(_a_killed_workers_reservations_are_released_and_a_live_ones_kept(tmp_path))


async def _a_killed_workers_reservations_are_released_and_a_live_ones_kept(tmp_path: Path) -> None:
    async with service(tmp_path) as state, link(state, 2) as live:
        kept = await LinkedLimits(live).reserve("k", limit_nusd=100, period="day", amount_nusd=30, seed=seeded(0, []))
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "-c", KILLED_WORKER, state.path, stdout=asyncio.subprocess.PIPE
        )
        assert worker.stdout is not None
        assert await worker.stdout.readline() == b"reserved\n"
        assert await state.limits.spent("k", "day") == (0, 70)
        with pytest.raises(BudgetExceeded):  # the killed worker's 40 and the live one's 30 are both held
            await LinkedLimits(live).reserve("k", limit_nusd=100, period="day", amount_nusd=40, seed=seeded(0, []))
        worker.kill()  # SIGKILL: no settle, no release from it
        await worker.wait()
        await spent_becomes(state, (0, 30))  # the live worker's hold is untouched
        again = await LinkedLimits(live).reserve("k", limit_nusd=100, period="day", amount_nusd=40, seed=seeded(0, []))
        await LinkedLimits(live).settle(kept, 10)
        await LinkedLimits(live).release(again)
        await spent_becomes(state, (10, 0))
        assert await state.limits.spent("k", "day") == (10, 0)


async def spent_becomes(state: StateService, expected: tuple[int, int]) -> None:
    for _ in range(1000):  # a guard against hanging, not a measure of speed
        if await state.limits.spent("k", "day") == expected:
            return
        await asyncio.sleep(0.005)
    assert await state.limits.spent("k", "day") == expected


def frames_of(*messages: dict[str, object]) -> bytes:
    return b"".join(_frame(dict(message)) for message in messages)


def test_frames_arriving_together_or_cut_anywhere_split_into_the_same_messages() -> None:
    messages = [{"op": "admit", "key": "k", "id": 1}, {"op": "settle", "n": "é" * 40}, {}, {"op": "x", "id": 2}]
    wire = frames_of(*messages)
    assert _Frames().feed(wire) == messages  # every frame of one read
    for cut in range(len(wire) + 1):  # one frame across two reads, at every byte
        frames = _Frames()
        got = frames.feed(wire[:cut])
        got += frames.feed(wire[cut:])
        assert got == messages and not frames.partial, cut
    frames = _Frames()
    got = [message for byte in range(len(wire)) for message in frames.feed(wire[byte : byte + 1])]
    assert got == messages
    assert _Frames().feed(wire[:-1]) == messages[:-1]
    cut_off = _Frames()
    cut_off.feed(wire[:5])
    assert cut_off.partial


def test_what_a_worker_sends_in_one_turn_leaves_in_one_write_in_order(tmp_path: Path) -> None:
    asyncio.run(_what_a_worker_sends_in_one_turn_leaves_in_one_write_in_order(tmp_path))


async def _what_a_worker_sends_in_one_turn_leaves_in_one_write_in_order(tmp_path: Path) -> None:
    async with service(tmp_path) as state, link(state, 1) as a, link(state, 2) as b:
        writes: list[bytes] = []
        assert a._writer is not None
        write = a._writer.write

        def counted(data: bytes) -> None:
            writes.append(bytes(data))
            write(data)

        a._writer.write = counted  # type: ignore[method-assign]
        one, two = LinkedLimits(a), LinkedLimits(b)
        # eight admits started in one turn: one write; exactly three admitted across both workers
        results = await asyncio.gather(
            *(one.admit("k", rpm=3, tpm=None, tokens_estimate=0) for _ in range(8)), return_exceptions=True
        )
        assert len(writes) == 1 and len(_Frames().feed(writes[0])) == 8
        admitted = [result for result in results if not isinstance(result, BaseException)]
        assert len(admitted) == 3
        assert all(isinstance(result, RateLimitExceeded) for result in results if result not in admitted)
        with pytest.raises(RateLimitExceeded):
            await two.admit("k", rpm=3, tpm=None, tokens_estimate=0)
        # a withdraw and the admit after it in the same turn: one write, and the withdraw lands first
        writes.clear()
        await one.withdraw(admitted[0])
        again = one.admit("k", rpm=3, tpm=None, tokens_estimate=0)
        assert (await again).in_requests
        assert [message["op"] for message in _Frames().feed(b"".join(writes))] == ["withdraw", "admit"]
        assert len(writes) == 1
        # tokens settled in the turn of the next admit: the settle is counted before that admit
        entry = await one.admit("t", rpm=None, tpm=100, tokens_estimate=90)
        writes.clear()
        await one.settle_tokens(entry, 10)
        assert (await one.admit("t", rpm=None, tpm=100, tokens_estimate=90)).tokens == 90
        assert len(writes) == 1


def test_a_worker_dying_mid_batch_counts_its_whole_frames_and_drops_the_cut_one(tmp_path: Path) -> None:
    asyncio.run(_a_worker_dying_mid_batch_counts_its_whole_frames_and_drops_the_cut_one(tmp_path))


async def _a_worker_dying_mid_batch_counts_its_whole_frames_and_drops_the_cut_one(tmp_path: Path) -> None:
    async with service(tmp_path) as state, link(state, 2) as live:
        reader, writer = await asyncio.open_unix_connection(state.path)
        reserve = {"op": "reserve", "key": "k", "limit": 100, "period": "day", "amount": 30, "seed": 0}
        writer.write(frames_of({"op": "hello", "worker": 1, "id": 1}, {**reserve, "id": 2}))
        answers: list[dict[str, object]] = []
        frames = _Frames()
        while len(answers) < 2:
            answers += frames.feed(await reader.read(65536))
        reservation_id, period_id = answers[1]["ok"]  # type: ignore[misc]
        assert await state.limits.spent("k", "day") == (0, 30)
        settle = {"op": "settle", "reservation": ["k", period_id, 30, reservation_id], "actual": 10}
        batch = frames_of({"op": "admit", "key": "r", "rpm": 1, "tpm": None, "estimate": 0}, settle)
        writer.write(batch[:-3])  # dies in the middle of its settle's frame
        await writer.drain()
        writer.transport.abort()
        await spent_becomes(state, (0, 0))  # the cut settle did not count; the hold was released with the link
        with pytest.raises(RateLimitExceeded):  # the whole admit before it did
            await LinkedLimits(live).admit("r", rpm=1, tpm=None, tokens_estimate=0)
