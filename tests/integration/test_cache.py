"""The response cache on real sockets: a real gateway in front of the fault wall, the official `openai` SDK as
the client. A cached answer streams to the SDK like a live one; a stale answer is served when every target is
cut off (by the wall, and by the operator's cut), never a stream that broke mid-answer; and two gateways on
one real Redis serve each other's answers."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from lifeline.testing import FaultWall, wall_text
from tests.conftest import GatewayFactory, make_config, wall_target

MASTER = "mk-test-cache-0123456789"
AUTH = {"authorization": f"Bearer {MASTER}"}
MESSAGES: Any = [{"role": "user", "content": "hello there"}]


def sdk(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=30)


def cut(url: str, target: str) -> None:
    """The operator cuts `target` off (a 403 the upstream never sees, as a real cut-off fails)."""
    answer = httpx.post(f"{url}/admin/targets/{target}", json={"state": "cut"}, headers=AUTH, timeout=10)
    assert answer.status_code == 200, answer.text


def streamed_text(stream: Any) -> tuple[str, list[str | None], Any]:
    """The text, finish reasons and last usage of an SDK chat stream, read to its end."""
    text, reasons, usage = "", [], None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            reasons.append(choice.finish_reason)
    return text, [r for r in reasons if r], usage


def test_a_cached_answer_streams_to_the_openai_sdk_like_a_live_one(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config({"solo": wall_target(wall, "ok")}, {"chat": {"targets": ["solo"], "cache": {"mode": "hit"}}})
    with gateway(config) as gw:
        client = sdk(gw.base_url)
        live = client.chat.completions.create(model="chat", messages=MESSAGES, temperature=0)
        raw = client.chat.completions.with_raw_response.create(
            model="chat", messages=MESSAGES, temperature=0, stream=True, stream_options={"include_usage": True}
        )
        text, reasons, usage = streamed_text(raw.parse())
    assert live.choices[0].message.content == wall_text(12)
    assert raw.headers["x-lifeline-cache"] == "hit"
    assert (text, reasons) == (wall_text(12), ["stop"])
    assert usage is not None and usage.completion_tokens == live.usage.completion_tokens  # type: ignore[union-attr]
    assert len(wall.attempts) == 1  # the stream never reached the wall


def test_a_stale_answer_when_every_target_is_cut_off(wall: FaultWall, gateway: GatewayFactory) -> None:
    targets = {"primary": wall_target(wall, "status?code=403"), "backup": wall_target(wall, "ok")}
    config = make_config(
        targets, {"chat": {"targets": ["primary", "backup"], "cache": {}}}, admin={"master_key": MASTER}
    )
    with gateway(config) as gw:
        client = sdk(gw.base_url)
        live = client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)
        cut(gw.url, "backup")  # the wall cut primary off already; now nothing answers
        raw = client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES, stream=True)
        text, reasons, _ = streamed_text(raw.parse())
        reached = (len(wall.attempts_for("status?code=403")), len(wall.attempts_for("ok")))
        with pytest.raises(openai.APIStatusError) as other:  # a request never answered has nothing to fall back on
            client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "something new"}])
    assert (live.headers["x-lifeline-target"], live.headers.get("x-lifeline-cache")) == ("backup", None)
    assert raw.headers["x-lifeline-cache"] == "stale"
    assert (text, reasons) == (wall_text(12), ["stop"])
    assert other.value.status_code == 502
    # the wall cut primary off once (its circuit stays open); backup answered once; the cut never reached it
    assert reached == (1, 1)


def test_a_stream_broken_mid_answer_is_never_served_later(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config(
        {"solo": wall_target(wall, "cut?after=3")},
        {"chat": {"targets": ["solo"], "cache": {"mode": "both"}}},
        admin={"master_key": MASTER},
    )
    with gateway(config) as gw:
        client = sdk(gw.base_url)
        received = ""
        with pytest.raises(openai.APIError):
            for chunk in client.chat.completions.create(model="chat", messages=MESSAGES, temperature=0, stream=True):
                received += chunk.choices[0].delta.content or "" if chunk.choices else ""
        cut(gw.url, "solo")
        with pytest.raises(openai.APIStatusError) as after:
            client.chat.completions.create(model="chat", messages=MESSAGES, temperature=0)
    assert received == wall_text(3)  # a partial answer reached the client …
    assert after.value.status_code == 502  # … and was not kept to be served again
    assert "x-lifeline-cache" not in after.value.response.headers


def test_two_gateways_on_one_redis_serve_each_others_answers(
    wall: FaultWall, gateway: GatewayFactory, fresh_redis_url: str
) -> None:
    config = make_config(
        {"solo": wall_target(wall, "ok")},
        {"chat": {"targets": ["solo"], "cache": {"mode": "both"}}},
        accounting={"redis_url": fresh_redis_url},
    )
    with gateway(config) as a, gateway(config) as b:
        live = sdk(a.base_url).chat.completions.create(model="chat", messages=MESSAGES, seed=42)
        raw = sdk(b.base_url).chat.completions.with_raw_response.create(model="chat", messages=MESSAGES, seed=42)
        served = raw.parse()
    assert raw.headers["x-lifeline-cache"] == "hit"
    assert served.choices[0].message.content == live.choices[0].message.content == wall_text(12)
    assert len(wall.attempts) == 1  # gateway b never asked the wall
