"""The capture store: requests of aliases with `capture:` (or `shadow:`), the answers their clients received,
and the shadow candidates' answers beside them — for `lifeline eval` (docs/eval.md).

The request path only decides (`plan`: the key's opt-out, the sample, the size limit) and queues a
`Capture` or `ShadowAnswer`; redaction and serialisation happen on the writer's thread, which is the
ledger's `Writer` over the tables `captures` and `capture_shadows` (migration 004_captures). A full buffer
drops (counted), a database down keeps the batch and retries: a capture never delays or fails a request.

`iter_items` reads captures back as eval items (the format of `lifeline capture export`).
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from lifeline.accounting.db import Database
from lifeline.accounting.keys import VirtualKey
from lifeline.accounting.ledger import Table, Writer, clean_text, clean_value
from lifeline.accounting.records import usd
from lifeline.config.schema import CaptureSettings, Config

log = logging.getLogger("lifeline.accounting")

_DAY = 86_400.0
#: captures of an alias that no longer has `capture:` are kept this many days
ORPHAN_RETENTION_DAYS = 30.0

# --- redaction -------------------------------------------------------------------------------------

#: API-key-like tokens: well-known key prefixes, and any long run of letters and digits mixing both
_KEY = re.compile(
    r"\b(?:sk|pk|rk|ll|ghp|gho|ghs|ghu|xox[abprs]|AKIA|AIza)[-_A-Za-z0-9]{12,}"
    r"|\b(?=[A-Za-z0-9_-]*\d)(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{32,}\b"
)
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
#: groups of digits joined by spaces, dots or dashes, optionally +country and (area): phone-shaped; it is a
#: phone number when it holds at least PHONE_DIGITS digits (so dates and short figures stay)
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,4}(?![\w])")
PHONE_DIGITS = 9
#: long digit runs (card, account and ID numbers)
_DIGITS = re.compile(r"\d{9,}")


def _phone(match: re.Match[str]) -> str:
    text = match.group(0)
    return "[phone]" if sum(c.isdigit() for c in text) >= PHONE_DIGITS else text


#: fields whose string values the chat API writes itself (ids, enumerations), never a user's text
STRUCTURAL = frozenset({"id", "object", "model", "system_fingerprint", "tool_call_id", "call_id", "finish_reason",
                        "role", "type"})  # fmt: skip


class Redactor:
    """What a capture's settings redact, compiled once at start-up."""

    def __init__(self, settings: CaptureSettings) -> None:
        self.enabled = settings.redact
        self.rules: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
            (_KEY, "[key]"),
            (_EMAIL, "[email]"),
            (_PHONE, _phone),
            (_DIGITS, "[number]"),
            *((re.compile(p), "[redacted]") for p in settings.redact_patterns),
        ]

    def text(self, text: str) -> str:
        if not self.enabled:
            return text
        for pattern, replacement in self.rules:
            text = pattern.sub(replacement, text)
        return text

    def value(self, value: Any) -> Any:
        """Every string in a JSON value redacted (keys are left as they are), except the identifiers and
        enumerations the API itself writes (`STRUCTURAL`): a completion id of 32 hex digits is not a key."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: v if k in STRUCTURAL and isinstance(v, str) else self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        return value


# --- records ---------------------------------------------------------------------------------------


def new_capture_id() -> str:
    return f"cap_{uuid.uuid4().hex}"


@dataclass(slots=True)
class Plan:
    """A request chosen for capture (and shadowing): decided at admission, carried to its finish."""

    alias: str
    shadow: bool
    #: the request's OpenAI chat body (/v1/messages: as translated)
    request: dict[str, Any]
    id: str = field(default_factory=new_capture_id)
    #: set once the capture is queued: only then may shadow answers be stored beside it
    recorded: bool = False


@dataclass(slots=True)
class Capture:
    """A client's request and the answer it received (an OpenAI chat body and `chat.completion`)."""

    id: str
    request_id: str
    alias: str
    key_id: str | None
    captured_at: float
    request: dict[str, Any]
    response: dict[str, Any] | None
    target: str | None
    model: str | None
    outcome: str
    streamed: bool
    latency_ms: float | None
    ttft_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    cost_nusd: int
    shadowed: bool
    redactor: Redactor
    max_bytes: int


@dataclass(slots=True)
class ShadowAnswer:
    """What one shadow candidate answered to a captured request (or the error it gave)."""

    capture_id: str
    alias: str
    #: the candidate as configured (a target or an alias) and the target that answered
    candidate: str
    target: str | None
    started_at: float
    response: dict[str, Any] | None
    error: dict[str, Any] | None
    latency_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    cost_nusd: int
    redactor: Redactor
    max_bytes: int
    id: str = field(default_factory=lambda: f"shd_{uuid.uuid4().hex}")


Item = Capture | ShadowAnswer

_CAPTURE_COLUMNS = (
    "id", "request_id", "alias", "key_id", "captured_at", "request", "response", "error", "target", "model",
    "outcome", "streamed", "latency_ms", "ttft_ms", "prompt_tokens", "completion_tokens", "cost_nusd",
    "redacted", "shadowed",
)  # fmt: skip
_SHADOW_COLUMNS = (
    "id", "capture_id", "alias", "candidate", "target", "started_at", "response", "error", "latency_ms",
    "prompt_tokens", "completion_tokens", "cost_nusd",
)  # fmt: skip


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _answer(redactor: Redactor, response: dict[str, Any] | None, max_bytes: int) -> tuple[str | None, str | None]:
    """An answer as stored (redacted JSON), or, when it is larger than `max_bytes`, no body and an error
    saying so."""
    if response is None:
        return None, None
    text = _json(redactor.value(response))
    if len(text.encode()) > max_bytes:
        error = {"status": None, "code": "capture_too_large", "message": f"answer larger than {max_bytes} bytes"}
        return None, _json(error)
    return text, None


def _number(column: str, value: Any) -> Any:
    return clean_value(column, value)


def item_row(item: Item) -> tuple[Any, ...]:
    """A row for the writer: the table's tag, then its insert parameters. Runs on the writer's thread: this
    is where redaction and serialisation happen. ValueError/TypeError: unwritable (set aside, counted)."""
    redactor = item.redactor
    response, error = _answer(redactor, item.response, item.max_bytes)
    if isinstance(item, Capture):
        return (
            "capture",
            clean_text(item.id),
            clean_text(item.request_id),
            clean_text(item.alias),
            None if item.key_id is None else clean_text(item.key_id),
            float(item.captured_at),
            _json(redactor.value(item.request)),
            response,
            error,
            None if item.target is None else clean_text(item.target),
            None if item.model is None else clean_text(item.model),
            clean_text(item.outcome),
            bool(item.streamed),
            _number("latency_ms", item.latency_ms),
            _number("ttft_ms", item.ttft_ms),
            _number("prompt_tokens", item.prompt_tokens) or 0,
            _number("completion_tokens", item.completion_tokens) or 0,
            _number("cost_nusd", item.cost_nusd) or 0,
            redactor.enabled,
            bool(item.shadowed),
        )
    if item.error is not None:
        error = _json(redactor.value(item.error))
    return (
        "shadow",
        clean_text(item.id),
        clean_text(item.capture_id),
        clean_text(item.alias),
        clean_text(item.candidate),
        None if item.target is None else clean_text(item.target),
        float(item.started_at),
        response,
        error,
        _number("latency_ms", item.latency_ms),
        _number("prompt_tokens", item.prompt_tokens) or 0,
        _number("completion_tokens", item.completion_tokens) or 0,
        _number("cost_nusd", item.cost_nusd) or 0,
    )


def write_items(db: Database, rows: Sequence[Sequence[Any]]) -> None:
    """Insert tagged rows into their tables in one transaction; ids already present are skipped."""
    captures = [row[1:] for row in rows if row[0] == "capture"]
    shadows = [row[1:] for row in rows if row[0] == "shadow"]
    with db.transaction():
        if captures:
            db.insert_many("captures", _CAPTURE_COLUMNS, captures, skip_existing="id")
        if shadows:
            db.insert_many("capture_shadows", _SHADOW_COLUMNS, shadows, skip_existing="id")


#: retention: (alias or None for "every alias not listed", cutoff) pairs
Cutoffs = list[tuple[str | None, float]]


def retention_days(config: Config) -> dict[str, float | None]:
    """Each capturing alias's retention (None: kept)."""
    return {name: spec.retention_days for name in config.aliases if (spec := config.capture_of(name)) is not None}


def cutoffs_at(days: dict[str, float | None], now: float) -> Cutoffs:
    """The retention cutoffs at `now`: each capturing alias's own, and ORPHAN_RETENTION_DAYS for the captures
    of aliases that capture no more (the `None` entry)."""
    pairs: Cutoffs = [(alias, now - d * _DAY) for alias, d in sorted(days.items()) if d is not None]
    pairs.append((None, now - ORPHAN_RETENTION_DAYS * _DAY))
    return pairs


def prune_captures(db: Database, cutoffs: Cutoffs, limit: int, kept: Sequence[str] = ()) -> int:
    """Delete at most `limit` captures and `limit` shadow answers past each alias's cutoff (the `None` entry:
    aliases not in `kept`); one short statement each."""
    total = 0
    for alias, before in cutoffs:
        for table, column in (("captures", "captured_at"), ("capture_shadows", "started_at")):
            if alias is not None:
                where, params = "alias = ?", [alias]
            elif kept:
                where, params = f"alias NOT IN ({', '.join('?' for _ in kept)})", list(kept)
            else:
                where, params = "1 = 1", []
            sql = f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE {where} AND {column} < ? LIMIT ?)"
            total += db.execute(sql, [*params, before, limit])
    return total


def capture_table(config: Config) -> Table[Item]:
    days = retention_days(config)
    kept = sorted(days)

    def cutoff(now: float) -> Cutoffs:
        return cutoffs_at(days, now)

    def prune(db: Database, cutoffs: Cutoffs, limit: int) -> int:
        return prune_captures(db, cutoffs, limit, kept)

    return Table("capture", item_row, write_items, None, cutoff, prune)


# --- the store -------------------------------------------------------------------------------------


class CaptureStore:
    """Decides which requests are captured and queues what is captured for the writer."""

    def __init__(
        self, config: Config, open_db: Callable[[], Database], rng: random.Random | None = None, **writer: Any
    ) -> None:
        self.config = config
        self.settings = {name: s for name in config.aliases if (s := config.capture_of(name)) is not None}
        self.redactors = {name: Redactor(s) for name, s in self.settings.items()}
        self.writer: Writer[Item] = Writer(config.accounting.captures, open_db, capture_table(config), **writer)
        self.rng = rng or random.Random()
        #: requests not captured because they were larger than max_bytes, per alias
        self.too_large: dict[str, int] = {}

    @property
    def active(self) -> bool:
        return bool(self.settings)

    def plan(self, alias: str, key: VirtualKey | None, body: dict[str, Any]) -> Plan | None:
        """Whether this request is captured (and shadowed). Never raises for a request's sake."""
        settings = self.settings.get(alias)
        if settings is None or (key is not None and key.metadata.get("capture") is False):
            return None
        shadow_spec = self.config.aliases[alias].shadow
        shadow = shadow_spec is not None and self.rng.random() < shadow_spec.sample
        if not shadow and not self.rng.random() < settings.sample:
            return None
        try:
            size = len(orjson.dumps(body))
        except TypeError:
            size = settings.max_bytes + 1
        if size > settings.max_bytes:
            self.too_large[alias] = self.too_large.get(alias, 0) + 1
            return None
        return Plan(alias, shadow, body)

    def capture(self, plan: Plan, **fields: Any) -> bool:
        """Queue the capture planned; False when the buffer was full (dropped, counted)."""
        settings = self.settings[plan.alias]
        item = Capture(
            id=plan.id,
            alias=plan.alias,
            request=plan.request,
            shadowed=plan.shadow,
            redactor=self.redactors[plan.alias],
            max_bytes=settings.max_bytes,
            **fields,
        )
        plan.recorded = self.writer.record(item)
        return plan.recorded

    def shadow_answer(self, plan: Plan, **fields: Any) -> bool:
        """Queue a candidate's answer to a captured request."""
        settings = self.settings[plan.alias]
        return self.writer.record(
            ShadowAnswer(
                capture_id=plan.id,
                alias=plan.alias,
                redactor=self.redactors[plan.alias],
                max_bytes=settings.max_bytes,
                **fields,
            )
        )


# --- reading captures back as eval items ------------------------------------------------------------


def _timestamp(moment: float | dt.datetime | str | None) -> float | None:
    if moment is None or isinstance(moment, float | int):
        return None if moment is None else float(moment)
    if isinstance(moment, str):
        moment = dt.datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def _money(cost: Any) -> float:
    return usd(int(cost or 0))


def iter_items(
    db: Database, alias: str | None = None, since: float | dt.datetime | str | None = None, limit: int | None = None
) -> Iterator[dict[str, Any]]:
    """Captures as eval items (docs/eval.md, the format `lifeline eval` reads), oldest first: the request,
    the incumbent's answer as `baseline` and the candidates' answers as `shadows`. `since` is a Unix time, a
    datetime or an ISO 8601 string (UTC when it names no zone)."""
    where: list[str] = ["1 = 1"]
    params: list[Any] = []
    if alias is not None:
        where.append("alias = ?")
        params.append(alias)
    start = _timestamp(since)
    if start is not None:
        where.append("captured_at >= ?")
        params.append(start)
    sql = (
        "SELECT id, alias, captured_at, request, response, error, target, latency_ms, ttft_ms, cost_nusd "
        f"FROM captures WHERE {' AND '.join(where)} ORDER BY captured_at, id"
    )
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    rows = db.query(sql, params)
    page = 200
    for at in range(0, len(rows), page):
        chunk = rows[at : at + page]
        shadows = _shadows_of(db, [str(r[0]) for r in chunk])
        for row in chunk:
            yield _item(row, shadows.get(str(row[0]), []))


def _shadows_of(db: Database, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    if not ids:
        return {}
    rows = db.query(
        "SELECT capture_id, candidate, target, response, error, latency_ms, cost_nusd FROM capture_shadows "
        f"WHERE capture_id IN ({', '.join('?' for _ in ids)}) ORDER BY started_at, id",
        ids,
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for capture_id, candidate, target, response, error, latency, cost in rows:
        out.setdefault(str(capture_id), []).append(
            {
                "target": candidate,
                "answered_by": target,
                "response": _loads(response),
                "latency_ms": latency,
                "cost_usd": _money(cost),
                "error": _loads(error),
            }
        )
    return out


def _item(row: tuple[Any, ...], shadows: list[dict[str, Any]]) -> dict[str, Any]:
    capture_id, alias, captured_at, request, response, error, target, latency, ttft, cost = row
    item: dict[str, Any] = {
        "id": capture_id,
        "request": _loads(request),
        "alias": alias,
        "captured_at": _iso(float(captured_at)),
        "baseline": {
            "target": target,
            "response": _loads(response),
            "latency_ms": latency,
            "ttft_ms": ttft,
            "cost_usd": _money(cost),
            "error": _loads(error),
        },
    }
    if shadows:
        item["shadows"] = shadows
    return item
