"""An eval's items: OpenAI chat requests, each with an optional reference answer, a subset of checks, and
the baseline's answer when it was captured (the JSON Lines format of CONTRACTS.md section A).

`load_items` reads a file (a bad line is an EvalInputError naming the file and line); `items_from` reads
any iterable of the same dicts — what `lifeline.accounting.captures.iter_items` yields for captured pairs,
which `captured_items` imports only when asked, so the file path needs no database.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from lifeline.accounting.db import Database
from lifeline.config.schema import AccountingSettings
from lifeline.errors import DatabaseError, EvalInputError

CHECK_NAMES = ("json", "schema", "tool", "refusal", "length", "reference")
MATCHES = ("exact", "normalised", "numeric")


@dataclass(frozen=True, slots=True)
class Reference:
    answer: str
    match: str = "normalised"
    tolerance: float = 0.0


@dataclass(frozen=True, slots=True)
class Captured:
    """An answer recorded before the eval (the incumbent's, or a shadow's), as the item carries it."""

    target: str | None
    response: dict[str, Any] | None
    latency_ms: float | None
    ttft_ms: float | None
    cost_usd: float | None
    error: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Item:
    id: str
    request: dict[str, Any]
    alias: str | None = None
    reference: Reference | None = None
    #: the optional checks asked for (None: every one that applies)
    checks: tuple[str, ...] | None = None
    baseline: Captured | None = None
    shadows: tuple[Captured, ...] = field(default_factory=tuple)

    def wants(self, check: str) -> bool:
        return self.checks is None or check in self.checks


def load_items(path: Path) -> list[Item]:
    """Every item of a JSON Lines file; blank lines are skipped."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise EvalInputError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    items: list[Item] = []
    seen: set[str] = set()
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise EvalInputError(f"{where}: not a JSON object ({exc})") from exc
        items.append(_item(data, where, seen))
    if not items:
        raise EvalInputError(f"{path}: no items")
    return items


def items_from(records: Iterable[dict[str, Any]], source: str) -> list[Item]:
    """Items from dicts of the same format (captured pairs); `source` names them in errors."""
    seen: set[str] = set()
    items = [_item(data, f"{source} #{n}", seen) for n, data in enumerate(records, start=1)]
    if not items:
        raise EvalInputError(f"{source}: no items")
    return items


def captured_items(
    accounting: AccountingSettings, *, alias: str | None, since: str | None, limit: int | None
) -> list[Item]:
    """Captured pairs from the accounting database the config names. The capture store is imported here,
    when asked, so that reading a file needs neither it nor a database."""
    from lifeline.accounting import captures

    url = accounting.database_url.get_secret_value() if accounting.database_url else None
    try:
        db = Database(url=url, data_dir=accounting.data_dir)
    except DatabaseError as exc:
        raise EvalInputError(f"captured pairs: {exc}") from exc
    try:
        records: Iterator[dict[str, Any]] = captures.iter_items(db, alias=alias, since=since, limit=limit)
        return items_from(records, "captured pairs")
    except DatabaseError as exc:
        raise EvalInputError(f"captured pairs: {exc}") from exc
    except ValueError:  # --since that is not an ISO 8601 date (iter_items parses it)
        raise EvalInputError("--since is not a date (write 2026-11-30 or 2026-11-30T18:00:00Z)") from None
    finally:
        db.close()


def _item(data: Any, where: str, seen: set[str]) -> Item:
    if not isinstance(data, dict):
        raise EvalInputError(f"{where}: not a JSON object")
    item_id = data.get("id")
    if not isinstance(item_id, str) or not item_id:
        raise EvalInputError(f"{where}: 'id' must be a non-empty string")
    if item_id in seen:
        raise EvalInputError(f"{where}: id {item_id!r} appears twice")
    seen.add(item_id)
    request = data.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("messages"), list) or not request["messages"]:
        raise EvalInputError(f"{where}: 'request' must be a chat request with a non-empty 'messages' list")
    checks = data.get("checks")
    if checks is not None:
        if not isinstance(checks, list) or not all(isinstance(c, str) for c in checks):
            raise EvalInputError(f"{where}: 'checks' must be a list of names")
        unknown = [c for c in checks if c not in CHECK_NAMES]
        if unknown:
            raise EvalInputError(f"{where}: unknown check(s) {', '.join(unknown)}; checks: {', '.join(CHECK_NAMES)}")
    alias = data.get("alias")
    shadows = data.get("shadows") or []
    if not isinstance(shadows, list):
        raise EvalInputError(f"{where}: 'shadows' must be a list")
    return Item(
        id=item_id,
        request=request,
        alias=alias if isinstance(alias, str) else None,
        reference=_reference(data.get("reference"), where),
        checks=tuple(checks) if checks is not None else None,
        baseline=_captured(data.get("baseline"), where, "baseline"),
        shadows=tuple(c for c in (_captured(s, where, "shadows[]") for s in shadows) if c is not None),
    )


def _reference(value: Any, where: str) -> Reference | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("answer"), str | int | float):
        raise EvalInputError(f"{where}: 'reference' must be an object with an 'answer'")
    match = value.get("match", "normalised")
    if match not in MATCHES:
        raise EvalInputError(f"{where}: reference 'match' must be one of {', '.join(MATCHES)}")
    tolerance = value.get("tolerance", 0.0)
    if not isinstance(tolerance, int | float) or isinstance(tolerance, bool) or tolerance < 0:
        raise EvalInputError(f"{where}: reference 'tolerance' must be a number ≥ 0")
    return Reference(str(value["answer"]), match, float(tolerance))


def _captured(value: Any, where: str, name: str) -> Captured | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise EvalInputError(f"{where}: '{name}' must be an object")
    response, error = value.get("response"), value.get("error")
    if response is not None and not isinstance(response, dict):
        raise EvalInputError(f"{where}: '{name}.response' must be a chat.completion object or null")
    if error is not None and not isinstance(error, dict):
        raise EvalInputError(f"{where}: '{name}.error' must be an object or null")
    return Captured(
        target=value["target"] if isinstance(value.get("target"), str) else None,
        response=response,
        latency_ms=_number(value.get("latency_ms"), where, f"{name}.latency_ms"),
        ttft_ms=_number(value.get("ttft_ms"), where, f"{name}.ttft_ms"),
        cost_usd=_number(value.get("cost_usd"), where, f"{name}.cost_usd"),
        error=error,
    )


def _number(value: Any, where: str, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EvalInputError(f"{where}: '{name}' must be a number or null")
    return float(value)
