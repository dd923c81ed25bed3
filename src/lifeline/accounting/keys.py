"""Virtual keys: what a client presents instead of an upstream key.

A key reads `ll-<id>.<secret>`. Its secret is shown once, at creation, and stored only as a SHA-256 hash
(the secret has 256 bits of entropy, so a fast hash is the right one); the check compares hashes in
constant time. `KeyStore` is the database side (create, list, update, revoke — synchronous, for a worker
thread or the CLI); `KeyCache` is the hot path's in-memory snapshot, refreshed from the database every few
seconds so that a key changed on one replica takes effect on all.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import orjson

from lifeline.accounting.db import Database
from lifeline.errors import AuthenticationFailed, InvalidRequest, KeyNotFound

Period = Literal["day", "month", "total"]
PERIODS: tuple[str, ...] = ("day", "month", "total")
MAX_METADATA_BYTES = 4096
MAX_NAME_LENGTH = 200
#: the bounds of what the database columns hold (rpm and tpm are INTEGER), so that a value out of range is
#: the client's 400, not the database's 500
MAX_PER_MINUTE = 2**31 - 1
MAX_BUDGET_USD = 1_000_000_000.0
MAX_EXPIRES_AT = 253_402_300_799.0  # 9999-12-31T23:59:59Z
_TOKEN = re.compile(r"^ll-([0-9a-f]{16})\.([A-Za-z0-9_-]{43})$")
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")
_CONTROL = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


def hash_secret(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class VirtualKey:
    id: str
    name: str
    secret_hash: str
    created_at: float
    updated_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    #: the aliases this key may use; None: every alias
    aliases: tuple[str, ...] | None = None
    budget_usd: float | None = None
    budget_period: Period | None = None
    rpm: int | None = None
    tpm: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def status(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def may_use(self, alias: str) -> bool:
        return self.aliases is None or alias in self.aliases

    def public(self) -> dict[str, Any]:
        """What the admin API and CLI show: everything but the hash."""
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status(),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "aliases": list(self.aliases) if self.aliases is not None else None,
            "budget_usd": self.budget_usd,
            "budget_period": self.budget_period,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "metadata": self.metadata,
        }


_COLUMNS = (
    "id, name, secret_hash, created_at, updated_at, expires_at, revoked_at, aliases, budget_usd, budget_period, "
    "rpm, tpm, metadata"
)


def _from_row(row: tuple[Any, ...]) -> VirtualKey:
    aliases = orjson.loads(row[7]) if row[7] is not None else None
    return VirtualKey(
        id=row[0],
        name=row[1],
        secret_hash=row[2],
        created_at=float(row[3]),
        updated_at=float(row[4]),
        expires_at=float(row[5]) if row[5] is not None else None,
        revoked_at=float(row[6]) if row[6] is not None else None,
        aliases=tuple(aliases) if aliases is not None else None,
        budget_usd=float(row[8]) if row[8] is not None else None,
        budget_period=row[9],
        rpm=int(row[10]) if row[10] is not None else None,
        tpm=int(row[11]) if row[11] is not None else None,
        metadata=orjson.loads(row[12]) if row[12] else {},
    )


def validate_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Check the settable fields of a key (from the admin API or the CLI); errors name the field."""
    allowed = {"name", "aliases", "budget_usd", "budget_period", "rpm", "tpm", "expires_at", "metadata"}
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise InvalidRequest(f"Unknown field: '{unknown[0]}'.", param=unknown[0], code="unknown_parameter")
    out = dict(fields)
    if "name" in out:
        name = out["name"]
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH or _CONTROL.search(name):
            raise InvalidRequest(
                f"'name' must be a non-empty string of at most {MAX_NAME_LENGTH} characters, without control "
                "characters.",
                param="name",
            )
    if out.get("aliases") is not None:
        aliases = out["aliases"]
        if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
            raise InvalidRequest("'aliases' must be a list of alias names, or null for every alias.", param="aliases")
        out["aliases"] = tuple(dict.fromkeys(aliases))
    for name in ("budget_usd",):
        value = out.get(name)
        if value is not None and not _number_within(value, 0, MAX_BUDGET_USD):
            raise InvalidRequest(f"'{name}' must be a number of USD from 0 to {MAX_BUDGET_USD:,.0f}.", param=name)
    for name in ("rpm", "tpm"):
        value = out.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PER_MINUTE
        ):
            raise InvalidRequest(f"'{name}' must be a whole number from 1 to {MAX_PER_MINUTE}.", param=name)
    period = out.get("budget_period")
    if period is not None and period not in PERIODS:
        raise InvalidRequest("'budget_period' must be one of day, month, total.", param="budget_period")
    expires = out.get("expires_at")
    if expires is not None:
        if not _number_within(expires, 0, MAX_EXPIRES_AT):
            raise InvalidRequest(
                "'expires_at' must be a Unix time in seconds, before the year 10000.", param="expires_at"
            )
        out["expires_at"] = float(expires)
    if "metadata" in out:
        metadata = out["metadata"] if out["metadata"] is not None else {}
        if not isinstance(metadata, dict):
            raise InvalidRequest("'metadata' must be an object.", param="metadata")
        try:
            size = len(orjson.dumps(metadata))
        except TypeError:  # nested too deep, or not text orjson can write
            raise InvalidRequest("'metadata' cannot be stored as JSON.", param="metadata") from None
        if size > MAX_METADATA_BYTES:
            raise InvalidRequest(f"'metadata' is larger than {MAX_METADATA_BYTES} bytes.", param="metadata")
        out["metadata"] = metadata
    return out


def _number_within(value: Any, low: float, high: float) -> bool:
    """A JSON number (not a bool) from `low` to `high`; ints too large for a float are out of range too."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return low <= value <= high  # NaN compares False; JSON has none anyway


class KeyStore:
    """Keys in the database. Synchronous: call it from a thread or the CLI."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, name: str, **fields: Any) -> tuple[VirtualKey, str]:
        """Create a key; return it and its secret token (shown once, never stored)."""
        values = validate_fields({"name": name, **fields})
        if values.get("budget_usd") is not None and values.get("budget_period") is None:
            values["budget_period"] = "month"
        key_id = secrets.token_hex(8)
        token = f"ll-{key_id}.{secrets.token_urlsafe(32)}"
        now = time.time()
        key = VirtualKey(
            id=key_id,
            name=values["name"],
            secret_hash=hash_secret(token),
            created_at=now,
            updated_at=now,
            expires_at=values.get("expires_at"),
            aliases=values.get("aliases"),
            budget_usd=values.get("budget_usd"),
            budget_period=values.get("budget_period"),
            rpm=values.get("rpm"),
            tpm=values.get("tpm"),
            metadata=values.get("metadata") or {},
        )
        self.db.execute(f"INSERT INTO keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", _row(key))
        return key, token

    def list(self, include_revoked: bool = True) -> list[VirtualKey]:
        rows = self.db.query(f"SELECT {_COLUMNS} FROM keys ORDER BY created_at")
        keys = [_from_row(r) for r in rows]
        return keys if include_revoked else [k for k in keys if k.revoked_at is None]

    def get(self, key_id: str) -> VirtualKey:
        # Not a key id at all (a NUL, a surrogate, 10,000 characters): not worth asking the database, which
        # could refuse the text with an error rather than find nothing, nor quoting back.
        if not _KEY_ID.match(key_id):
            raise KeyNotFound("No key with that id: key ids are 16 hexadecimal digits.", param="id")
        rows = self.db.query(f"SELECT {_COLUMNS} FROM keys WHERE id = ?", (key_id,))
        if not rows:
            raise KeyNotFound(f"No key with id '{key_id}'.", param="id")
        return _from_row(rows[0])

    def update(self, key_id: str, **fields: Any) -> VirtualKey:
        values = validate_fields(fields)
        key = self.get(key_id)
        if key.revoked_at is not None:
            raise InvalidRequest(f"Key '{key_id}' is revoked; create a new one.", code="key_revoked")
        changed = replace(key, **values, updated_at=time.time())
        if changed.budget_usd is not None and changed.budget_period is None:
            changed = replace(changed, budget_period="month")
        self._save(changed)
        return changed

    def revoke(self, key_id: str) -> VirtualKey:
        key = self.get(key_id)
        if key.revoked_at is None:
            now = time.time()
            key = replace(key, revoked_at=now, updated_at=now)
            self._save(key)
        return key

    def _save(self, key: VirtualKey) -> None:
        row = _row(key)
        self.db.execute(
            "UPDATE keys SET name = ?, secret_hash = ?, created_at = ?, updated_at = ?, expires_at = ?, "
            "revoked_at = ?, aliases = ?, budget_usd = ?, budget_period = ?, rpm = ?, tpm = ?, metadata = ? "
            "WHERE id = ?",
            (*row[1:], key.id),
        )


def _row(key: VirtualKey) -> tuple[Any, ...]:
    return (
        key.id,
        key.name,
        key.secret_hash,
        key.created_at,
        key.updated_at,
        key.expires_at,
        key.revoked_at,
        orjson.dumps(list(key.aliases)).decode() if key.aliases is not None else None,
        key.budget_usd,
        key.budget_period,
        key.rpm,
        key.tpm,
        orjson.dumps(key.metadata).decode(),
    )


class KeyCache:
    """The keys as the hot path sees them: a dict replaced wholesale on each refresh."""

    def __init__(self) -> None:
        self._keys: dict[str, VirtualKey] = {}
        self.loaded_at = 0.0

    def replace_all(self, keys: list[VirtualKey]) -> None:
        self._keys = {k.id: k for k in keys}
        self.loaded_at = time.monotonic()

    def put(self, key: VirtualKey) -> None:
        self._keys = {**self._keys, key.id: key}

    def authenticate(self, authorization: str | None) -> VirtualKey:
        """The key behind an `Authorization: Bearer …` header, or AuthenticationFailed (401)."""
        if not authorization:
            raise AuthenticationFailed("Missing API key: send your Lifeline key (ll-…) as the API key.")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        match = _TOKEN.match(token) if scheme.lower() == "bearer" else None
        if match is None:
            raise AuthenticationFailed("Malformed API key: Lifeline keys read 'll-<id>.<secret>'.")
        key = self._keys.get(match.group(1))
        # Compare even when the id is unknown, so both failures take the same time.
        expected = key.secret_hash if key is not None else "0" * 64
        if not hmac.compare_digest(hash_secret(token), expected) or key is None:
            raise AuthenticationFailed("Invalid API key.")
        status = key.status()
        if status != "active":
            raise AuthenticationFailed(f"This API key is {status}.", code=f"key_{status}")
        return key
