"""Client mistakes that were answered 500 (issue #15.15), through a real gateway on loopback: each is now a
400 in OpenAI's envelope naming the parameter, and nothing reaches the upstream or the ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from lifeline.protocol.parse import MAX_JSON_DEPTH
from lifeline.testing import FaultWall
from lifeline.testing.gateway import RunningGateway
from tests.conftest import GatewayFactory, make_config, wall_target
from tests.integration.test_accounting import MASTER, admin, config_with, ledger_rows, new_key
from tests.integration.test_api import assert_envelope

MESSAGES = [{"role": "user", "content": "hello there"}]


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def raw_post(gw: RunningGateway, path: str, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{gw.url}{path}", content=body, headers={"content-type": "application/json", **headers}, timeout=30
    )


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 300, 1000])
def test_json_nested_too_deep_is_a_400_on_every_route(
    depth: int, wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    """Nested 255 to 1,024 deep, a body was read, failed when written again (500) and was recorded as 499."""
    with gateway(config_with(wall, tmp_path, auth=False)) as gw:
        chat = raw_post(gw, "/v1/chat/completions", b'{"model": "chat", "messages": [], "tools": ' + deep(depth) + b"}")
        messages = raw_post(gw, "/v1/messages", b'{"model": "chat", "max_tokens": 5, "metadata": ' + deep(depth) + b"}")
        embeddings = raw_post(gw, "/v1/embeddings", b'{"model": "chat", "input": ' + deep(depth) + b"}")
        keys = raw_post(
            gw,
            "/admin/keys",
            b'{"name": "x", "metadata": {"a": ' + deep(depth) + b"}}",
            authorization=f"Bearer {MASTER}",
        )
        rows = ledger_rows(gw)
    for response, param in ((chat, "tools"), (embeddings, "input"), (keys, "metadata")):
        assert_envelope(response, 400, type="invalid_request_error", param=param, code="json_too_deep")
    # /v1/messages answers in Anthropic's envelope, which has no param: the message names it
    assert messages.status_code == 400
    assert messages.json()["error"]["type"] == "invalid_request_error"
    assert "'metadata'" in messages.json()["error"]["message"]
    assert wall.attempts == [] and rows == []


def test_a_text_part_whose_text_is_not_a_string_is_a_400(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    parts = [{"type": "text", "text": "fine"}, {"type": "text", "text": 123}]
    with gateway(config_with(wall, tmp_path, auth=False)) as gw:
        response = httpx.post(
            f"{gw.base_url}/chat/completions",
            json={"model": "chat", "messages": [{"role": "user", "content": parts}]},
            timeout=30,
        )
    assert_envelope(response, 400, param="messages[0].content[1].text", code="invalid_type")
    assert wall.attempts == []


@pytest.mark.embedded
def test_a_text_part_whose_text_is_not_a_string_is_a_400_on_the_embedded_engine(gateway: GatewayFactory) -> None:
    """The reproduction: the embedded engine joined the parts' text and failed with a 500."""
    config = make_config({"local": {"kind": "llamacpp", "model": "builtin:smollm2", "n_ctx": 512, "n_threads": 2}})
    with gateway(config) as gw:
        content = [{"type": "text", "text": 123}]
        response = httpx.post(
            f"{gw.base_url}/chat/completions",
            json={"model": "chat", "max_tokens": 2, "messages": [{"role": "user", "content": content}]},
            timeout=60,
        )
    assert_envelope(response, 400, param="messages[0].content[0].text", code="invalid_type")


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
@pytest.mark.parametrize(
    ("field", "value"),
    [("rpm", 2**63), ("tpm", 2**31), ("budget_usd", 1e308), ("expires_at", 2**70), ("name", "nul\x00name")],
)
def test_admin_key_values_no_column_can_hold_are_400s(
    dialect: str,
    field: str,
    value: Any,
    wall: FaultWall,
    gateway: GatewayFactory,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """rpm 2**63 on PATCH /admin/keys (and POST) reached the database and came back a 500."""
    accounting = {"database_url": request.getfixturevalue("postgres_db_url")} if dialect == "postgres" else {}
    targets = {"backup": wall_target(wall, "ok")}
    with gateway(config_with(wall, tmp_path, targets=targets, accounting=accounting)) as gw:
        key_id, _ = new_key(gw)
        created = admin(gw).post("/keys", json={"name": "svc", field: value})
        patched = admin(gw).patch(f"/keys/{key_id}", json={field: value})
        listed = admin(gw).get("/keys").json()["data"]
    for response in (created, patched):
        assert_envelope(response, 400, type="invalid_request_error", param=field)
    assert [k["id"] for k in listed] == [key_id]


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_a_malformed_key_id_is_a_404(
    dialect: str, wall: FaultWall, gateway: GatewayFactory, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """PostgreSQL refused the NUL in the id with an error (a 500) instead of finding nothing."""
    accounting = {"database_url": request.getfixturevalue("postgres_db_url")} if dialect == "postgres" else {}
    with gateway(config_with(wall, tmp_path, accounting=accounting)) as gw:
        got = admin(gw).get("/keys/nul%00id")
        patched = admin(gw).patch("/keys/%ED%A0%80", json={"rpm": 5})
    for response in (got, patched):
        assert_envelope(response, 404, code="key_not_found", param="id")


def test_an_internal_error_is_recorded_as_500_not_as_the_client_leaving(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deep body's 500 was recorded as 499 client_closed: a bug of ours must not read as a client that left."""
    targets = {"backup": wall_target(wall, "ok")}
    with gateway(config_with(wall, tmp_path, auth=False, targets=targets)) as gw:

        async def broken(call: Any) -> Any:
            raise TypeError("a bug")

        monkeypatch.setattr(gw.gateway.providers["backup"], "complete", broken)
        response = httpx.post(f"{gw.base_url}/chat/completions", json={"model": "chat", "messages": MESSAGES})
        rows = ledger_rows(gw, expect=1)
    assert_envelope(response, 500)
    assert [(r["status"], r["outcome"]) for r in rows] == [(500, "error")]


def test_a_key_limited_to_an_alias_the_config_lacks_is_a_400(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    """Such a key could never be used; the admin API refuses it as `keys create --alias` does."""
    with gateway(config_with(wall, tmp_path)) as gw:
        client = admin(gw)
        refused = client.post("/keys", json={"name": "x", "aliases": ["chat", "chta"]})
        key_id, _ = new_key(gw, aliases=["chat"])
        refused_update = client.patch(f"/keys/{key_id}", json={"aliases": ["nosuch"]})
        kept = client.get(f"/keys/{key_id}").json()
        listed = client.get("/keys").json()["data"]
    for response in (refused, refused_update):
        assert_envelope(response, 400, type="invalid_request_error", param="aliases", code="unknown_alias")
    assert "did you mean chat" in refused.json()["error"]["message"]
    assert kept["aliases"] == ["chat"]
    assert [k["name"] for k in listed] == ["test"]  # the refused key was never created
