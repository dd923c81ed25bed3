"""POST /v1/messages/count_tokens with the official anthropic SDK on real sockets: counted by an Anthropic
target's own count_tokens endpoint (the fault wall's Anthropic face), by the embedded model's tokenizer, or
estimated and marked `x-lifeline-estimate: true` (an OpenAI-compatible target, or an Anthropic one that
fails to count); scoped to the aliases a key may use; nothing generated (nothing accounted: see
tests/server/test_messages_surface.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from lifeline.protocol.usage import estimate_usage
from lifeline.testing import AnthropicFace, FaultWall
from lifeline.testing.gateway import RunningGateway
from tests.conftest import FAST_TIMEOUTS, GatewayFactory, make_config, wall_target
from tests.integration.conftest import KeyedGateway

SYSTEM = "You answer in one short line."
MESSAGES: list[Any] = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": [{"type": "text", "text": "And of Italy, please?"}]},
]
#: the words the face counts: system prompt and text blocks
FACE_WORDS = len(SYSTEM.split()) + 6 + 1 + 4


@pytest.fixture(scope="module")
def face_server() -> Iterator[AnthropicFace]:
    with AnthropicFace().running() as face:
        yield face


@pytest.fixture
def face(face_server: AnthropicFace) -> AnthropicFace:
    face_server.reset()
    return face_server


def face_target(face: AnthropicFace, model: str) -> dict[str, Any]:
    return {
        "kind": "anthropic",
        "base_url": face.url,
        "api_key": "sk-ant-test-0123456789",
        "model": model,
        "timeouts": FAST_TIMEOUTS,
    }


def client(gw: RunningGateway, key: str = "unused") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0, timeout=60)


def count(gw: RunningGateway, model: str = "chat", key: str = "unused") -> tuple[int, httpx.Headers]:
    raw = client(gw, key).messages.with_raw_response.count_tokens(model=model, system=SYSTEM, messages=MESSAGES)
    return raw.parse().input_tokens, raw.headers


def test_an_anthropic_target_counts_with_its_own_endpoint(face: AnthropicFace, gateway: GatewayFactory) -> None:
    config = make_config({"claude": face_target(face, "ok")}, retry={"max_retries": 0})
    with gateway(config) as gw:
        tokens, headers = count(gw)
        plain = client(gw).messages.count_tokens(model="chat", messages=[{"role": "user", "content": "hi"}])
    assert tokens == FACE_WORDS and plain.input_tokens == 1
    assert "x-lifeline-estimate" not in headers and headers["x-lifeline-target"] == "claude"
    calls = face.attempts
    assert [(a.method, a.path) for a in calls] == [("POST", "/v1/messages/count_tokens")] * 2
    sent = calls[0].body
    assert sent is not None and sent["model"] == "ok" and sent["system"] == SYSTEM and "max_tokens" not in sent
    assert sent["messages"][0] == {"role": "user", "content": [{"type": "text", "text": MESSAGES[0]["content"]}]}


def test_an_openai_target_or_a_failing_count_is_the_estimate_marked_so(
    face: AnthropicFace, wall: FaultWall, gateway: GatewayFactory
) -> None:
    config = make_config(
        {"wall": wall_target(wall, "ok"), "claude": face_target(face, "status?code=500")},
        {"chat": ["wall"], "claude": ["claude"]},
        retry={"max_retries": 0},
    )
    chat = {
        "messages": [
            {"role": "system", "content": SYSTEM},
            MESSAGES[0],
            MESSAGES[1],
            {"role": "user", "content": MESSAGES[2]["content"][0]["text"]},
        ]
    }
    with gateway(config) as gw:
        estimated, headers = count(gw)
        failed, failed_headers = count(gw, "claude")
    assert estimated == estimate_usage(chat, 0)["prompt_tokens"] and headers["x-lifeline-estimate"] == "true"
    assert failed == estimated and failed_headers["x-lifeline-estimate"] == "true"
    assert wall.attempts == [] and len(face.attempts) == 1  # nothing generated; the failed count was asked once


def test_a_key_counts_only_for_the_aliases_it_may_use(keyed_gateway: KeyedGateway) -> None:
    gw, secret = keyed_gateway.gw, keyed_gateway.secret
    allowed, _ = count(gw, "chat", secret)
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        count(gw, "other", secret)
    with pytest.raises(anthropic.AuthenticationError):
        count(gw, "chat", "sk-not-a-key")
    with pytest.raises(anthropic.NotFoundError):
        count(gw, "nope", secret)
    assert allowed > 0 and "other" in str(refused.value)


@pytest.mark.embedded
def test_the_embedded_model_counts_with_its_tokenizer_as_it_counts_a_prompt(gateway: GatewayFactory) -> None:
    config = make_config({"local": {"kind": "llamacpp", "model": "builtin:smollm2", "n_ctx": 512, "n_threads": 2}})
    with gateway(config) as gw:
        tokens, headers = count(gw)
        answer = client(gw).messages.create(model="chat", max_tokens=1, system=SYSTEM, messages=MESSAGES)
    assert "x-lifeline-estimate" not in headers and headers["x-lifeline-target"] == "local"
    # the engine's own count of the same prompt, reported with the answer
    assert tokens == answer.usage.input_tokens
