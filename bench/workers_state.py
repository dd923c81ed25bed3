"""What sharing limits and circuits between `serve --workers N` costs a request (server/worker_state.py).

    python bench/workers_state.py [--n 20000] [--concurrency 50]

The supervisor's state service runs in its own process, as it does under `serve --workers`; this process
plays a worker. Measured, per request, against the same store kept in this process (what one process does):
- admit + settle_tokens for a key with rpm and tpm (the round trip a limited key pays; settling is one-way);
- reserve + settle for a key with a budget;
- the CPU this (worker) process spends per admit, and the supervisor's CPU per admit;
- an open circuit's propagation: from the open in one link to its arrival in another (two hops of Unix socket).
Prints microseconds. Not a test: tests never time anything.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from lifeline.accounting.limits import InProcessLimits, LimitStore
from lifeline.config.schema import CircuitPolicy
from lifeline.errors import UpstreamCutOff
from lifeline.routing.health import Health, State
from lifeline.server.worker_state import LinkedCircuits, LinkedLimits, StateLink, StateService


def _serve(path: str, ready: Any, done: Any, cpu: Any) -> None:
    async def main() -> None:
        service = StateService(path)
        await service.start()
        ready.set()
        while not done.is_set():
            await asyncio.sleep(0.05)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu.value = usage.ru_utime + usage.ru_stime
        await service.close()

    asyncio.run(main())


async def _seed() -> int:
    return 0


async def admits(store: LimitStore, n: int, concurrency: int) -> tuple[float, float]:
    """Seconds of wall clock and of this process's CPU for `n` admit + settle_tokens, `concurrency` at a time."""

    async def one(i: int) -> None:
        entry = await store.admit(f"k{i % concurrency}", rpm=10**9, tpm=10**12, tokens_estimate=100)
        await store.settle_tokens(entry, 60)

    return await _timed(one, n, concurrency)


async def reservations(store: LimitStore, n: int, concurrency: int) -> tuple[float, float]:
    async def one(i: int) -> None:
        held = await store.reserve(f"k{i % concurrency}", limit_nusd=10**18, period="day", amount_nusd=1000, seed=_seed)
        await store.settle(held, 600)

    return await _timed(one, n, concurrency)


async def _timed(one: Callable[[int], Awaitable[None]], n: int, concurrency: int) -> tuple[float, float]:
    queue = iter(range(n))

    async def lane() -> None:
        for i in queue:
            await one(i)

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return time.perf_counter() - wall, time.process_time() - cpu


async def propagation(path: str, rounds: int) -> list[float]:
    """Seconds from an open circuit in one link to its arrival in the other, `rounds` times."""
    a, b = StateLink(path, 1), StateLink(path, 2)
    await a.start()
    await b.start()
    here, there = Health(CircuitPolicy()), Health(CircuitPolicy())
    await LinkedCircuits(here, a).start()
    await LinkedCircuits(there, b).start()
    delays = []
    for i in range(rounds):
        target = f"t{i}"
        start = time.perf_counter()
        here.record_failure(target, UpstreamCutOff("cut off", upstream_status=403))
        while there.circuit(target).state is not State.OPEN:
            await asyncio.sleep(0)
        delays.append(time.perf_counter() - start)
    await a.close()
    await b.close()
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    n, c = args.n, args.concurrency
    ctx = multiprocessing.get_context("spawn")
    path = os.path.join(tempfile.mkdtemp(prefix="lifeline-bench-"), "state.sock")
    ready, done = ctx.Event(), ctx.Event()
    supervisor_cpu = ctx.Value("d", 0.0)
    server = ctx.Process(target=_serve, args=(path, ready, done, supervisor_cpu))
    server.start()
    ready.wait()

    def report(name: str, seconds: float, cpu: float, count: int) -> None:
        print(f"{name:<44} {seconds / count * 1e6:8.1f} us/request  {cpu / count * 1e6:8.1f} us CPU here")

    async def run() -> None:
        link = StateLink(path, 1)
        await link.start()
        for name, store in (("in process: admit + settle_tokens", InProcessLimits()), ("linked", LinkedLimits(link))):
            label = name if name != "linked" else "supervisor: admit + settle_tokens"
            report(label, *await admits(store, n, c), n)
        for name, store in (("in process: reserve + settle", InProcessLimits()), ("linked", LinkedLimits(link))):
            label = name if name != "linked" else "supervisor: reserve + settle"
            report(label, *await reservations(store, n, c), n)
        for name, store in (("supervisor: admit, one at a time", LinkedLimits(link)),):
            report(name, *await admits(store, n // 4, 1), n // 4)
        await link.close()
        delays = sorted(await propagation(path, 500))
        p50, p99 = statistics.median(delays), delays[int(len(delays) * 0.99)]
        print(f"{'open circuit, one worker to another':<44} {p50 * 1e6:8.1f} us median  {p99 * 1e6:8.1f} us p99")

    asyncio.run(run())
    done.set()
    server.join()
    total = 2 * n + 2 * n + n // 4  # admits, settles, reserves, settles, one-at-a-time admits (+ their settles)
    cpu = supervisor_cpu.value
    print(f"{'supervisor CPU per message':<44} {cpu / (total + n // 4) * 1e6:8.1f} us (whole run, start included)")


if __name__ == "__main__":
    main()
