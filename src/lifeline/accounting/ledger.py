"""The usage ledger: one record per client request, written by a background thread in group commits.

The request path only calls `Ledger.record`, which appends to a bounded in-memory buffer and returns at
once; it never waits on the database. A writer thread with its own connection takes up to `batch_size`
records and writes them in one transaction, one statement, at least every `commit_interval` seconds. The
insert skips ids already present, so a batch retried after an unclear failure is written exactly once.
While the database is down the batch stays in memory and is retried with capped backoff; a full buffer
drops new records (counted), it never blocks. After SIGKILL at most about `commit_interval` seconds of records are lost.

One record must never stop the rest: text is cleaned and numbers kept in their columns' range before the
database sees them, and when the database still refuses a batch (not an outage) the records are written
one by one and any it refuses goes to the dead-letter table `ledger_rejected`, counted in `rejected`.

The machinery is a `Writer` over a `Table` (how an item becomes a row, how rows are written, refused and
pruned): `Ledger` is the writer of ledger records; the capture store (accounting/captures.py) is another.

Also here: retention pruning in small batches and the read-side sums budgets need (`spent_since`).
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson

from lifeline.accounting.db import Database
from lifeline.accounting.migrations import migrate
from lifeline.accounting.records import LedgerRecord
from lifeline.config.schema import LedgerSettings, WriterSettings
from lifeline.errors import DatabaseUnavailable

log = logging.getLogger("lifeline.accounting")

# A subquery with LIMIT works on SQLite (without the optional DELETE … LIMIT) and on PostgreSQL alike.
_PRUNE = "DELETE FROM ledger WHERE id IN (SELECT id FROM ledger WHERE started_at < ? LIMIT ?)"
_REJECTED_COLUMNS = ("id", "rejected_at", "error", "record")
# Columns declared NOT NULL: a record missing one would fail its whole batch on every retry, forever.
_REQUIRED = frozenset(LedgerRecord.COLUMNS) - {"key_id", "target", "model", "ttft_ms", "cache"}
_TEXT = frozenset({"id", "request_id", "key_id", "alias", "target", "model", "outcome", "cache"})
#: integer columns and their bounds (INTEGER and BIGINT on PostgreSQL)
_INTEGER = {
    "status": 2**31 - 1,
    "prompt_tokens": 2**31 - 1,
    "completion_tokens": 2**31 - 1,
    "cost_nusd": 2**63 - 1,
}
_FLOAT = frozenset({"ttft_ms", "latency_ms", "started_at", "finished_at"})
_BOOL = frozenset({"usage_estimated", "streamed", "shadow"})
#: text longer than this (a model name an upstream made up, say) is cut
TEXT_LIMIT = 1000

_DAY = 86_400.0
_WARN_EVERY = 10.0  # seconds between two warnings of the same kind, so an outage does not flood the log


R = TypeVar("R")


@dataclass(frozen=True)
class Table(Generic[R]):
    """What a `Writer` writes, and how: `row` turns an item into insert parameters (ValueError or TypeError:
    unwritable, set aside); `write` inserts rows in one transaction, skipping ids already present; `reject`
    keeps refused items in a dead-letter table (None: they are only counted); `cutoff` is the retention
    cutoff for the wall-clock time given (None: keep everything) and `prune` deletes at most `limit` rows
    before it; `dead_letter` names the table `reject` writes to, for the log (None: refused items are
    dropped)."""

    label: str
    row: Callable[[R], tuple[Any, ...]]
    write: Callable[[Database, Sequence[Sequence[Any]]], None]
    reject: Callable[[Database, list[tuple[R, str]]], None] | None
    cutoff: Callable[[float], Any]
    prune: Callable[[Database, Any, int], int]
    dead_letter: str | None = None


class _FlushMarker:
    """Put in the buffer by `flush`; set once everything recorded before it is committed."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


def record_row(rec: LedgerRecord) -> tuple[Any, ...]:
    """The record as insert parameters, in `LedgerRecord.COLUMNS` order, cleaned so that both databases can
    store every value (see `clean_value`). ValueError when a required field is missing.

    Booleans stay Python bools: PostgreSQL needs them for BOOLEAN columns and sqlite3 stores them as 0/1.
    """
    row = tuple(clean_value(name, getattr(rec, name)) for name in LedgerRecord.COLUMNS)
    missing = [
        name for name, value in zip(LedgerRecord.COLUMNS, row, strict=True) if value is None and name in _REQUIRED
    ]
    if missing:
        raise ValueError(f"ledger record {rec.id} lacks {', '.join(missing)}")
    return row


def clean_value(column: str, value: Any) -> Any:
    """A value its column can hold on SQLite and PostgreSQL alike: text without NUL (PostgreSQL refuses it;
    it becomes U+FFFD) or lone surrogates (not UTF-8), at most TEXT_LIMIT characters; integers within the
    column's range; no infinite or NaN float; `attempts` as JSON text. None stays None."""
    if value is None:
        return None
    if column in _TEXT:
        return clean_text(value)
    if column in _INTEGER:
        bound = _INTEGER[column]
        try:
            number = int(value)
        except (TypeError, ValueError, OverflowError):
            return None
        return max(-bound - 1, min(bound, number))
    if column in _FLOAT:
        try:
            real = float(value)
        except (TypeError, ValueError, OverflowError):
            return None
        return real if math.isfinite(real) else None
    if column in _BOOL:
        return bool(value)
    if column == "attempts":
        return _json_text(value)
    return value


def clean_text(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    if len(text) > TEXT_LIMIT:
        text = text[:TEXT_LIMIT]
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:  # a lone surrogate (json.loads lets "\ud800" through)
            text = text.encode(errors="replace").decode()
    return text


def _json_text(value: Any) -> str:
    """JSON as text. orjson writes NUL as the escape \\u0000, which a TEXT column stores; it refuses lone
    surrogates and integers beyond 64 bits, which are cleaned first."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return orjson.dumps(_clean_json(value), default=str).decode()


def _clean_json(value: Any) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(k): _clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean_json(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return str(value)
    return value


def rejected_row(rec: LedgerRecord, error: str, now: float | None = None) -> tuple[Any, ...]:
    """A refused record as a row of the dead-letter table: the whole record as JSON text, and why."""
    record = {name: getattr(rec, name) for name in LedgerRecord.COLUMNS}
    return (clean_text(rec.id), time.time() if now is None else now, clean_text(error), _json_text(record))


def write_batch(db: Database, rows: Sequence[Sequence[Any]]) -> None:
    """Insert rows in one transaction, one statement (see `Database.insert_many`); ids already present are
    skipped, so a retry is harmless."""
    with db.transaction():
        db.insert_many("ledger", LedgerRecord.COLUMNS, rows, skip_existing="id")


def write_rejected(db: Database, rows: Sequence[Sequence[Any]]) -> None:
    """Insert rows of the dead-letter table in one transaction; a retry is harmless."""
    with db.transaction():
        db.insert_many("ledger_rejected", _REJECTED_COLUMNS, rows, skip_existing="id")


def prune_step(db: Database, before: float, limit: int) -> int:
    """Delete at most `limit` records that started before `before`; one short statement, its own commit."""
    return db.execute(_PRUNE, (before, limit))


def spent_since(db: Database, key_id: str, since_ts: float) -> int:
    """What a key has spent (nano-USD) on requests started at or after `since_ts`."""
    rows = db.query(
        "SELECT COALESCE(SUM(cost_nusd), 0) FROM ledger WHERE key_id = ? AND started_at >= ?", (key_id, since_ts)
    )
    return int(rows[0][0])


def spent_shadow_since(db: Database, alias: str, since_ts: float) -> int:
    """What an alias's shadow calls have cost (nano-USD) since `since_ts`: its daily cap's reading."""
    rows = db.query(
        "SELECT COALESCE(SUM(cost_nusd), 0) FROM ledger WHERE shadow = ? AND alias = ? AND started_at >= ?",
        (True, alias, since_ts),
    )
    return int(rows[0][0])


def spent_by_key_since(db: Database, since_ts: float) -> dict[str, int]:
    """What every key has spent (nano-USD) on requests started at or after `since_ts`."""
    rows = db.query(
        "SELECT key_id, SUM(cost_nusd) FROM ledger WHERE key_id IS NOT NULL AND started_at >= ? GROUP BY key_id",
        (since_ts,),
    )
    return {str(key_id): int(total) for key_id, total in rows}


def _short_error(exc: BaseException) -> str:
    """One line about a failure, for /metrics and logs: no connection strings, no passwords."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    if "://" in text or "password" in text.lower():
        text = ""
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text[:200]


def ledger_table(retention_days: float | None) -> Table[LedgerRecord]:
    """The ledger as a `Writer` writes it: refused records go to `ledger_rejected`."""

    def reject(db: Database, items: list[tuple[LedgerRecord, str]]) -> None:
        write_rejected(db, [rejected_row(rec, error) for rec, error in items])

    def cutoff(now: float) -> float | None:
        return None if retention_days is None else now - retention_days * _DAY

    return Table("ledger", record_row, write_batch, reject, cutoff, prune_step, "ledger_rejected")


class Writer(Generic[R]):
    """A bounded buffer in front of a writer thread that writes `table`."""

    def __init__(
        self,
        settings: WriterSettings,
        open_db: Callable[[], Database],
        table: Table[R],
        *,
        retry_base: float = 0.1,
        retry_max: float = 5.0,
        prune_batch: int = 1000,
        prune_pause: float = 0.05,
        prune_every: float = 3600.0,
    ) -> None:
        self.settings = settings
        self.table = table
        self._label = table.label
        self._open_db = open_db
        self._retry_base = retry_base
        self._retry_max = retry_max
        self._prune_batch = prune_batch
        self._prune_pause = prune_pause
        self._prune_every = prune_every

        # Producers append on the right, the writer pops on the left: both are atomic on a deque, so the
        # request path takes no lock. The bound is checked by hand because deque(maxlen=…) would silently
        # evict the oldest record instead of refusing the new one.
        self._buffer: collections.deque[R | _FlushMarker] = collections.deque()
        # The batch being written: it leaves the buffer only once committed, so a failure loses nothing.
        self._pending: list[R] = []
        self._rows: list[tuple[Any, ...]] = []
        self._pending_len = 0
        self._markers: list[_FlushMarker] = []
        #: records found unwritable before reaching the database (a required field missing), with the reason:
        #: written to the dead-letter table with the next commit
        self._unwritable: list[tuple[R, str]] = []

        self._wake = threading.Event()  # a full batch, a flush or close: do not wait for the interval
        self._stopping = threading.Event()  # close(): drain, then exit
        self._abandon = threading.Event()  # close() timed out: exit now, even with records unwritten
        self._closed = False
        self._thread: threading.Thread | None = None
        self._db: Database | None = None

        self._drop_lock = threading.Lock()
        self._dropped = 0
        self._last_drop_warning = -_WARN_EVERY
        self._written = 0
        self._commits = 0
        self._pruned = 0
        self._write_errors = 0
        self._rejected = 0
        self._last_rejection_warning = -_WARN_EVERY
        #: called from the writer thread with the number of records just set aside (for /metrics)
        self.on_rejected: Callable[[int], None] | None = None
        self._last_error: str | None = None
        self._last_error_warning = -_WARN_EVERY
        self._last_commit_at: float | None = None
        self._backoff = retry_base

    # --- the request path --------------------------------------------------------------------------

    def record(self, rec: R) -> bool:
        """Queue a record for the writer. Never blocks, never touches the database; False when the buffer
        is full (or the ledger closed) and the record was dropped."""
        if self._closed or len(self._buffer) + self._pending_len >= self.settings.buffer_size:
            self._drop()
            return False
        self._buffer.append(rec)
        if len(self._buffer) >= self.settings.batch_size and not self._wake.is_set():
            self._wake.set()
        return True

    def _drop(self) -> None:
        with self._drop_lock:
            self._dropped += 1
            now = time.monotonic()
            warn = now - self._last_drop_warning >= _WARN_EVERY
            if warn:
                self._last_drop_warning = now
        if warn:
            log.warning(
                "%s buffer full (%d records waiting): records dropped, %d so far",
                self._label,
                self.queue_depth,
                self._dropped,
            )

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread; it opens its own connection and applies migrations."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"lifeline-{self._label}", daemon=True)
        self._thread.start()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything recorded before this call is committed; False on timeout."""
        if self._thread is None or not self._thread.is_alive():
            return not self._buffer and not self._pending
        marker = _FlushMarker()
        self._buffer.append(marker)
        self._wake.set()
        return marker.done.wait(timeout)

    def close(self, timeout: float = 10.0) -> bool:
        """Refuse new records, write everything queued, stop the writer. False when records were left
        unwritten after `timeout` seconds (the database stayed down); they are lost and logged."""
        self._closed = True
        if self._thread is None:
            if not self._buffer:
                return True
            self.start()  # records queued before start() are written all the same
        assert self._thread is not None
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            return True
        self._abandon.set()
        self._wake.set()
        self._thread.join(max(1.0, self._retry_max))
        lost = sum(1 for item in self._buffer if not isinstance(item, _FlushMarker)) + self._pending_len
        log.error("%s closed with %d record(s) unwritten: %s", self._label, lost, self._last_error or "timeout")
        return False

    # --- stats (for /metrics) -----------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        """Records waiting for the writer, including the batch being written."""
        return len(self._buffer) + self._pending_len

    @property
    def written(self) -> int:
        """Records committed since start."""
        return self._written

    @property
    def commits(self) -> int:
        """Transactions committed since start (each one a batch of records)."""
        return self._commits

    @property
    def dropped(self) -> int:
        """Records refused because the buffer was full (or arrived after close)."""
        return self._dropped

    @property
    def write_errors(self) -> int:
        """Failed attempts to open the database or commit a batch."""
        return self._write_errors

    @property
    def rejected(self) -> int:
        """Records the database refused (or that lacked a required field), set aside in `ledger_rejected`."""
        return self._rejected

    @property
    def last_error(self) -> str | None:
        return self._last_error

    @property
    def last_commit_at(self) -> float | None:
        """Wall-clock time of the last successful commit."""
        return self._last_commit_at

    @property
    def pruned(self) -> int:
        """Records deleted by retention since start."""
        return self._pruned

    # --- retention ---------------------------------------------------------------------------------

    def _prune_cutoff(self, now: float | None = None) -> Any:
        return self.table.cutoff(time.time() if now is None else now)

    def prune(self, now: float | None = None) -> int:
        """Delete records past retention, in small batches with a pause between, on a connection of its
        own; return how many. The writer does the same about once an hour."""
        cutoff = self._prune_cutoff(now)
        if cutoff is None:
            return 0
        db = self._open_db()
        try:
            migrate(db)
            total = 0
            while True:
                deleted = self.table.prune(db, cutoff, self._prune_batch)
                total += deleted
                if deleted < self._prune_batch:
                    return total
                time.sleep(self._prune_pause)
        finally:
            db.close()

    # --- the writer thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException:  # a bug here must be loud: the table would silently stop being written
            log.exception("the %s writer stopped", self._label)
        finally:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _loop(self) -> None:
        # Connect and migrate now rather than at the first commit, so a database that is down shows in
        # write_errors / last_error from the start; failing here is retried like any failed commit.
        try:
            self._connection()
        except Exception as exc:
            self._failed(exc)
        interval = self.settings.commit_interval
        next_commit = time.monotonic() + interval
        next_prune = time.monotonic()  # once at start, then every prune_every seconds
        prune_before: Any = None
        while not self._abandon.is_set():
            # Cleared before looking at the buffer, so a wake-up set meanwhile is not lost.
            self._wake.clear()
            self._take()
            now = time.monotonic()
            stopping = self._stopping.is_set()
            due = bool(self._markers) or len(self._pending) >= self.settings.batch_size or now >= next_commit
            if (due or stopping) and (self._pending or self._markers):
                if not self._commit():
                    self._abandon.wait(self._backoff)
                    self._backoff = min(self._retry_max, self._backoff * 2)
                    continue
                next_commit = time.monotonic() + interval
                continue  # more may have queued up while writing
            if now >= next_commit:
                next_commit = now + interval
            if stopping and not self._buffer:
                return
            if now >= next_prune:
                next_prune = now + self._prune_every
                prune_before = self._prune_cutoff()
            if prune_before is not None:
                # One small delete per turn of the loop, so commits keep their pace while a backlog is pruned.
                if self._prune_one(prune_before):
                    self._wake.wait(min(self._prune_pause, max(0.0, next_commit - time.monotonic())))
                    continue
                prune_before = None
            self._wake.wait(max(0.0, next_commit - time.monotonic()))

    def _take(self) -> None:
        """Move records from the buffer into the pending batch, up to batch_size, stopping at a flush marker
        (what came before it is committed first)."""
        room = self.settings.batch_size - len(self._pending)
        try:
            while room > 0:
                try:
                    item = self._buffer.popleft()
                except IndexError:
                    return
                if isinstance(item, _FlushMarker):
                    self._markers.append(item)
                    return
                try:
                    row = self.table.row(item)
                except (ValueError, TypeError) as exc:  # unwritable (e.g. a field missing): set aside, never retried
                    self._unwritable.append((item, _short_error(exc)))
                    continue
                self._pending.append(item)
                self._rows.append(row)
                room -= 1
        finally:
            self._pending_len = len(self._pending) + len(self._unwritable)

    def _connection(self) -> Database:
        if self._db is None:
            db = self._open_db()
            try:
                migrate(db)
            except BaseException:
                db.close()
                raise
            self._db = db
        return self._db

    def _commit(self) -> bool:
        """Write the pending batch in one transaction; on success release waiting flushes."""
        if self._pending or self._unwritable:
            try:
                db = self._connection()
                self._write_pending(db)
                if self._unwritable:
                    if self.table.reject is not None:
                        self.table.reject(db, list(self._unwritable))
                    self._set_aside([error for _, error in self._unwritable])
                    self._unwritable.clear()
            except Exception as exc:  # a database down, full or refusing: keep what is left and retry later
                self._failed(exc)
                return False
            finally:
                self._pending_len = len(self._pending) + len(self._unwritable)
            self._last_commit_at = time.time()
            if self._backoff > self._retry_base:
                log.info("%s writes recovered after %d error(s)", self._label, self._write_errors)
            self._backoff = self._retry_base
        for marker in self._markers:
            marker.done.set()
        self._markers.clear()
        return True

    def _write_pending(self, db: Database) -> None:
        """Commit the pending batch. When the database refuses it — not an outage: a value it cannot store —
        write its records one by one and set aside in `ledger_rejected` each one it refuses, so that one
        record never holds up the rest. Raises, keeping in `_pending` what is still unwritten, on an outage
        or when even the dead-letter table refuses a record."""
        if not self._pending:
            return
        try:
            self.table.write(db, self._rows)
        except DatabaseUnavailable:
            raise
        except Exception:
            pass  # one record or more is refused: find which
        else:
            self._written += len(self._pending)
            self._commits += 1
            self._pending.clear()
            self._rows.clear()
            return
        kept: list[tuple[R, tuple[Any, ...]]] = []
        refusal: Exception | None = None
        reasons: list[str] = []
        items = list(zip(self._pending, self._rows, strict=True))
        try:
            for index, (rec, row) in enumerate(items):
                try:
                    self.table.write(db, [row])
                except DatabaseUnavailable:
                    kept.extend(items[index:])
                    raise
                except Exception as exc:
                    reason = _short_error(exc)
                    try:
                        if self.table.reject is not None:
                            self.table.reject(db, [(rec, reason)])
                    except DatabaseUnavailable:
                        kept.extend(items[index:])
                        raise
                    except Exception as dead_letter_error:  # kept in memory, tried again with the next commit
                        kept.append((rec, row))
                        refusal = dead_letter_error
                        continue
                    reasons.append(reason)
                else:
                    self._written += 1
                    self._commits += 1
        finally:
            self._pending[:] = [rec for rec, _ in kept]
            self._rows[:] = [row for _, row in kept]
            if reasons:
                self._set_aside(reasons)
        if refusal is not None:
            raise refusal

    def _set_aside(self, reasons: list[str]) -> None:
        """Count records just written to the dead-letter table (or, for a table without one, dropped), say so
        (not more than once in a while)."""
        self._rejected += len(reasons)
        now = time.monotonic()
        if now - self._last_rejection_warning >= _WARN_EVERY:
            self._last_rejection_warning = now
            kept = f"kept in table {self.table.dead_letter}" if self.table.dead_letter else "dropped"
            log.error(
                "%s: %d record(s) refused by the database, %s (%d so far): %s",
                self._label,
                len(reasons),
                kept,
                self._rejected,
                reasons[0],
            )
        if self.on_rejected is not None:
            try:
                self.on_rejected(len(reasons))
            except Exception:  # counting must not stop the writer
                log.debug("the ledger's on_rejected callback failed", exc_info=True)

    def _prune_one(self, before: float) -> bool:
        """One retention batch; True when there may be more to delete."""
        try:
            deleted = self.table.prune(self._connection(), before, self._prune_batch)
        except Exception as exc:
            self._failed(exc)
            return False
        self._pruned += deleted
        return deleted >= self._prune_batch

    def _failed(self, exc: Exception) -> None:
        self._write_errors += 1
        self._last_error = _short_error(exc)
        # A fresh connection next time: the old one may be broken in ways a retry on it would not fix.
        if self._db is not None:
            try:
                self._db.close()
            except Exception:
                log.debug("closing a failed %s connection failed too", self._label, exc_info=True)
            self._db = None
        now = time.monotonic()
        if now - self._last_error_warning >= _WARN_EVERY:
            self._last_error_warning = now
            log.warning(
                "%s write failed (%d record(s) kept, retrying): %s", self._label, self.queue_depth, self._last_error
            )


class Ledger(Writer[LedgerRecord]):
    """The ledger's writer. Whether to have a ledger at all (settings.enabled) is the caller's decision."""

    def __init__(
        self,
        settings: LedgerSettings,
        open_db: Callable[[], Database],
        *,
        retry_base: float = 0.1,
        retry_max: float = 5.0,
        prune_batch: int = 1000,
        prune_pause: float = 0.05,
        prune_every: float = 3600.0,
    ) -> None:
        super().__init__(
            settings,
            open_db,
            ledger_table(settings.retention_days),
            retry_base=retry_base,
            retry_max=retry_max,
            prune_batch=prune_batch,
            prune_pause=prune_pause,
            prune_every=prune_every,
        )
