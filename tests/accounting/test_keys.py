"""Virtual keys on a real SQLite database: creation, hashing, validation, revocation, expiry, the hot-path
cache's authentication."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lifeline.accounting.db import Database
from lifeline.accounting.keys import KeyCache, KeyStore, hash_secret
from lifeline.accounting.migrations import migrate
from lifeline.errors import AuthenticationFailed, InvalidRequest, KeyNotFound


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    db = Database(data_dir=tmp_path)
    migrate(db)
    return KeyStore(db)


def cache_of(store: KeyStore) -> KeyCache:
    cache = KeyCache()
    cache.replace_all(store.list())
    return cache


def test_a_key_is_shown_once_and_stored_only_as_a_hash(store: KeyStore, tmp_path: Path) -> None:
    key, secret = store.create("team-a", aliases=["chat"], budget_usd=5.0, budget_period="day", rpm=10)
    assert secret.startswith(f"ll-{key.id}.")
    assert key.secret_hash == hash_secret(secret)
    raw = (tmp_path / "lifeline.db").read_bytes()
    assert secret.encode() not in raw
    assert secret.split(".")[1].encode() not in raw
    assert "secret_hash" not in key.public() and secret not in str(key.public())
    again = store.get(key.id)
    assert again.aliases == ("chat",) and again.budget_usd == 5.0 and again.rpm == 10


def test_authentication_accepts_the_key_and_refuses_everything_else(store: KeyStore) -> None:
    key, secret = store.create("svc")
    other, _ = store.create("other")
    cache = cache_of(store)
    assert cache.authenticate(f"Bearer {secret}").id == key.id
    assert cache.authenticate(f"bearer {secret}").id == key.id
    bad = [
        None,
        "",
        "Bearer ",  # an empty bearer
        "Bearer    ",
        secret,  # no scheme
        "Basic abc",
        "Bearer sk-not-a-lifeline-key",
        "Bearer ll-zz.zz",
        f"Bearer {secret}x",
        f"Bearer {secret[:-1]}A" if not secret.endswith("A") else f"Bearer {secret[:-1]}B",
        f"Bearer ll-{other.id}.{secret.split('.')[1]}",  # another key's id with this secret
        "Bearer ll-0123456789abcdef." + "A" * 43,  # well formed, unknown
    ]
    for header in bad:
        with pytest.raises(AuthenticationFailed) as raised:
            cache.authenticate(header)
        assert raised.value.status == 401
        assert secret not in raised.value.message


def test_revoked_and_expired_keys_are_refused_with_a_reason(store: KeyStore) -> None:
    revoked, revoked_secret = store.create("gone")
    store.revoke(revoked.id)
    _, expired_secret = store.create("old", expires_at=time.time() - 1)
    cache = cache_of(store)
    with pytest.raises(AuthenticationFailed, match="revoked") as one:
        cache.authenticate(f"Bearer {revoked_secret}")
    assert one.value.code == "key_revoked"
    with pytest.raises(AuthenticationFailed, match="expired") as two:
        cache.authenticate(f"Bearer {expired_secret}")
    assert two.value.code == "key_expired"
    assert store.get(revoked.id).status() == "revoked"
    with pytest.raises(InvalidRequest):
        store.update(revoked.id, rpm=5)


def test_update_changes_limits_and_keeps_the_secret(store: KeyStore) -> None:
    key, secret = store.create("svc")
    changed = store.update(key.id, rpm=3, tpm=1000, aliases=["a", "b", "a"], budget_usd=2.5, metadata={"team": "x"})
    assert changed.rpm == 3 and changed.tpm == 1000
    assert changed.aliases == ("a", "b")
    assert changed.budget_period == "month"  # a budget without a period is monthly
    assert changed.metadata == {"team": "x"}
    assert cache_of(store).authenticate(f"Bearer {secret}").rpm == 3


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"rpm": 0}, "rpm"),
        ({"rpm": "10"}, "rpm"),
        ({"tpm": True}, "tpm"),
        ({"budget_usd": -1}, "budget_usd"),
        ({"budget_period": "week"}, "budget_period"),
        ({"aliases": "chat"}, "aliases"),
        ({"metadata": {"blob": "x" * 5000}}, "metadata"),
        ({"metadata": ["not", "an", "object"]}, "metadata"),
        ({"expires_at": "tomorrow"}, "expires_at"),
        ({"owner": "me"}, "owner"),
    ],
)
def test_bad_fields_are_refused_naming_the_field(store: KeyStore, fields: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        store.create("svc", **fields)
    assert raised.value.param == param
    assert store.list() == []


def test_names_are_validated_and_unknown_ids_are_404(store: KeyStore) -> None:
    with pytest.raises(InvalidRequest):
        store.create("")
    with pytest.raises(InvalidRequest):
        store.create("x" * 201)
    with pytest.raises(KeyNotFound) as raised:
        store.get("'; DROP TABLE keys; --")
    assert raised.value.status == 404
    assert store.db.query("SELECT count(*) FROM keys") == [(0,)]


def test_may_use_respects_the_alias_list(store: KeyStore) -> None:
    limited, _ = store.create("limited", aliases=["chat"])
    free, _ = store.create("free")
    assert limited.may_use("chat") and not limited.may_use("local")
    assert free.may_use("anything")


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"rpm": 2**63}, "rpm"),
        ({"rpm": 2**31}, "rpm"),
        ({"tpm": 2**80}, "tpm"),
        ({"budget_usd": 1e308}, "budget_usd"),
        ({"budget_usd": 2**70}, "budget_usd"),
        ({"expires_at": 2**70}, "expires_at"),
        ({"expires_at": 1e300}, "expires_at"),
        ({"expires_at": -5}, "expires_at"),
        ({"name": "bad\x00name"}, "name"),
    ],
)
def test_values_no_database_column_can_hold_are_400s(store: KeyStore, fields: dict[str, object], param: str) -> None:
    """They reached the database and came back as 500s (rpm 2**63 on PATCH /admin/keys)."""
    name = str(fields.get("name", "svc"))
    with pytest.raises(InvalidRequest) as raised:
        store.create(name, **{k: v for k, v in fields.items() if k != "name"})
    assert raised.value.param == param
    key, _ = store.create("ok")
    with pytest.raises(InvalidRequest) as raised:
        store.update(key.id, **fields)
    assert raised.value.param == param
    assert store.get(key.id) == key


def test_the_largest_values_allowed_are_stored(store: KeyStore) -> None:
    key, _ = store.create("big", rpm=2**31 - 1, tpm=2**31 - 1, budget_usd=1_000_000_000, expires_at=253402300799)
    assert store.get(key.id) == key


def test_a_malformed_key_id_is_404_without_asking_the_database(store: KeyStore) -> None:
    for key_id in ("nul\x00id", "x" * 10_000, "\ud800"):
        with pytest.raises(KeyNotFound):
            store.get(key_id)
        with pytest.raises(KeyNotFound):
            store.update(key_id, rpm=5)
        with pytest.raises(KeyNotFound):
            store.revoke(key_id)
