"""What the offline jobs that drive a real gateway share (the drill, the eval): the gateway they start on
loopback, the config it runs, and the progress they report as requests finish.

A job starts its own gateway from the user's config (`job_gateway`) — the real router, providers, circuits
and price book — so that what it measures is what an application would see. Its progress goes to a
`Watcher` (cli/progress.py draws it as a bar on a terminal and as plain lines otherwise).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol

from lifeline.config.schema import Config
from lifeline.testing.gateway import RunningGateway, run_gateway


class Finished(Protocol):
    """A finished request as a watcher sees it: whether it was answered."""

    @property
    def outcome(self) -> str: ...


class Watcher(Protocol):
    """Told about progress as requests finish (a progress bar); called on the job's event loop."""

    def begin(self, phase: str, total: int) -> None: ...

    def update(self, result: Finished) -> None: ...

    def end(self) -> None: ...


def isolated(config: Config) -> Config:
    """The config a job's gateway runs: without Redis, so that the circuits it opens stay in this process and
    are not broadcast to the replicas serving production (nor are its rate-limit windows and budget
    reservations shared with theirs)."""
    if config.accounting.redis_url is None:
        return config
    accounting = config.accounting.model_copy(update={"redis_url": None})
    return config.model_copy(update={"accounting": accounting})


@contextlib.contextmanager
def job_gateway(config: Config, error: type[ValueError]) -> Iterator[RunningGateway]:
    """A gateway serving `isolated(config)` on loopback for the block; `error` (the job's own) when it cannot
    start — a model that cannot load, a port, a database."""
    try:
        manager = run_gateway(isolated(config))
        running = manager.__enter__()
    except Exception as exc:
        raise error(f"the gateway could not start: {exc}") from exc
    try:
        yield running
    finally:
        manager.__exit__(None, None, None)
