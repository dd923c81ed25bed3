"""The process's own figures for /metrics, under the names Prometheus clients use (process_*): resident
memory, CPU seconds, open and allowed file descriptors, start time. Read at scrape time from /proc where
there is one (Linux) and the resource module otherwise; a figure the platform cannot give is left out.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

from lifeline.metrics import Labels, Metrics

_PROC = Path("/proc/self")


def register_process_metrics(metrics: Metrics) -> None:
    started = _start_time() or time.time()
    metrics.gauge("process_resident_memory_bytes", "Resident memory size in bytes.", lambda: _one(_resident()))
    metrics.counter("process_cpu_seconds_total", "User and system CPU time spent in seconds.", lambda: _one(_cpu()))
    metrics.gauge("process_open_fds", "Open file descriptors.", lambda: _one(_open_fds()))
    metrics.gauge("process_max_fds", "The limit on open file descriptors.", lambda: _one(_max_fds()))
    metrics.gauge(
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch in seconds.",
        lambda: _one(started),
    )


def _one(value: float | None) -> list[tuple[Labels, float]]:
    return [] if value is None else [((), float(value))]


def _resident() -> float | None:
    try:
        pages = int((_PROC / "statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return float(pages * os.sysconf("SC_PAGE_SIZE"))


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _open_fds() -> float | None:
    for folder in (_PROC / "fd", Path("/dev/fd")):
        try:
            return float(len(os.listdir(folder)))
        except OSError:
            continue
    return None


def _max_fds() -> float | None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else float(soft)


def _start_time() -> float | None:
    """When the process started: its start in clock ticks after boot (/proc/self/stat), plus the boot time."""
    try:
        # the command name (field 2) may hold spaces: count the fields after its closing parenthesis
        ticks = int((_PROC / "stat").read_text().rpartition(")")[2].split()[19])
        boot = next(
            float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
        )
    except (OSError, IndexError, ValueError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")
