"""The edge checks in process: which Host names a gateway answers to for each bind address, and the admin API
refused on a bind beyond loopback without a master key (unless `insecure_admin`). Real sockets, where the
Host header is what a browser sends, are in tests/integration/test_edge_security.py."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

import lifeline.server.guard as guard
from lifeline.config import Config, ConfigError, parse_config
from lifeline.config.schema import ServerSettings
from lifeline.errors import AdminDisabled
from lifeline.server.app import create_app
from lifeline.server.guard import EdgeGuard, HostPolicy, is_loopback
from lifeline.server.reload import keep_fixed_settings

#: nothing listens there; no request in this module reaches a target
TARGET = {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}


def make(server: dict[str, Any] | None = None, admin: dict[str, Any] | None = None) -> Config:
    data: dict[str, Any] = {"targets": {"t": TARGET}, "aliases": {"chat": {"targets": ["t"]}}}
    if server is not None:
        data["server"] = server
    if admin is not None:
        data["admin"] = admin
    return parse_config(data, env={})


def get(config: Config, path: str, host: str = "127.0.0.1:4000", **headers: str) -> httpx.Response:
    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(config))
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as client:
            return await client.get(path, headers=headers)

    return asyncio.run(main())


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("192.168.1.5", False),
        ("gateway.internal", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("bind", "allowed", "host", "answered"),
    [
        ("127.0.0.1", [], "127.0.0.1:4000", True),
        ("127.0.0.1", [], "localhost:4000", True),
        ("127.0.0.1", [], "[::1]:4000", True),
        ("127.0.0.1", [], "evil.example:4000", False),
        ("127.0.0.1", [], "localhost.evil.example", False),
        # reached by an address: an address cannot be rebound to another machine
        ("0.0.0.0", [], "10.1.2.3:4000", True),
        ("0.0.0.0", [], "[2001:db8::5]:4000", True),
        # beyond loopback: reached by names the gateway cannot know, until the operator lists them
        ("0.0.0.0", [], "gateway.internal:4000", True),
        ("0.0.0.0", ["gateway.internal"], "gateway.internal:4000", True),
        ("0.0.0.0", ["gateway.internal"], "evil.example:4000", False),
        ("0.0.0.0", ["gateway.internal"], "10.1.2.3:4000", True),
        ("::", [".internal"], "a.b.internal", True),
        # a name given as the bind address is the gateway's own
        ("gateway.internal", [], "Gateway.Internal:4000", True),
        ("10.0.0.5", [], "10.0.0.5:4000", True),
        ("10.0.0.5", [], "other.name", True),
        ("10.0.0.5", ["gw.lan"], "other.name", False),
        ("10.0.0.5", ["gw.lan"], "gw.lan", True),
        # malformed Host headers
        ("127.0.0.1", [], "127.0.0.1:notaport", False),
        ("127.0.0.1", [], "[::1", False),
        ("127.0.0.1", [], "a b", False),
        ("127.0.0.1", [], "", False),
    ],
)
def test_host_policy(bind: str, allowed: list[str], host: str, answered: bool) -> None:
    assert HostPolicy(bind, allowed).allows(host) is answered


def test_a_missing_host_header_is_answered() -> None:
    """HTTP/1.0 clients may send none; a browser always does."""
    assert HostPolicy("127.0.0.1", []).allows(None)


def test_a_host_verdict_is_remembered_for_a_bounded_number_of_names(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[str] = []
    plain = guard.split_authority

    def counted(authority: str) -> tuple[str, int | None] | None:
        parsed.append(authority)
        return plain(authority)

    monkeypatch.setattr(guard, "split_authority", counted)
    policy = HostPolicy("127.0.0.1", ["gw.example"])
    for _ in range(3):
        assert policy.allows("gw.example:4000") and policy.allows("127.0.0.1:4000")
        assert not policy.allows("evil.example")
    assert parsed == ["gw.example:4000", "127.0.0.1:4000", "evil.example"]
    names = [f"evil{n}.example" for n in range(1000)]
    assert not any(policy.allows(name) for name in names)
    parsed.clear()
    assert not policy.allows(names[-1]) and policy.allows("gw.example:4000")
    assert parsed == [names[-1]]  # past the bound, a name is judged afresh each time, the same way


@pytest.mark.parametrize(("path", "admin"), [("/admin", True), ("/admin/keys", True), ("/administrator", False)])
def test_the_guard_knows_the_admin_paths(path: str, admin: bool) -> None:
    settings = ServerSettings(host="0.0.0.0")
    scope = {"path": path, "method": "GET", "headers": [(b"host", b"10.0.0.1:4000")]}
    refusal = EdgeGuard().check(scope, settings, has_master_key=False)
    assert isinstance(refusal, AdminDisabled) is admin and (refusal is None) is not admin


def test_allowed_hosts_entries_are_checked_at_load() -> None:
    for bad in ("http://gw.internal", "gw.internal:4000", "", "gw/x", "a b"):
        with pytest.raises(ConfigError, match="allowed_hosts") as raised:
            make(server={"allowed_hosts": ["ok.example", bad]})
        assert "entry 1 is not a host name" in str(raised.value)
        assert not bad or bad not in str(raised.value)  # config errors quote no value
    assert make(server={"allowed_hosts": ["GW.Internal.", "*"]}).server.allowed_hosts == ["gw.internal", "*"]


# --- the admin API on a bind beyond loopback ------------------------------------------------------------------


@pytest.mark.parametrize("bind", ["0.0.0.0", "::", "192.168.1.5"])
def test_no_admin_beyond_loopback_without_a_master_key(bind: str) -> None:
    config = make(server={"host": bind})
    refused = get(config, "/admin/targets")
    unknown_admin_path = get(config, "/admin/console")
    served = get(config, "/v1/models")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "admin_disabled"
    assert "--insecure-admin" in refused.json()["error"]["message"]
    assert "admin.master_key" in refused.json()["error"]["message"]
    assert unknown_admin_path.status_code == 403
    assert served.status_code == 200


def test_insecure_admin_or_a_master_key_serves_admin_beyond_loopback() -> None:
    insecure = get(make(server={"host": "0.0.0.0", "insecure_admin": True}), "/admin/targets")
    keyed = make(server={"host": "0.0.0.0"}, admin={"master_key": "mk-edge-0123"})
    without_key = get(keyed, "/admin/targets")
    with_key = get(keyed, "/admin/targets", authorization="Bearer mk-edge-0123")
    assert insecure.status_code == 200
    assert without_key.status_code == 401
    assert with_key.status_code == 200


@pytest.mark.parametrize("bind", ["127.0.0.1", "localhost", "::1"])
def test_admin_on_loopback_needs_no_master_key(bind: str) -> None:
    assert get(make(server={"host": bind}), "/admin/targets").status_code == 200


def test_a_reload_keeps_insecure_admin_as_started() -> None:
    """`serve --insecure-admin` is not in the file: a reload must not turn the admin API off (or on)."""
    running = make(server={"host": "0.0.0.0", "insecure_admin": True, "allowed_hosts": ["a.example"]})
    from_file = make(server={"allowed_hosts": ["b.example"]})
    reloaded = keep_fixed_settings(from_file, running)
    assert (reloaded.server.host, reloaded.server.insecure_admin) == ("0.0.0.0", True)
    assert reloaded.server.allowed_hosts == ["b.example"]  # the file's
