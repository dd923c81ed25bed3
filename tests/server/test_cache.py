"""The response cache in process: the real app over fake targets (tests/server/fakes.py), whose behaviour the tests
change between requests (a target set to "down" fails every attempt), with the cache's clock moved by hand.
Hits, misses and expiry, per-key isolation, stale answers only when every target failed, never a partial or a
spliced answer, streaming clients served a whole stream, the ledger and the metrics. Real sockets, the openai
SDK and Redis shared by two gateways are in tests/integration/test_cache.py."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from lifeline.config import Config, parse_config
from lifeline.errors import ConfigError
from lifeline.providers.registry import ProviderRegistry
from lifeline.server.gateway import Gateway
from lifeline.server.reload import carry_over
from tests.server.fakes import PROMPT, USAGE, FakeProvider, InProcess, in_process
from tests.server.test_exchange import data_events, text_of

DETERMINISTIC = {"model": "chat", "messages": PROMPT, "temperature": 0}
SAMPLED = {"model": "chat", "messages": PROMPT, "temperature": 0.7}
STREAM = {"stream": True, "stream_options": {"include_usage": True}}


def config(*models: str, prefill: bool = False, auth: bool = False, **cache: Any) -> Config:
    """Targets t1, t2 … serving `models` (see fakes.py) behind the chat alias `chat`, which caches with `cache`."""
    targets = {
        f"t{i}": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": model}
        | ({"capabilities": {"prefill": True}} if prefill else {})
        for i, model in enumerate(models, 1)
    }
    data: dict[str, Any] = {
        "targets": targets,
        "aliases": {"chat": {"targets": list(targets), "cache": cache}},
        "retry": {"max_retries": 0},
        "auth": {"enabled": auth},
    }
    return parse_config(data, env={})


Scenario = Callable[[InProcess, httpx.AsyncClient], Awaitable[None]]


def serve(cfg: Config, scenario: Scenario) -> InProcess:
    async def main() -> InProcess:
        async with in_process(cfg) as served, served.client() as client:
            await scenario(served, client)
        return served

    return asyncio.run(main())


def gateway(served: InProcess) -> Gateway:
    gw: Gateway = served.app.state.gateway
    return gw


def set_all(served: InProcess, model: str) -> None:
    """Every target now behaves as `model` says (the fakes read their model at each attempt)."""
    for provider in served.providers.values():
        provider.model = model


async def chat(client: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> httpx.Response:
    return await client.post("/v1/chat/completions", json=body, headers=headers)


# --- hit mode ---------------------------------------------------------------------------------------------


def test_a_deterministic_repeat_is_a_hit_that_asks_no_target() -> None:
    seen: list[httpx.Response] = []

    async def scenario(served: InProcess, client: httpx.AsyncClient) -> None:
        seen.append(await chat(client, DETERMINISTIC))
        set_all(served, "down")  # a target asked now would fail
        seen.append(await chat(client, DETERMINISTIC))
        seen.append(await chat(client, {**DETERMINISTIC, "stream": True}))  # stream is not part of the request

    served = serve(config("ok", mode="hit"), scenario)
    first, hit, streamed = seen
    assert "x-lifeline-cache" not in first.headers
    assert (hit.status_code, hit.headers["x-lifeline-cache"], hit.headers["x-lifeline-attempts"]) == (200, "hit", "0")
    assert "x-lifeline-target" not in hit.headers
    assert hit.json()["choices"] == first.json()["choices"] and hit.json()["usage"] == USAGE
    assert hit.json()["id"] != first.json()["id"]
    assert streamed.headers["x-lifeline-cache"] == "hit" and text_of(data_events(streamed)) == "Hello there"
    records = served.records
    assert [(r.cache, r.outcome, r.status) for r in records] == [(None, "ok", 200), *[("hit", "ok", 200)] * 2]
    assert [(r.target, r.cost_nusd, r.attempts) for r in records[1:]] == [(None, 0, [])] * 2
    metrics = gateway(served).metrics.render()
    assert 'lifeline_cache_lookups_total{alias="chat",outcome="miss"} 1' in metrics
    assert 'lifeline_cache_lookups_total{alias="chat",outcome="hit"} 2' in metrics
    assert 'lifeline_cache_stored_total{alias="chat"} 1' in metrics


def test_a_request_with_a_seed_is_deterministic_too_and_any_change_is_another_request() -> None:
    seeded = {"model": "chat", "messages": PROMPT, "seed": 7}
    seen: list[httpx.Response] = []

    async def scenario(served: InProcess, client: httpx.AsyncClient) -> None:
        await chat(client, seeded)
        set_all(served, "down")
        seen.append(await chat(client, {**seeded, "user": "someone", "metadata": {"run": "2"}}))
        for changed in ({"seed": 8}, {"max_tokens": 5}, {"tools": [{"type": "function", "function": {"name": "f"}}]}):
            seen.append(await chat(client, {**seeded, **changed}))
        seen.append(await chat(client, {**seeded, "messages": [{"role": "user", "content": "Say hello!"}]}))

    serve(config("ok", mode="hit"), scenario)
    assert [r.status_code for r in seen] == [200, 502, 502, 502, 502]  # user and metadata do not count


def test_a_request_that_is_not_deterministic_is_never_served_a_hit() -> None:
    seen: list[httpx.Response] = []

    async def scenario(served: InProcess, client: httpx.AsyncClient) -> None:
        seen.append(await chat(client, SAMPLED))
        set_all(served, "down")
        seen.append(await chat(client, SAMPLED))
        seen.append(await chat(client, {**SAMPLED, "temperature": None}))  # the target's default: sampled too

    served = serve(config("ok", mode="hit"), scenario)
    assert [r.status_code for r in seen] == [200, 502, 502]
    assert 'outcome="bypass"} 3' in gateway(served).metrics.render()


def test_an_answer_expires_after_its_ttl_on_the_caches_clock() -> None:
    now = [1_000_000.0]
    seen: list[httpx.Response] = []

    async def scenario(served: InProcess, client: httpx.AsyncClient) -> None:
        gateway(served).accounting.cache.clock = lambda: now[0]
        await chat(client, DETERMINISTIC)
        set_all(served, "down")
        now[0] += 59.9
        seen.append(await chat(client, DETERMINISTIC))
        now[0] += 0.1  # stored 60 s ago: gone
        seen.append(await chat(client, DETERMINISTIC))

    serve(config("ok", mode="hit", ttl=60), scenario)
    assert [r.status_code for r in seen] == [200, 502]
    assert seen[0].headers["x-lifeline-cache"] == "hit"


def test_answers_are_kept_per_key_unless_the_alias_shares_them() -> None:
    def run(shared: bool) -> list[httpx.Response]:
        seen: list[httpx.Response] = []

        async def scenario(served: InProcess, client: httpx.AsyncClient) -> None:
            accounting = gateway(served).accounting
            secrets = [accounting.store.create(name)[1] for name in ("alice", "bob")]
            await accounting.refresh_keys()
            alice, bob = ({"authorization": f"Bearer {s}"} for s in secrets)
            await chat(client, DETERMINISTIC, **alice)
            set_all(served, "down")
            seen.append(await chat(client, DETERMINISTIC, **bob))
            seen.append(await chat(client, DETERMINISTIC, **alice))

        serve(config("ok", auth=True, mode="both", shared_across_keys=shared), scenario)
        return seen

    bob, alice = run(shared=False)
    assert bob.status_code == 502  # bob never receives alice's answer, not even stale
    assert (alice.status_code, alice.headers["x-lifeline-cache"]) == (200, "hit")
    bob, alice = run(shared=True)
    assert (bob.status_code, bob.headers["x-lifeline-cache"]) == (200, "hit")


def test_the_size_bound_evicts_the_least_recently_used_answer() -> None:
    seen: list[httpx.Response] = []

    def asking(n: int) -> dict[str, Any]:
        return {**DETERMINISTIC, "messages": [{"role": "user", "content": f"question {n}"}]}

    async def scenario(served: InProcess, client: httpx.AsyncClient) -> None:
        await chat(client, asking(1))
        await chat(client, asking(2))
        set_all(served, "down")
        seen.append(await chat(client, asking(1)))  # 1 is now the most recently used
        set_all(served, "ok")
        await chat(client, asking(3))  # a third answer: 2 goes
        set_all(served, "down")
        seen.extend([await chat(client, asking(n)) for n in (1, 2, 3)])

    served = serve(config("ok", mode="hit", max_entries=2), scenario)
    assert [r.status_code for r in seen] == [200, 200, 502, 200]
    assert 'lifeline_cache_evicted_total{alias="chat"} 1' in gateway(served).metrics.render()


# --- stale on failure -------------------------------------------------------------------------------------


def test_a_stale_answer_is_served_only_when_every_target_failed() -> None:
    seen: list[httpx.Response] = []

    async def scenario(served: InProcess, client: httpx.AsyncClient) -> None:
        seen.append(await chat(client, SAMPLED))
        served.providers["t1"].model = "down"
        seen.append(await chat(client, SAMPLED))  # t2 still answers: a live answer, not the cache's
        set_all(served, "down")
        seen.append(await chat(client, SAMPLED))
        seen.append(await chat(client, {**SAMPLED, **STREAM}))
        seen.append(await chat(client, {**SAMPLED, "messages": [{"role": "user", "content": "Something else."}]}))

    served = serve(config("ok", "ok"), scenario)
    _, live, stale, streamed, unknown = seen
    assert (live.status_code, live.headers["x-lifeline-target"]) == (200, "t2")
    assert "x-lifeline-cache" not in live.headers
    assert (stale.status_code, stale.headers["x-lifeline-cache"], stale.headers["x-lifeline-attempts"]) == (
        200,
        "stale",
        "2",
    )
    assert stale.json()["choices"] == live.json()["choices"]
    events = data_events(streamed)
    assert streamed.headers["x-lifeline-cache"] == "stale"
    assert text_of(events) == "Hello there" and events[-1] == "[DONE]" and events[-2]["usage"] == USAGE
    assert unknown.status_code == 502 and unknown.json()["error"]["code"] == "all_targets_failed"
    stale_record = served.records[2]
    assert (stale_record.cache, stale_record.outcome, stale_record.target, stale_record.cost_nusd) == (
        "stale",
        "ok",
        None,
        0,
    )
    assert [a["outcome"] for a in stale_record.attempts] == ["model_not_found", "model_not_found"]
    metrics = gateway(served).metrics.render()
    assert 'outcome="stale"} 2' in metrics and 'outcome="miss"} 1' in metrics


def test_a_stale_on_failure_alias_serves_no_hits() -> None:
    seen: list[httpx.Response] = []

    async def scenario(served: InProcess, client: httpx.AsyncClient) -> None:
        seen.append(await chat(client, DETERMINISTIC))
        seen.append(await chat(client, DETERMINISTIC))

    served = serve(config("ok"), scenario)
    assert [(r.headers["x-lifeline-target"], "x-lifeline-cache" in r.headers) for r in seen] == [("t1", False)] * 2
    assert [r.cache for r in served.records] == [None, None]


def test_a_stream_broken_mid_answer_is_never_kept() -> None:
    seen: list[httpx.Response] = []

    async def scenario(served: InProcess, client: httpx.AsyncClient) -> None:
        seen.append(await chat(client, {**DETERMINISTIC, **STREAM}))  # "Hello", then the target breaks
        set_all(served, "down")
        seen.append(await chat(client, DETERMINISTIC))

    served = serve(config("cut", mode="both"), scenario)
    broken, after = seen
    assert data_events(broken)[-1]["error"]["code"] == "upstream_stream_broken"
    assert after.status_code == 502 and "x-lifeline-cache" not in after.headers
    assert "lifeline_cache_stored_total" not in gateway(served).metrics.render()


def test_a_continued_answer_is_not_kept() -> None:
    seen: list[httpx.Response] = []

    async def scenario(served: InProcess, client: httpx.AsyncClient) -> None:
        seen.append(await chat(client, {**DETERMINISTIC, **STREAM}))  # t1 breaks, t2 continues it
        set_all(served, "down")
        seen.append(await chat(client, DETERMINISTIC))

    serve(config("cut", "ok", prefill=True, mode="both"), scenario)
    continued, after = seen
    assert text_of(data_events(continued)) == "Hello there"
    assert after.status_code == 502


def test_a_client_mistake_is_not_replaced_by_a_stale_answer() -> None:
    seen: list[httpx.Response] = []

    async def scenario(served: InProcess, client: httpx.AsyncClient) -> None:
        await chat(client, SAMPLED)
        seen.append(await chat(client, {**SAMPLED, "model": "nope"}))
        seen.append(await chat(client, {**SAMPLED, "temperature": "hot"}))

    serve(config("ok"), scenario)
    assert [r.status_code for r in seen] == [404, 400]


# --- the other wire formats -------------------------------------------------------------------------------


def test_messages_and_responses_are_served_from_the_cache_in_their_own_formats() -> None:
    message = {"model": "chat", "max_tokens": 64, "messages": PROMPT}
    response = {"model": "chat", "input": "Say hello.", "store": False}
    seen: list[httpx.Response] = []

    async def scenario(served: InProcess, client: httpx.AsyncClient) -> None:
        await client.post("/v1/messages", json=message)
        await client.post("/v1/responses", json=response)
        set_all(served, "down")
        seen.append(await client.post("/v1/messages", json=message))
        seen.append(await client.post("/v1/messages", json={**message, "stream": True}))
        seen.append(await client.post("/v1/responses", json=response))
        seen.append(await client.post("/v1/responses", json={**response, "stream": True}))

    serve(config("ok"), scenario)
    whole, streamed, whole_response, streamed_response = seen
    assert [r.headers["x-lifeline-cache"] for r in seen] == ["stale"] * 4
    assert whole.json()["content"] == [{"type": "text", "text": "Hello there"}]
    assert "event: message_stop" in streamed.text and "Hello there" in streamed.text
    output = whole_response.json()["output"]
    assert [part["text"] for item in output for part in item["content"]] == ["Hello there"]
    assert "event: response.completed" in streamed_response.text and "response.failed" not in streamed_response.text


# --- configuration and reloads ----------------------------------------------------------------------------


def test_the_config_checks_the_cache_settings() -> None:
    target = {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "ok"}

    def problem(alias: dict[str, Any]) -> str:
        with pytest.raises(ConfigError) as refused:
            parse_config({"targets": {"t": target}, "aliases": {"a": {"targets": ["t"], **alias}}}, env={})
        return str(refused.value)

    assert "response cache is for chat aliases" in problem({"kind": "embeddings", "cache": {}})
    assert "aliases.a.cache.mode" in problem({"cache": {"mode": "always"}})
    assert "aliases.a.cache.ttl" in problem({"cache": {"ttl": 0}})
    assert "aliases.a.cache.max_entries" in problem({"cache": {"max_entries": 0}})
    assert "aliases.a.cache.sharing" in problem({"cache": {"sharing": True}})  # a typo is an error


def test_a_reload_keeps_the_answers_kept_in_memory() -> None:
    cfg = config("ok", mode="hit")
    seen: list[httpx.Response] = []

    async def scenario(served: InProcess, client: httpx.AsyncClient) -> None:
        await chat(client, DETERMINISTIC)
        old = gateway(served)
        registry = ProviderRegistry()
        registry.register("openai", lambda name, target: FakeProvider(name, "down"))
        new = Gateway.build(cfg, registry)
        carry_over(old, new)
        served.app.state.gateway = new
        await new.start()
        try:
            seen.append(await chat(client, DETERMINISTIC))
        finally:
            served.app.state.gateway = old
            await new.close()

    serve(cfg, scenario)
    assert seen[0].headers["x-lifeline-cache"] == "hit"


def test_a_responses_request_to_an_alias_with_a_native_target_is_not_cached_and_a_reload_says_which() -> None:
    """A native target's answer is a Responses object, not a chat completion: its alias's Responses requests
    go past the cache. Which aliases have one is read from the config the serving gateway was built with."""
    translated = config("ok", mode="hit")
    native = translated.model_copy(
        update={"targets": {"t1": translated.targets["t1"].model_copy(update={"responses": "native"})}}
    )
    response = {"model": "chat", "input": "Say hello.", "temperature": 0, "store": False}
    seen: list[httpx.Response] = []

    async def scenario(served: InProcess, client: httpx.AsyncClient) -> None:
        for _ in range(2):
            seen.append(await client.post("/v1/responses", json=response))
        old = gateway(served)
        registry = ProviderRegistry()
        registry.register("openai", lambda name, target: FakeProvider(name, target.model))
        for cfg in (native, translated):
            new = Gateway.build(cfg, registry)
            carry_over(old, new)
            served.app.state.gateway = new
            await new.start()
            try:
                seen.append(await client.post("/v1/responses", json=response))
            finally:
                served.app.state.gateway = old
                await new.close()

    serve(translated, scenario)
    assert [r.status_code for r in seen] == [200] * 4
    assert [r.headers.get("x-lifeline-cache") for r in seen] == [None, "hit", None, "hit"]
