"""The whole chain the open-model work is for: a closed provider, two hosts of the same open model, and the
embedded engine — reached OpenAI-style and Anthropic-style, streaming or not, with tools — each request
landing on the first target that can serve it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from openai import OpenAI

from lifeline.config import parse_config
from lifeline.testing import FaultWall, wall_text
from lifeline.testing.anthropic_face import AnthropicFace
from tests.conftest import GatewayFactory

TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
FAST = {"connect": 1.0, "first_byte": 2.0, "response": 5.0, "ttft": 2.0, "idle": 2.0}


@pytest.fixture(scope="module")
def face() -> Iterator[AnthropicFace]:
    with AnthropicFace().running() as running:
        yield running


def chain(wall: FaultWall, face: AnthropicFace, tmp_path: Path, second_host: str) -> Any:
    """claude (overloaded) → qwen3-32b on vLLM (down) → qwen3-32b on Ollama (`second_host`) → embedded."""
    return parse_config(
        {
            "retry": {"max_retries": 0},
            "accounting": {"data_dir": str(tmp_path)},
            "targets": {
                "claude": {"kind": "anthropic", "base_url": face.url, "api_key": "sk-ant-test",
                           "model": "status?code=529", "timeouts": FAST},
                "qwen-vllm": {"preset": "vllm", "base_url": wall.base_url, "model": "Qwen/Qwen3-32B",
                              "headers": {"x-wall-behaviour": "status?code=503"}, "timeouts": FAST,
                              "meta": {"open_weights": True, "licence": "apache-2.0", "country": "CN"}},
                "qwen-ollama": {"preset": "ollama", "base_url": wall.base_url, "model": "qwen3:32b",
                                "headers": {"x-wall-behaviour": second_host}, "timeouts": FAST,
                                "meta": {"open_weights": True, "licence": "apache-2.0", "country": "CN"}},
                "embedded": {"kind": "llamacpp", "model": "builtin:smollm2", "n_ctx": 512},
            },
            "aliases": {"chat": {"targets": ["claude", "qwen-vllm", "qwen-ollama", "embedded"]}},
        },
        env={},
    )  # fmt: skip


@pytest.mark.embedded
def test_every_style_of_request_reaches_the_first_target_that_can_serve_it(
    wall: FaultWall, face: AnthropicFace, gateway: GatewayFactory, tmp_path: Path
) -> None:
    messages: Any = [{"role": "user", "content": "hello there"}]
    with gateway(chain(wall, face, tmp_path, "ok")) as gw:
        client = OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        plain = client.chat.completions.with_raw_response.create(model="chat", messages=messages)
        stream = client.chat.completions.create(model="chat", messages=messages, stream=True, tools=TOOLS)
        streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        claude_style = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)
        message = claude_style.messages.create(model="chat", max_tokens=64, messages=messages)
        with claude_style.messages.stream(model="chat", max_tokens=64, messages=messages) as events:
            anthropic_streamed = "".join(events.text_stream)
    assert plain.headers["x-lifeline-target"] == "qwen-ollama"
    assert plain.headers["x-lifeline-attempts"] == "3"
    assert plain.parse().choices[0].message.content == wall_text(12)
    assert streamed == wall_text(12)
    assert message.content[0].text == wall_text(12)  # type: ignore[union-attr]
    assert anthropic_streamed == wall_text(12)
    # the closed provider was tried first each time, then the open model's two hosts
    assert len(face.attempts_for("status?code=529")) == 4
    bodies = [a.body for a in wall.attempts if a.body]
    assert {b["model"] for b in bodies} == {"Qwen/Qwen3-32B", "qwen3:32b"}
    assert any(b.get("tools") == TOOLS for b in bodies)


@pytest.mark.embedded
def test_the_embedded_engine_catches_what_it_can_and_skips_what_it_cannot(
    wall: FaultWall, face: AnthropicFace, gateway: GatewayFactory, tmp_path: Path
) -> None:
    messages: Any = [{"role": "user", "content": "Say hi."}]
    with gateway(chain(wall, face, tmp_path, "status?code=401")) as gw:
        plain = httpx.post(
            f"{gw.base_url}/chat/completions",
            json={"model": "chat", "messages": messages, "max_tokens": 4},
            timeout=30,
        )
        with_tools = httpx.post(
            f"{gw.base_url}/chat/completions",
            json={"model": "chat", "messages": messages, "max_tokens": 40, "tools": TOOLS, "tool_choice": "required"},
            timeout=30,
        )
        image = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
        with_image = httpx.post(
            f"{gw.base_url}/chat/completions",
            json={"model": "chat", "messages": [{"role": "user", "content": image}], "max_tokens": 4},
            timeout=30,
        )
    assert plain.status_code == 200
    assert plain.headers["x-lifeline-target"] == "embedded"
    assert plain.json()["model"] == "smollm2-135m-instruct"
    # the embedded engine calls tools too
    assert with_tools.status_code == 200 and with_tools.headers["x-lifeline-target"] == "embedded"
    [call] = with_tools.json()["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "lookup"
    # nobody left who reads images: the embedded engine is skipped, and the client is told why
    assert with_image.status_code == 502
    assert "embedded: skipped: " in with_image.json()["error"]["message"]
