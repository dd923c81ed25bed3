"""Starting, watching and stopping the benchmark's processes; RSS and CPU time from /proc.

Every process is started by the benchmark itself (optionally pinned with ``taskset``), in its own session,
and stopped by its own process id: SIGTERM, then SIGKILL to that process group after a grace period.
Standard library only.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: niceness given to every process the benchmark starts (set by run.py; 0 leaves priorities alone)
NICE = 0


def can_nice(value: int) -> bool:
    """Whether this user may start processes at that niceness (a negative one needs root)."""
    try:
        return subprocess.run(["nice", "-n", str(value), "true"], capture_output=True).returncode == 0 and (
            value >= 0 or os.geteuid() == 0
        )
    except OSError:
        return False


def niced(cmd: list[str]) -> list[str]:
    return ["nice", "-n", str(NICE), *cmd] if NICE else cmd


def pinned(cmd: list[str], cores: str | None) -> list[str]:
    """The command pinned to ``cores`` with taskset (and at the benchmark's niceness); each wrapper execs the
    next, so the process id stays the command's."""
    return niced(["taskset", "-c", cores, *cmd] if cores else cmd)


@dataclass
class Proc:
    name: str
    cmd: list[str]
    log: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    popen: subprocess.Popen[bytes] | None = None
    _log_file: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> Proc:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log.open("wb")
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        self.popen = subprocess.Popen(
            self.cmd,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=self.cwd,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, n: int = 20) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def wait_line(self, prefix: str, timeout: float) -> str:
        """Wait for a line starting with ``prefix`` in the process's log; returns it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                for line in self.log.read_text(errors="replace").splitlines():
                    if line.startswith(prefix):
                        return line
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not print {prefix!r} within {timeout}s:\n{self.log_tail()}")

    def stop(self, grace: float = 10.0) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


# -- /proc -----------------------------------------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def family(pid: int) -> list[int]:
    """The process and all its descendants."""
    tree = _children()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(tree.get(p, ()))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process and its live descendants (threads included)."""
    total = 0
    for p in family(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / CLK_TCK


def rss_mb(pid: int) -> float:
    """Resident set size (VmRSS) of the process and its live descendants, in MB (10^6 bytes)."""
    kb = 0
    for p in family(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    kb += int(line.split()[1])
                    break
        except OSError:
            continue
    return round(kb * 1024 / 1e6, 2)


def rss_each(pid: int) -> dict[int, tuple[str, float]]:
    """Per process of the tree: (command line, VmRSS in MB) -- e.g. a supervisor, its workers and an engine."""
    out: dict[int, tuple[str, float]] = {}
    for p in family(pid):
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            kb = next(
                int(x.split()[1]) for x in Path(f"/proc/{p}/status").read_text().splitlines() if x.startswith("VmRSS:")
            )
        except (OSError, StopIteration):
            continue
        out[p] = (cmd, round(kb * 1024 / 1e6, 2))
    return out


def cpu_each(pid: int) -> dict[int, tuple[str, float]]:
    """Per process of the tree: (command line, its own user + system CPU seconds, threads included)."""
    out: dict[int, tuple[str, float]] = {}
    for p in family(pid):
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[p] = (cmd, (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return out


# -- a tiny synchronous client, for readiness probes and settling --------------------------------------------


def post_json(
    host: str, port: int, path: str, body: dict[str, Any], headers: dict[str, str] | None = None, timeout: float = 5.0
) -> tuple[int, float, bytes]:
    """One POST on a fresh connection: (status, seconds, body)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    started = time.perf_counter()
    try:
        conn.request("POST", path, json.dumps(body), {"content-type": "application/json", **(headers or {})})
        response = conn.getresponse()
        data = response.read()
        return response.status, time.perf_counter() - started, data
    finally:
        conn.close()


def wait_ready(
    proc: Proc,
    port: int,
    path: str,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
    timeout: float = 120.0,
) -> float:
    """Wait until a real chat request answers 200; returns the seconds it took."""
    started = time.monotonic()
    last = ""
    while time.monotonic() - started < timeout:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.log_tail()}")
        try:
            status, _, data = post_json("127.0.0.1", port, path, body, headers, timeout=5.0)
            if status == 200:
                return time.monotonic() - started
            last = f"{status} {data[:200]!r}"
        except OSError as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise RuntimeError(f"{proc.name} not ready after {timeout}s (last: {last}):\n{proc.log_tail()}")
