"""The embedded engine for real: the shipped SmolLM2-135M GGUF behind the gateway on loopback, driven by the
official openai SDK and raw httpx. Outputs are kept to a few tokens; the long generations are cut short by
the client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from openai import AsyncOpenAI, OpenAI

from lifeline.config import Config, default_config
from lifeline.config.schema import LlamaCppTarget
from lifeline.errors import ModelResolutionError
from lifeline.providers.llamacpp import LlamaCppProvider, resolve_model
from lifeline.server.app import create_app
from lifeline.testing import FaultWall, wall_text
from lifeline.testing.gateway import RunningGateway
from tests.conftest import GatewayFactory, make_config, wall_target

pytestmark = pytest.mark.embedded

SERVED = "smollm2-135m-instruct"
HELLO = [{"role": "user", "content": "Say hello."}]
LONG = [{"role": "user", "content": "Write a very long story about a dragon and a knight."}]
HF_SPEC = "hf:HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/smollm2.gguf"


def local_target(**extra: Any) -> dict[str, Any]:
    return {"kind": "llamacpp", "model": "builtin:smollm2", "n_ctx": 512, "n_threads": 2, **extra}


def local_config(**extra: Any) -> Config:
    return make_config({"local": local_target(**extra)}, {"chat": ["local"], "local": ["local"]})


def provider(gw: RunningGateway, name: str = "local") -> LlamaCppProvider:
    found = gw.gateway.providers[name]
    assert isinstance(found, LlamaCppProvider)
    return found


def sdk(gw: RunningGateway) -> OpenAI:
    return OpenAI(base_url=gw.base_url, api_key="x", max_retries=0, timeout=60)


def sse_events(lines: Iterator[str]) -> Iterator[bytes]:
    """The data payloads of a server-sent event stream, in order."""
    for line in lines:
        if line.startswith("data: "):
            yield line.removeprefix("data: ").encode()


def wait_until_idle(p: LlamaCppProvider, polls: int = 3000) -> None:
    """Wait until the provider admits nothing; a guard against hanging, not a measure of speed."""
    for _ in range(polls):
        if p._admitted == 0 and p.queue_depth == 0:
            return
        time.sleep(0.02)
    pytest.fail(f"the engine was not released: admitted={p._admitted}, queue_depth={p.queue_depth}")


def count_generated(p: LlamaCppProvider) -> list[int]:
    """Count the pieces the engine generates, one counter per generation, as the engine thread makes them."""
    generations: list[int] = []
    generate = p._llm.create_chat_completion

    def counting(**kwargs: Any) -> Iterator[Any]:
        generations.append(0)
        run = len(generations) - 1
        for piece in generate(**kwargs):
            generations[run] += 1
            yield piece

    p._llm.create_chat_completion = counting
    return generations


# --- answers ----------------------------------------------------------------------------------------


def test_a_non_streaming_answer_through_the_sdk(gateway: GatewayFactory) -> None:
    with gateway(local_config()) as gw:
        raw = sdk(gw).chat.completions.with_raw_response.create(model="chat", messages=HELLO, max_tokens=6)
        answer = raw.parse()
        assert provider(gw)._admitted == 0
    assert raw.headers["x-lifeline-target"] == "local"
    assert raw.headers["x-lifeline-attempts"] == "1"
    assert answer.model == SERVED
    assert answer.object == "chat.completion"
    assert len(answer.choices) == 1
    choice = answer.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert answer.usage is not None
    assert answer.usage.prompt_tokens > 0
    assert 0 < answer.usage.completion_tokens <= 6
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    # real token counts, not the gateway's estimate
    assert "x_lifeline" not in (answer.model_extra or {})


def test_a_streaming_answer_through_the_sdk_with_usage(gateway: GatewayFactory) -> None:
    with gateway(local_config()) as gw:
        stream = sdk(gw).chat.completions.create(
            model="chat", messages=HELLO, max_tokens=6, stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage_chunks = [c for c in chunks if c.usage is not None]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text.strip()
    assert len(usage_chunks) == 1
    usage = usage_chunks[0].usage
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert 0 < usage.completion_tokens <= 6
    # the usage chunk comes last, with no choices, after exactly one finish reason
    assert chunks[-1] is usage_chunks[0]
    assert chunks[-1].choices == []
    assert finishes in (["stop"], ["length"])
    assert {c.model for c in chunks} == {SERVED}
    assert len({c.id for c in chunks}) == 1


def test_a_stream_ends_with_done_and_without_usage_unless_asked(gateway: GatewayFactory) -> None:
    body = {"model": "chat", "messages": HELLO, "max_tokens": 4, "stream": True}
    with (
        gateway(local_config()) as gw,
        httpx.stream("POST", f"{gw.base_url}/chat/completions", json=body, timeout=60) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-lifeline-target"] == "local"
        events = list(sse_events(response.iter_lines()))
    assert events[-1] == b"[DONE]"
    parsed = [orjson.loads(e) for e in events[:-1]]
    assert all("usage" not in p or p["usage"] is None for p in parsed)
    assert any(p["choices"] and p["choices"][0].get("finish_reason") for p in parsed)


def test_an_async_client(gateway: GatewayFactory) -> None:
    async def ask(base_url: str) -> tuple[str, str]:
        async with AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=60) as client:
            answer = await client.chat.completions.create(model="local", messages=HELLO, max_tokens=5)
            stream = await client.chat.completions.create(model="local", messages=HELLO, max_tokens=5, stream=True)
            streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        return answer.choices[0].message.content or "", streamed

    with gateway(local_config()) as gw:
        content, streamed = asyncio.run(ask(gw.base_url))
    assert content.strip()
    assert streamed.strip()


def test_content_part_arrays_are_read_as_text(gateway: GatewayFactory) -> None:
    as_strings: Any = [
        {"role": "system", "content": "You are brief."},
        {"role": "user", "content": "Say hello."},
    ]
    as_parts: Any = [
        {"role": "system", "content": [{"type": "text", "text": "You are brief."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Say"},
                {"type": "text", "text": " hello."},
            ],
        },
    ]
    with gateway(local_config()) as gw:
        client = sdk(gw)
        plain = client.chat.completions.create(model="chat", messages=as_strings, max_tokens=4, temperature=0)
        parts = client.chat.completions.create(model="chat", messages=as_parts, max_tokens=4, temperature=0)
    assert parts.choices[0].message.content and parts.choices[0].message.content.strip()
    assert parts.usage is not None and plain.usage is not None
    # the text parts, joined, make the same prompt as the plain strings
    assert parts.usage.prompt_tokens == plain.usage.prompt_tokens
    assert parts.choices[0].message.content == plain.choices[0].message.content


def test_an_image_is_not_sent_to_the_text_only_engine(gateway: GatewayFactory) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    messages: Any = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]}]
    with gateway(local_config()) as gw:
        response = httpx.post(
            f"{gw.base_url}/chat/completions", json={"model": "chat", "messages": messages, "max_tokens": 4}
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "unsupported_capability"
    assert "no image input" in error["message"]


def test_the_no_config_default_serves_default_and_local(gateway: GatewayFactory) -> None:
    config = default_config()
    assert set(config.aliases) == {"default", "local"}
    with gateway(config) as gw:
        client = sdk(gw)
        assert sorted(m.id for m in client.models.list()) == ["default", "local"]
        for alias in ("default", "local"):
            raw = client.chat.completions.with_raw_response.create(model=alias, messages=HELLO, max_tokens=4)
            answer = raw.parse()
            assert raw.headers["x-lifeline-target"] == "local"
            assert answer.model == SERVED
            assert answer.choices[0].message.content


def test_sampling_parameters_reach_the_engine(gateway: GatewayFactory) -> None:
    with gateway(local_config()) as gw:
        client = sdk(gw)
        free = client.chat.completions.create(model="chat", messages=HELLO, max_tokens=8, temperature=0)
        stopped = client.chat.completions.create(
            model="chat", messages=HELLO, max_tokens=8, temperature=0, stop=["!"], seed=7, top_p=0.9
        )
    text = free.choices[0].message.content or ""
    assert "!" in text
    # greedy decoding makes the same start; the stop sequence cuts it before the "!"
    assert stopped.choices[0].message.content == text[: text.index("!")]
    assert stopped.choices[0].finish_reason == "stop"


def test_a_prompt_longer_than_the_context_is_a_clean_400_or_fails_over(
    wall: FaultWall, gateway: GatewayFactory
) -> None:
    long_prompt = [{"role": "user", "content": "dragon " * 700}]
    spec = "ok?served_model=big-context"
    config = make_config(
        {"local": local_target(), "big": wall_target(wall, spec, context_window=128_000)},
        {"local": ["local"], "chat": ["local", "big"]},
    )
    with gateway(config) as gw:
        alone = httpx.post(
            f"{gw.base_url}/chat/completions", json={"model": "local", "messages": long_prompt, "max_tokens": 4}
        )
        streamed = httpx.post(
            f"{gw.base_url}/chat/completions",
            json={"model": "local", "messages": long_prompt, "max_tokens": 4, "stream": True},
        )
        moved = httpx.post(
            f"{gw.base_url}/chat/completions", json={"model": "chat", "messages": long_prompt, "max_tokens": 4}
        )
        assert provider(gw)._admitted == 0
    for r in (alone, streamed):
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "context_length_exceeded"
        assert error["param"] == "messages"
        assert "512" in error["message"]
    assert moved.status_code == 200
    assert moved.headers["x-lifeline-target"] == "big"
    assert moved.json()["model"] == "big-context"


# --- the engine is released -------------------------------------------------------------------------


def test_a_client_leaving_mid_stream_releases_the_engine_promptly(gateway: GatewayFactory) -> None:
    body = {"model": "chat", "messages": LONG, "max_tokens": 400, "stream": True}
    with gateway(local_config()) as gw:
        engine = provider(gw)
        generated = count_generated(engine)
        with httpx.stream("POST", f"{gw.base_url}/chat/completions", json=body, timeout=60) as response:
            assert response.status_code == 200
            events = sse_events(response.iter_lines())
            first, second = next(events), next(events)
            assert orjson.loads(first)["choices"] and orjson.loads(second)["choices"]
            assert engine._admitted == 1
            when_left = generated[0]
        wait_until_idle(engine)
        answer = sdk(gw).chat.completions.create(model="chat", messages=HELLO, max_tokens=4)
        assert answer.choices[0].message.content
        assert engine._admitted == 0
        assert engine.queue_depth == 0
    # The abandoned generation stopped within a few pieces of the client leaving — the time the server takes
    # to notice the closed connection — and never went on towards its 400 tokens; the single engine thread
    # then generated the next answer. Counted, not timed.
    abandoned, following = generated
    assert abandoned - when_left <= 40, generated
    assert 0 < following <= 6


# --- a full queue -----------------------------------------------------------------------------------


def _overflow(gw: RunningGateway, alias: str, count: int = 1) -> list[httpx.Response]:
    """Send `count` requests while a long stream holds the engine, then leave the stream."""
    body = {"model": alias, "messages": LONG, "max_tokens": 400, "stream": True}
    with httpx.stream("POST", f"{gw.base_url}/chat/completions", json=body, timeout=60) as first:
        assert first.status_code == 200
        assert first.headers["x-lifeline-target"] == "local"
        events = sse_events(first.iter_lines())
        next(events)
        others = [
            httpx.post(
                f"{gw.base_url}/chat/completions", json={"model": alias, "messages": HELLO, "max_tokens": 4}, timeout=30
            )
            for _ in range(count)
        ]
        # the first stream was still generating when the others were answered
        after = orjson.loads(next(events))
    assert after["choices"] and after["choices"][0]["finish_reason"] is None
    return others


def test_a_full_queue_with_nowhere_else_to_go_is_429_with_retry_after(gateway: GatewayFactory) -> None:
    with gateway(local_config(max_queue=0, retry_after=2)) as gw:
        (second,) = _overflow(gw, "local")
        wait_until_idle(provider(gw))
    assert second.status_code == 429
    assert second.headers["retry-after"] == "2"
    error = second.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "rate_limit_error"
    assert error["code"] == "all_targets_busy"
    assert "Traceback" not in second.text


def test_a_full_queue_fails_over_to_the_next_target(wall: FaultWall, gateway: GatewayFactory) -> None:
    spec = "ok?served_model=after-overflow"
    config = make_config(
        {"local": local_target(max_queue=0), "hosted": wall_target(wall, spec)}, {"chat": ["local", "hosted"]}
    )
    with gateway(config) as gw:
        (second,) = _overflow(gw, "chat")
        wait_until_idle(provider(gw))
    assert second.status_code == 200
    assert second.headers["x-lifeline-target"] == "hosted"
    assert second.headers["x-lifeline-attempts"] == "2"
    assert second.json()["model"] == "after-overflow"
    assert second.json()["choices"][0]["message"]["content"] == wall_text(4)
    assert len(wall.attempts_for(spec)) == 1


def test_a_burst_of_overflows_does_not_open_the_engines_circuit(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config(
        {"local": local_target(max_queue=0), "hosted": wall_target(wall, "ok?t=burst")},
        {"chat": ["local", "hosted"], "local": ["local"]},
    )
    with gateway(config) as gw:
        # failure_threshold is 5: five requests find the engine busy and go to the hosted target; a full queue
        # says the engine is busy, not broken, so its circuit stays closed
        others = _overflow(gw, "chat", count=5)
        assert [r.headers["x-lifeline-target"] for r in others] == ["hosted"] * 5
        wait_until_idle(provider(gw))
        # the engine is idle and healthy again: it answers, and the instance is ready
        after = httpx.post(
            f"{gw.base_url}/chat/completions", json={"model": "chat", "messages": HELLO, "max_tokens": 4}, timeout=30
        )
        ready = httpx.get(f"{gw.url}/readyz")
        state = gw.gateway.health.circuit("local").state.value
    assert state == "closed"
    assert after.status_code == 200
    assert after.headers["x-lifeline-target"] == "local"
    assert ready.status_code == 200


def test_n_above_one_on_an_embedded_only_alias_is_400_naming_n(gateway: GatewayFactory) -> None:
    body = {"model": "chat", "messages": HELLO, "max_tokens": 4, "n": 2}
    with gateway(local_config()) as gw:
        response = httpx.post(f"{gw.base_url}/chat/completions", json=body, timeout=30)
        streamed = httpx.post(f"{gw.base_url}/chat/completions", json={**body, "stream": True}, timeout=30)
    for r in (response, streamed):
        assert r.status_code == 400
        error = r.json()["error"]
        assert error["param"] == "n"
        assert error["type"] == "invalid_request_error"


# --- resolving models -------------------------------------------------------------------------------


def test_builtin_smollm2_resolves_to_the_shipped_file() -> None:
    path, served = resolve_model("builtin:smollm2")
    assert path.is_file()
    assert path.suffix == ".gguf"
    assert path.stat().st_size > 50_000_000
    assert served == SERVED


@pytest.mark.parametrize("spec", ["builtin:nope", "/definitely/not/here/model.gguf"])
def test_an_unresolvable_model_is_a_clear_error(spec: str) -> None:
    with pytest.raises(ModelResolutionError):
        resolve_model(spec)


def test_a_missing_gguf_path_stops_create_app(tmp_path: Path) -> None:
    missing = tmp_path / "absent.gguf"
    config = make_config({"local": {"kind": "llamacpp", "model": str(missing)}})
    with pytest.raises(ModelResolutionError, match=r"absent\.gguf"):
        create_app(config)
    with pytest.raises(ModelResolutionError):
        LlamaCppProvider("local", LlamaCppTarget(kind="llamacpp", model=str(missing)))


@pytest.mark.parametrize(
    "spec",
    [
        "hf:repo-only/file.gguf",
        "hf:owner/repo/file.bin",
        "hf:owner/repo/",
        "hf:file.gguf",
        "hf:",
    ],
)
def test_a_bad_hub_spec_is_a_clear_error_without_fetching(spec: str) -> None:
    fetched: list[tuple[str, str]] = []

    def fetch(repo_id: str, filename: str) -> str:
        fetched.append((repo_id, filename))
        raise AssertionError("a bad spec must not be fetched")

    with pytest.raises(ModelResolutionError, match=r"hf:OWNER/REPO/FILE\.gguf"):
        resolve_model(spec, fetch)
    assert fetched == []


def test_a_hub_model_goes_through_the_injected_fetch_and_loads() -> None:
    shipped, _ = resolve_model("builtin:smollm2")
    fetched: list[tuple[str, str]] = []

    def fetch(repo_id: str, filename: str) -> str:
        fetched.append((repo_id, filename))
        return str(shipped)

    path, served = resolve_model(HF_SPEC, fetch)
    assert fetched == [("HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", "smollm2.gguf")]
    assert path == shipped
    assert served == "smollm2"

    fetched.clear()
    engine = LlamaCppProvider(
        "hub", LlamaCppTarget(kind="llamacpp", model=HF_SPEC, n_ctx=512, n_threads=2), fetch=fetch
    )
    assert fetched == [("HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", "smollm2.gguf")]
    assert engine.model == "smollm2"

    async def generate() -> dict[str, Any]:
        from lifeline.protocol.parse import validate_chat_request
        from lifeline.providers.base import ChatCall, Deadline

        body = {"model": "hub", "messages": HELLO, "max_tokens": 4}
        call = ChatCall(body=body, request=validate_chat_request(body), request_id="t", deadline=Deadline.after(30))
        await engine.start()
        try:
            return (await engine.complete(call)).body
        finally:
            await engine.close()

    body = asyncio.run(generate())
    assert body["model"] == "smollm2"
    assert body["choices"][0]["message"]["content"]
    assert 0 < body["usage"]["completion_tokens"] <= 4


def test_the_engine_queue_depth_is_in_the_metrics(gateway: GatewayFactory) -> None:
    def depth(gw: RunningGateway) -> str:
        text = httpx.get(f"{gw.url}/metrics").text
        return next(line for line in text.splitlines() if line.startswith("lifeline_engine_queue_depth{"))

    body = {"model": "local", "messages": LONG, "max_tokens": 400, "stream": True}
    with gateway(local_config(max_queue=1)) as gw:
        assert depth(gw) == 'lifeline_engine_queue_depth{target="local"} 0'
        with httpx.stream("POST", f"{gw.base_url}/chat/completions", json=body, timeout=60) as first:
            events = sse_events(first.iter_lines())
            next(events)  # the engine is generating for the first request
            with ThreadPoolExecutor(1) as pool:
                second = pool.submit(
                    httpx.post,
                    f"{gw.base_url}/chat/completions",
                    json={"model": "local", "messages": HELLO, "max_tokens": 2},
                    timeout=60,
                )
                while provider(gw).queue_depth == 0 and not second.done():
                    time.sleep(0.01)
                queued = depth(gw)
                first.close()  # leaving frees the engine for the one waiting
                assert second.result().status_code == 200
        wait_until_idle(provider(gw))
        after = depth(gw)
    assert queued == 'lifeline_engine_queue_depth{target="local"} 1'
    assert after == 'lifeline_engine_queue_depth{target="local"} 0'
