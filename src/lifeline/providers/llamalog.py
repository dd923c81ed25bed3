"""Loading llama.cpp models without touching the process's standard output and error.

llama-cpp-python silences a model load (`verbose=False`) by pointing file descriptors 1 and 2 at /dev/null
and back again. That is process-wide and not thread-safe: two models loading at once (a chat and an
embeddings target) can leave both descriptors on /dev/null for good, and every later log line is lost.
Instead, models load with `verbose=True`, so nothing is redirected, and what would have been printed goes
to the logger `lifeline.llama` at DEBUG: llama.cpp's native log through `llama_log_set`, and what
llama-cpp-python prints during a load through a stand-in for sys.stdout/sys.stderr that takes the loading
threads' writes only — every other thread's writes pass through untouched.
"""

from __future__ import annotations

import ctypes
import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

log = logging.getLogger("lifeline.llama")


class _Lines:
    """Text written in pieces, logged a whole line at a time (one buffer per thread)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def write(self, text: str) -> None:
        pending: str = getattr(self._local, "pending", "") + text
        *lines, self._local.pending = pending.split("\n")
        for line in lines:
            if line.strip():
                log.debug("%s", line.rstrip())


class _LoadingThreadsOnly:
    """sys.stdout or sys.stderr while models load: the loading threads' writes go to the log, the others'
    to the stream that was there before."""

    def __init__(self, original: TextIO, loading: set[int], lines: _Lines) -> None:
        self._original = original
        self._loading = loading
        self._lines = lines
        self._inside = threading.local()

    def write(self, text: str) -> int:
        # A log handler that writes to sys.stderr from the loading thread must not come back here.
        if threading.get_ident() in self._loading and not getattr(self._inside, "on", False):
            self._inside.on = True
            try:
                self._lines.write(text)
            finally:
                self._inside.on = False
            return len(text)
        return self._original.write(text)

    def flush(self) -> None:
        if threading.get_ident() not in self._loading:
            self._original.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


class QuietLoads:
    """Model loads that print nothing and redirect nothing. One per process, because what it manages is:
    the standard streams and llama.cpp's log callback."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loading: set[int] = set()
        self._saved: tuple[TextIO, TextIO] | None = None
        self._printed = _Lines()
        self._native = _Lines()
        self._callback: Any = None  # held for the life of the process: llama.cpp calls it from C

    @contextmanager
    def loading(self) -> Iterator[None]:
        """Around `llama_cpp.Llama(..., verbose=True)` on the thread that loads it."""
        with self._lock:
            self._install_native_log()
            if not self._loading:
                self._saved = (sys.stdout, sys.stderr)
                sys.stdout = _LoadingThreadsOnly(sys.stdout, self._loading, self._printed)
                sys.stderr = _LoadingThreadsOnly(sys.stderr, self._loading, self._printed)
            self._loading.add(threading.get_ident())
        try:
            yield
        finally:
            with self._lock:
                self._loading.discard(threading.get_ident())
                if not self._loading and self._saved is not None:
                    # put back only what is still ours: someone else may have replaced a stream meanwhile
                    if isinstance(sys.stdout, _LoadingThreadsOnly):
                        sys.stdout = self._saved[0]
                    if isinstance(sys.stderr, _LoadingThreadsOnly):
                        sys.stderr = self._saved[1]
                    self._saved = None

    def _install_native_log(self) -> None:
        if self._callback is not None:
            return
        import llama_cpp

        def native(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            # Every level at DEBUG: even llama.cpp's "errors" at load are notes (a pooling type overridden);
            # a load that really fails raises, and that is reported.
            self._native.write(text.decode("utf-8", "replace"))

        self._callback = llama_cpp.llama_log_callback(native)
        llama_cpp.llama_log_set(self._callback, ctypes.c_void_p(0))


#: the one instance: the standard streams and llama.cpp's log callback exist once per process
QUIET_LOADS = QuietLoads()
