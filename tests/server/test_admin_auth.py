"""The master-key check of the admin API: an empty bearer never matches anything."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from pydantic import SecretStr
from starlette.requests import Request

from lifeline.config.schema import AdminSettings
from lifeline.errors import AuthenticationFailed
from lifeline.server.routes.admin import require_admin


def request(authorization: str | None) -> Request:
    headers = [] if authorization is None else [(b"authorization", authorization.encode())]
    return Request({"type": "http", "method": "GET", "path": "/admin/targets", "headers": headers})


def gateway_with(master_key: str) -> object:
    # model_construct: skip the load-time check, as if an empty key had slipped through some other way
    admin = AdminSettings.model_construct(master_key=SecretStr(master_key))
    return SimpleNamespace(config=SimpleNamespace(admin=admin))


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer ", "Bearer    ", "Basic ", "bearer \t"])
@pytest.mark.parametrize("master_key", ["", "  ", "mk-123"])
def test_an_empty_bearer_never_matches(master_key: str, authorization: str | None) -> None:
    with pytest.raises(AuthenticationFailed):
        require_admin(request(authorization), gateway_with(master_key))  # type: ignore[arg-type]


def test_the_right_bearer_matches() -> None:
    require_admin(request("Bearer mk-123"), gateway_with("mk-123"))  # type: ignore[arg-type]
    require_admin(request("bearer  mk-123 "), gateway_with("mk-123"))  # type: ignore[arg-type]
