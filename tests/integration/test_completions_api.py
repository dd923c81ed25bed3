"""POST /v1/completions with the official openai SDK (sync, async, streaming) against a real gateway on
loopback, over fault-wall chat targets and the real embedded model: a text completion through the chat
lifecycle, failover from a target that fails, a stream cut after content continued on another target (or
ended with an error the SDK raises), usage, headers, key scoping, and the SDK's own exceptions for what is
refused."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from lifeline.testing import FaultWall, wall_text
from lifeline.testing.gateway import RunningGateway
from tests.conftest import GatewayFactory, make_config, wall_target
from tests.integration.conftest import KeyedGateway


def sdk(gw: RunningGateway, key: str = "x") -> OpenAI:
    return OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=60)


def test_sync_and_async_completions_over_a_chat_target(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config({"main": wall_target(wall, "ok?t=main")})

    async def async_call(gw: RunningGateway) -> Any:
        async with AsyncOpenAI(base_url=gw.base_url, api_key="x", max_retries=0) as client:
            return await client.completions.create(model="chat", prompt=["Say hello."], max_tokens=50)

    with gateway(config) as gw:
        raw = sdk(gw).completions.with_raw_response.create(
            model="chat", prompt="Say hello.", max_tokens=50, temperature=0.3, stop=["\n\n"]
        )
        later = asyncio.run(async_call(gw))
    answer = raw.parse()
    assert answer.object == "text_completion" and answer.id.startswith("cmpl-")
    assert answer.choices[0].text == wall_text(12) and answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.completion_tokens == 12
    assert raw.headers["x-lifeline-target"] == "main" and raw.headers["x-lifeline-attempts"] == "1"
    assert later.choices[0].text == wall_text(12)
    sent = wall.attempts_for("ok?t=main")[0].body
    assert sent is not None and sent["messages"] == [{"role": "user", "content": "Say hello."}]
    assert (sent["max_tokens"], sent["temperature"], sent["stop"]) == (50, 0.3, ["\n\n"])


def test_a_completion_fails_over_and_a_cut_stream_is_continued(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config(
        {
            "primary": wall_target(wall, "cut?after=3"),
            "backup": wall_target(wall, "ok?t=backup", capabilities={"prefill": True}),
        },
        retry={"max_retries": 0},
    )
    with gateway(config) as gw:
        whole = sdk(gw).completions.with_raw_response.create(model="chat", prompt="Hi")
        chunks = list(
            sdk(gw).completions.create(model="chat", prompt="Hi", stream=True, stream_options={"include_usage": True})
        )
    assert whole.parse().choices[0].text == wall_text(12) and whole.headers["x-lifeline-target"] == "backup"
    assert "".join(c.choices[0].text for c in chunks if c.choices) == wall_text(12)
    assert {c.object for c in chunks} == {"text_completion"} and len({c.id for c in chunks}) == 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 9
    # the backup continued from the text the client already had
    last = (wall.attempts_for("ok?t=backup")[-1].body or {})["messages"][-1]
    assert last["role"] == "assistant" and last["content"] == wall_text(3)


def test_a_stream_that_cannot_be_continued_raises_in_the_sdk(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config({"primary": wall_target(wall, "cut?after=3")}, retry={"max_retries": 0})
    texts: list[str] = []
    with gateway(config) as gw, pytest.raises(openai.APIError):
        for chunk in sdk(gw).completions.create(model="chat", prompt="Hi", stream=True):
            texts.extend(c.text for c in chunk.choices)
    assert "".join(texts) == wall_text(3)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"echo": True}, "echo"),
        ({"logprobs": 1}, "logprobs"),
        ({"suffix": "!"}, "suffix"),
        ({"best_of": 2}, "best_of"),
        ({"n": 2}, "n"),
        ({"prompt": ["one", "two"]}, "prompt"),
        ({"prompt": [1, 2, 3]}, "prompt"),
    ],
)
def test_what_is_refused_is_a_bad_request_naming_the_parameter(
    wall: FaultWall, gateway: GatewayFactory, extra: dict[str, Any], param: str
) -> None:
    with (
        gateway(make_config({"main": wall_target(wall, "ok")})) as gw,
        pytest.raises(openai.BadRequestError) as refused,
    ):
        sdk(gw).completions.create(**{"model": "chat", "prompt": "Hi", **extra})
    body = refused.value.body
    assert isinstance(body, dict) and body["param"] == param and body["code"] == "unsupported_parameter"
    assert wall.attempts == []


def test_a_key_completes_only_with_the_aliases_it_may_use(wall: FaultWall, keyed_gateway: KeyedGateway) -> None:
    gw, secret = keyed_gateway.gw, keyed_gateway.secret
    allowed = sdk(gw, secret).completions.create(model="chat", prompt="Hi")
    with pytest.raises(openai.PermissionDeniedError):
        sdk(gw, secret).completions.create(model="other", prompt="Hi")
    with pytest.raises(openai.AuthenticationError):
        sdk(gw, "sk-nope").completions.create(model="chat", prompt="Hi")
    assert allowed.choices[0].text == wall_text(12) and len(wall.attempts) == 1


@pytest.mark.embedded
def test_the_embedded_model_answers_a_completion_whole_and_streamed(gateway: GatewayFactory) -> None:
    config = make_config({"local": {"kind": "llamacpp", "model": "builtin:smollm2", "n_ctx": 512, "n_threads": 2}})
    with gateway(config) as gw:
        whole = sdk(gw).completions.create(model="chat", prompt="Say hello.", max_tokens=6)
        chunks = list(sdk(gw).completions.create(model="chat", prompt="Say hello.", max_tokens=6, stream=True))
    assert whole.choices[0].text and whole.choices[0].finish_reason in ("stop", "length")
    assert whole.usage is not None and whole.usage.prompt_tokens > 0 and 0 < whole.usage.completion_tokens <= 6
    assert "".join(c.choices[0].text for c in chunks if c.choices)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] in (
        ["stop"],
        ["length"],
    )
