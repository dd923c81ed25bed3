"""GET /v1/responses/{id}/input_items with the official openai SDK on real sockets: the stored conversation
listed (auto-paginated across pages), in either order, scoped to the key that made the response."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI

from lifeline.testing import FaultWall
from lifeline.testing.gateway import RunningGateway
from tests.conftest import GatewayFactory, make_config, wall_target

MASTER = "mk-test-master-key-0123456789"


def sdk(gw: RunningGateway, key: str = "x") -> OpenAI:
    return OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=30)


def test_the_sdk_lists_a_conversations_items_across_pages_for_its_key_only(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    config = make_config(
        {"main": wall_target(wall, "ok")},
        admin={"master_key": MASTER},
        auth={"enabled": True},
        accounting={"data_dir": str(tmp_path)},
    )
    with gateway(config) as gw:
        admin = httpx.Client(base_url=f"{gw.url}/admin", headers={"authorization": f"Bearer {MASTER}"})
        owner, other = (sdk(gw, admin.post("/keys", json={"name": n}).json()["secret"]) for n in ("a", "b"))
        first = owner.responses.create(
            model="chat",
            instructions="Be brief.",
            input=[{"role": "user", "content": "One."}, {"role": "assistant", "content": "Ok."}],
        )
        second = owner.responses.create(model="chat", input="Two.", previous_response_id=first.id)
        newest_first = list(owner.responses.input_items.list(second.id, limit=2))
        oldest_first = owner.responses.input_items.list(second.id, order="asc", limit=10)
        with pytest.raises(openai.NotFoundError):
            other.responses.input_items.list(second.id)
        with pytest.raises(openai.BadRequestError):
            owner.responses.input_items.list(second.id, limit=500)
    # the first response's input and answer, then the new input; the instructions are not an item
    texts = [item.content[0].text for item in oldest_first.data]  # type: ignore[union-attr]
    assert texts == ["One.", "Ok.", first.output_text, "Two."]
    assert [item.role for item in oldest_first.data] == ["user", "assistant", "assistant", "user"]  # type: ignore[union-attr]
    assert [item.id for item in newest_first] == [item.id for item in reversed(oldest_first.data)]
    assert oldest_first.has_more is False
