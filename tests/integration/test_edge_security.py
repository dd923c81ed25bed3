"""The gateway's edge on real sockets, where the Host header is what a browser sends: DNS rebinding (a foreign
Host), cross-site admin calls (a foreign Origin, a body that is not JSON) and the trailing-slash redirect —
with the official SDKs and httpx as clients."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import openai
import pytest

from lifeline.testing import FaultWall
from lifeline.testing.gateway import RunningGateway
from tests.conftest import GatewayFactory, make_config, wall_target

EVIL = "rebind.attacker.example"


def config(wall: FaultWall, **server: Any) -> Any:
    return make_config({"primary": wall_target(wall, "ok?t=edge")}, server=server)


def override(gw: RunningGateway) -> str | None:
    """The primary target's operator override, asked the plain way."""
    rows = httpx.get(f"{gw.url}/admin/targets", timeout=10).json()["targets"]
    found: str | None = next(r for r in rows if r["target"] == "primary")["override"]
    return found


def drain(gw: RunningGateway, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{gw.url}/admin/targets/primary", timeout=10, **kwargs)


def assert_refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == code
    assert response.headers["x-request-id"]


# --- Host: DNS rebinding -------------------------------------------------------------------------------


def test_a_foreign_host_is_refused_on_every_path(wall: FaultWall, gateway: GatewayFactory) -> None:
    """A page on rebind.attacker.example whose name now resolves to 127.0.0.1 sends that name as Host."""
    with gateway(config(wall)) as gw:
        host = {"host": f"{EVIL}:{gw.port}"}
        models = httpx.get(f"{gw.base_url}/models", headers=host)
        drained = drain(gw, json={"state": "drained"}, headers=host)
        chat = httpx.post(
            f"{gw.base_url}/chat/completions",
            json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
            headers=host,
        )
        no_port = httpx.get(f"{gw.url}/admin/targets", headers={"host": EVIL})
        after = override(gw)
    for response in (models, drained, chat, no_port):
        assert_refused(response, 403, "host_not_allowed")
        assert "server.allowed_hosts" in response.json()["error"]["message"]
    assert after is None  # nothing was drained
    assert wall.attempts_for("ok?t=edge") == []  # nothing was spent


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1:{port}", "localhost:{port}", "LocalHost:{port}", "localhost", "[::1]:{port}", "app.localhost:{port}"],
)
def test_local_names_and_addresses_are_answered(wall: FaultWall, gateway: GatewayFactory, host: str) -> None:
    with gateway(config(wall)) as gw:
        response = httpx.get(f"{gw.url}/healthz", headers={"host": host.format(port=gw.port)})
    assert response.status_code == 200, response.text


def test_the_sdks_work_through_localhost_and_127_0_0_1(wall: FaultWall, gateway: GatewayFactory) -> None:
    with gateway(config(wall)) as gw:
        for base in (gw.base_url, f"http://localhost:{gw.port}/v1"):
            client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=30)
            answer = client.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=4
            )
            assert answer.choices[0].message.content
            assert [m.id for m in client.models.list()] == ["chat"]
        claude = anthropic.Anthropic(base_url=f"http://localhost:{gw.port}", api_key="unused", max_retries=0)
        message = claude.messages.create(model="chat", max_tokens=4, messages=[{"role": "user", "content": "hi"}])
    assert message.content


def test_allowed_hosts_adds_names(wall: FaultWall, gateway: GatewayFactory) -> None:
    with gateway(config(wall, allowed_hosts=["gw.internal", ".example.org"])) as gw:

        def status(host: str) -> int:
            return httpx.get(f"{gw.url}/healthz", headers={"host": host}).status_code

        assert status(f"gw.internal:{gw.port}") == 200
        assert status("GW.internal.") == 200  # case and a trailing dot do not matter
        assert status("example.org") == 200
        assert status("api.example.org:443") == 200
        assert status("evil-example.org") == 403
        assert status("gw.internal.evil") == 403
        assert status(f"127.0.0.1:{gw.port}") == 200  # the automatic ones stay


def test_allowed_hosts_star_answers_any_host(wall: FaultWall, gateway: GatewayFactory) -> None:
    with gateway(config(wall, allowed_hosts=["*"])) as gw:
        response = httpx.get(f"{gw.url}/healthz", headers={"host": EVIL})
    assert response.status_code == 200


# --- Origin and Content-Type: cross-site admin calls --------------------------------------------------------


def test_a_cross_site_form_cannot_drain_a_target_or_reload(wall: FaultWall, gateway: GatewayFactory) -> None:
    """What a page on another site can send to a loopback gateway without a preflight: a simple POST."""
    with gateway(config(wall)) as gw:
        form = {"origin": f"http://{EVIL}", "content-type": "text/plain"}
        drained = drain(gw, content=b'{"state": "drained"}', headers=form)
        reload = httpx.post(f"{gw.url}/admin/reload", headers={"origin": f"http://{EVIL}"})
        null_origin = drain(gw, json={"state": "drained"}, headers={"origin": "null"})
        other_port = drain(gw, json={"state": "drained"}, headers={"origin": f"http://127.0.0.1:{gw.port + 1}"})
        # no Origin (an old browser), but the fetch metadata gives it away
        fetch_meta = drain(gw, json={"state": "drained"}, headers={"sec-fetch-site": "cross-site"})
        after = override(gw)
    for response in (drained, reload, null_origin, other_port, fetch_meta):
        assert_refused(response, 403, "origin_not_allowed")
    assert after is None


def test_the_gateways_own_origin_may_change_things(wall: FaultWall, gateway: GatewayFactory) -> None:
    with gateway(config(wall)) as gw:
        own = drain(gw, json={"state": "drained"}, headers={"origin": gw.url, "sec-fetch-site": "same-origin"})
        drained = override(gw)
        by_name = drain(
            gw,
            json={"state": "healthy"},
            headers={"origin": f"http://localhost:{gw.port}", "host": f"localhost:{gw.port}"},
        )
        healed = override(gw)
    assert own.status_code == 200, own.text
    assert drained == "drained"
    assert by_name.status_code == 200, by_name.text
    assert healed is None


def test_a_read_from_another_origin_is_not_refused(wall: FaultWall, gateway: GatewayFactory) -> None:
    """The browser keeps a cross-origin answer from the page (no CORS headers); refusing GETs adds nothing."""
    with gateway(config(wall)) as gw:
        response = httpx.get(f"{gw.url}/admin/targets", headers={"origin": f"http://{EVIL}"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


def test_a_cross_site_form_cannot_spend_through_a_loopback_gateway(wall: FaultWall, gateway: GatewayFactory) -> None:
    """Without auth, a simple POST from another site's page would be served (and paid) though the page could
    not read the answer. A JSON request from another origin — a browser extension — still is."""
    body = b'{"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}'
    with gateway(config(wall)) as gw:
        url = f"{gw.base_url}/chat/completions"
        form = httpx.post(url, content=body, headers={"origin": f"http://{EVIL}", "content-type": "text/plain"})
        no_type = httpx.post(url, content=body, headers={"sec-fetch-site": "cross-site"})
        spent = len(wall.attempts_for("ok?t=edge"))
        extension = httpx.post(
            url, content=body, headers={"origin": "chrome-extension://abc", "content-type": "application/json"}
        )
        plain_curl = httpx.post(url, content=body, headers={"content-type": "application/x-www-form-urlencoded"})
    for response in (form, no_type):
        assert_refused(response, 403, "origin_not_allowed")
    assert spent == 0
    assert extension.status_code == 200, extension.text
    assert plain_curl.status_code == 200, plain_curl.text  # `curl -d` without -H: no Origin, not a browser


@pytest.mark.parametrize(
    "headers",
    [
        {"content-type": "text/plain"},
        {"content-type": "application/x-www-form-urlencoded"},
        {"content-type": "multipart/form-data; boundary=x"},
        {},  # a body with no Content-Type at all
    ],
)
def test_admin_json_endpoints_need_application_json(
    wall: FaultWall, gateway: GatewayFactory, headers: dict[str, str]
) -> None:
    with gateway(config(wall)) as gw:
        response = drain(gw, content=b'{"state": "drained"}', headers=headers)
        after = override(gw)
    assert_refused(response, 415, "unsupported_media_type")
    assert "application/json" in response.json()["error"]["message"]
    assert after is None


def test_admin_json_with_a_charset_and_bodyless_calls_are_accepted(wall: FaultWall, gateway: GatewayFactory) -> None:
    with gateway(config(wall)) as gw:
        drained = drain(
            gw, content=b'{"state": "drained"}', headers={"content-type": "Application/JSON; charset=utf-8"}
        )
        reload = httpx.post(f"{gw.url}/admin/reload")  # `curl -X POST`: no body, no Content-Type
    assert drained.status_code == 200, drained.text
    assert reload.json()["error"]["code"] == "no_config_file"  # past the guard (a gateway without a file)


# --- the trailing-slash redirect -----------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["203.0.113.9", "{evil}"])
def test_a_trailing_slash_never_redirects_to_the_host_header(
    wall: FaultWall, gateway: GatewayFactory, host: str
) -> None:
    settings = {"allowed_hosts": ["*"]} if host == "{evil}" else {}  # an address is answered anyway
    with gateway(config(wall, **settings)) as gw:
        headers = {"host": host.format(evil=EVIL)}
        health = httpx.get(f"{gw.url}/healthz/", headers=headers)
        chat = httpx.post(f"{gw.base_url}/chat/completions/", json={"model": "chat"}, headers=headers)
        admin = httpx.get(f"{gw.url}/admin/targets/", headers=headers)
    for response in (health, chat, admin):
        assert response.status_code == 404, response.text
        assert "location" not in response.headers
        assert response.json()["error"]["code"] == "not_found"
    assert health.json()["error"]["message"] == "Unknown path /healthz/. Without the trailing slash: /healthz"
