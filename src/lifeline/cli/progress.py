"""Progress of a job that drives a gateway (the drill, the eval): a live bar on a terminal, plain lines on
stderr otherwise (CI logs, pipes). Both are `lifeline.jobs.Watcher`s."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import typer

from lifeline.jobs import Finished


class PlainProgress:
    """Progress as a line now and then on stderr: for CI logs and pipes, where a bar would be noise."""

    def __init__(self, steps: int = 10) -> None:
        self._steps = steps
        self._phase = ""
        self._total = 0
        self._done = self._answered = self._errors = 0
        self._next = 0

    def begin(self, phase: str, total: int) -> None:
        self._phase, self._total = phase, total
        self._done = self._answered = self._errors = 0
        self._next = 1

    def update(self, result: Finished) -> None:
        self._done += 1
        self._answered += result.outcome == "answered"
        self._errors += result.outcome != "answered"
        if self._done >= self._next * self._total / self._steps or self._done == self._total:
            while self._next * self._total / self._steps <= self._done:
                self._next += 1
            typer.echo(
                f"{self._phase}: {self._done}/{self._total} done, {self._answered} answered, {self._errors} not",
                err=True,
            )

    def end(self) -> None:
        pass


class BarProgress:
    """A live bar on the terminal (rich, which comes with typer): one per pass, left on screen when done."""

    def __init__(self, make_progress: Callable[[], Any]) -> None:
        self._make_progress = make_progress
        self._progress: Any = None
        self._task: Any = None
        self._answered = self._errors = 0

    def begin(self, phase: str, total: int) -> None:
        self._answered = self._errors = 0
        self._progress = self._make_progress()
        self._progress.start()
        self._task = self._progress.add_task(phase, total=total, answered=0, errors=0)

    def update(self, result: Finished) -> None:
        self._answered += result.outcome == "answered"
        self._errors += result.outcome != "answered"
        self._progress.update(self._task, advance=1, answered=self._answered, errors=self._errors)

    def end(self) -> None:
        self._progress.stop()


def progress_watcher() -> PlainProgress | BarProgress:
    try:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError:
        return PlainProgress()
    console = Console(stderr=True)
    if not console.is_terminal:
        return PlainProgress()
    return BarProgress(
        lambda: Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[answered]} answered · {task.fields[errors]} not"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
    )


@contextlib.contextmanager
def gateway_log(path: Path) -> Iterator[None]:
    """The gateway's own log goes to a file for a job: failovers are expected there, and on the
    terminal they would tear through the progress bar."""
    from lifeline.logs import TextFormatter

    logger = logging.getLogger("lifeline")
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    saved = (logger.handlers[:], logger.level, logger.propagate)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.handlers[:], level, logger.propagate = saved
        logger.setLevel(level)
        handler.close()


def say_cost_cap(spent_usd: float, cap_usd: float) -> None:
    """The line a job stopped by its cost cap ends with (eval and audit alike): how to go on."""
    typer.echo(
        f"stopped at the cost cap: ${spent_usd:.4f} spent of ${cap_usd:.4f}; rerun with the same --out and a "
        "higher --max-cost to continue",
        err=True,
    )
