from __future__ import annotations

from openai import OpenAI

from lifeline.testing import FaultWall, wall_text
from tests.conftest import GatewayFactory, make_config, wall_target


def test_openai_sdk_through_gateway_to_wall(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config({"primary": wall_target(wall, "ok")})
    with gateway(config) as gw:
        client = OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": "hi"}]
        )
        answer = raw.parse()
    assert answer.choices[0].message.content == wall_text(12)
    assert raw.headers["x-lifeline-target"] == "primary"
