"""Capability-aware routing, alias constraints, routing policies and embeddings, through a real gateway."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from openai import OpenAI

from lifeline.config import ConfigError
from lifeline.testing import FaultWall
from lifeline.testing.gateway import RunningGateway
from tests.conftest import GatewayFactory, make_config, wall_target

MESSAGES = [{"role": "user", "content": "hello there"}]
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


def ask(gw: RunningGateway, alias: str = "chat", **extra: Any) -> httpx.Response:
    body = {"model": alias, "messages": MESSAGES, **extra}
    return httpx.post(f"{gw.base_url}/chat/completions", json=body, timeout=30)


def last_attempts(gw: RunningGateway) -> list[dict[str, Any]]:
    ledger = gw.gateway.accounting.ledger
    assert ledger is not None
    ledger.flush(10)
    rows = gw.gateway.accounting.db.query("SELECT attempts FROM ledger ORDER BY started_at DESC LIMIT 1")
    attempts: list[dict[str, Any]] = orjson.loads(rows[0][0])
    return attempts


@pytest.mark.parametrize(
    ("capabilities", "request_extra", "reason"),
    [
        ({"tools": False}, {"tools": TOOLS}, "no tool calls"),
        (
            {"json_schema": False},
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}},
            "no json_schema response format",
        ),
        (
            {"vision": False},
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,x"}}]}]},
            "no image input",
        ),
    ],
)
def test_a_target_that_cannot_serve_the_request_is_skipped_with_the_reason(
    wall: FaultWall, gateway: GatewayFactory, capabilities: dict[str, bool], request_extra: dict[str, Any], reason: str
) -> None:
    config = make_config(
        {"limited": wall_target(wall, "ok?t=limited", capabilities=capabilities), "able": wall_target(wall, "ok")}
    )
    with gateway(config) as gw:
        response = ask(gw, **request_extra)
        plain = ask(gw)
        attempts = last_attempts(gw)
    assert response.status_code == 200
    assert response.headers["x-lifeline-target"] == "able"
    assert response.headers["x-lifeline-attempts"] == "1"  # a skip is not an attempt
    assert len(wall.attempts_for("ok?t=limited")) == 1  # only the plain request reached it
    assert plain.headers["x-lifeline-target"] == "limited"
    assert attempts == [{"target": "limited", "outcome": "ok", "status": 200, "latency": attempts[0]["latency"]}]


def test_the_skip_reason_is_in_the_attempt_log(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config({"small": wall_target(wall, "ok?t=small", context_window=10), "big": wall_target(wall, "ok")})
    with gateway(config) as gw:
        response = ask(gw, max_tokens=100)
        attempts = last_attempts(gw)
    assert response.headers["x-lifeline-target"] == "big"
    assert attempts[0]["target"] == "small"
    assert attempts[0]["outcome"].startswith("skipped: context window 10")


def test_no_capable_target_is_a_clear_400(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config({"a": wall_target(wall, "ok", capabilities={"tools": False})})
    with gateway(config) as gw:
        response = ask(gw, tools=TOOLS)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unsupported_capability"
    assert "a: no tool calls" in response.json()["error"]["message"]
    assert wall.attempts == []


def test_constraints_exclude_targets_at_load(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config(
        {
            "closed": wall_target(wall, "ok?t=closed", meta={"open_weights": False, "country": "US"}),
            "open-cn": wall_target(wall, "ok?t=cn", meta={"open_weights": True, "licence": "mit", "country": "CN"}),
            "open-fr": wall_target(
                wall, "ok?t=fr", meta={"open_weights": True, "licence": "apache-2.0", "country": "FR"}
            ),
        },
        aliases={
            "open": {"targets": ["closed", "open-cn", "open-fr"], "constraints": {"open_weights_only": True}},
            "apache": {"targets": ["closed", "open-cn", "open-fr"], "constraints": {"licences": ["Apache-2.0"]}},
            "not-cn": {"targets": ["open-cn", "open-fr"], "constraints": {"countries_deny": ["cn"]}},
        },
    )
    with gateway(config) as gw:
        assert ask(gw, "open").headers["x-lifeline-target"] == "open-cn"
        assert ask(gw, "apache").headers["x-lifeline-target"] == "open-fr"
        assert ask(gw, "not-cn").headers["x-lifeline-target"] == "open-fr"
    assert wall.attempts_for("ok?t=closed") == []


def test_constraints_that_exclude_every_target_are_a_load_error(wall: FaultWall) -> None:
    with pytest.raises(ConfigError, match="constraints exclude every target"):
        make_config(
            {"closed": wall_target(wall, "ok", meta={"open_weights": False})},
            aliases={"chat": {"targets": ["closed"], "constraints": {"open_weights_only": True}}},
        )


def test_weighted_policy(wall: FaultWall, gateway: GatewayFactory) -> None:
    targets = {"a": wall_target(wall, "ok?t=a"), "b": wall_target(wall, "ok?t=b"), "c": wall_target(wall, "ok?t=c")}
    config = make_config(
        targets,
        aliases={
            "never-a": {"targets": ["a", "b"], "policy": "weighted", "weights": {"a": 0, "b": 1}},
            "spread": {"targets": ["a", "b", "c"], "policy": "weighted", "weights": {"a": 1, "b": 1, "c": 1}},
        },
    )
    with gateway(config) as gw:
        never = Counter(ask(gw, "never-a").headers["x-lifeline-target"] for _ in range(10))
        spread = Counter(ask(gw, "spread").headers["x-lifeline-target"] for _ in range(60))
    assert never == {"b": 10}
    assert set(spread) == {"a", "b", "c"}
    assert all(count >= 5 for count in spread.values())


def test_cost_policy_prefers_the_cheapest(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config(
        {
            "dear": wall_target(wall, "ok?t=dear", price={"input": 5, "output": 15}),
            "cheap": wall_target(wall, "status?code=503", price={"input": 0.1, "output": 0.2}),
            "unpriced": wall_target(wall, "ok?t=unpriced"),
        },
        aliases={"chat": {"targets": ["dear", "cheap", "unpriced"], "policy": "cost"}},
        retry={"max_retries": 0},
    )
    with gateway(config) as gw:
        response = ask(gw)
    # cheapest first; when it fails, the next cheapest; unknown prices last
    assert response.headers["x-lifeline-target"] == "dear"
    assert [a.model for a in wall.attempts] == ["status?code=503", "ok?t=dear"]


def test_latency_policy_learns_the_faster_target(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config(
        {"slow": wall_target(wall, "ok?latency_ms=150"), "fast": wall_target(wall, "ok?latency_ms=5")},
        aliases={"chat": {"targets": ["slow", "fast"], "policy": "latency"}},
    )
    with gateway(config) as gw:
        first = [ask(gw).headers["x-lifeline-target"] for _ in range(2)]  # each measured once
        later = [ask(gw).headers["x-lifeline-target"] for _ in range(4)]
        circuits = httpx.get(f"{gw.url}/admin/targets").json()["targets"]
    assert sorted(first) == ["fast", "slow"]
    assert later == ["fast"] * 4
    ewma = {c["target"]: c["latency_ewma_seconds"] for c in circuits}
    assert ewma["fast"] < ewma["slow"]


def embeddings_config(wall: FaultWall, tmp_path: Path, **aliases: Any) -> Any:
    return make_config(
        {
            "primary": wall_target(wall, "status?code=503", embedding_space="text-embedding-3-small"),
            "backup": wall_target(
                wall, "ok?served_model=text-embedding-3-small", embedding_space="text-embedding-3-small"
            ),
            "chatty": wall_target(wall, "ok"),
        },
        aliases=aliases or {"embed": {"kind": "embeddings", "targets": ["primary", "backup"]}, "chat": ["chatty"]},
        retry={"max_retries": 0},
        accounting={"data_dir": str(tmp_path)},
    )


def test_embeddings_fail_over_within_one_embedding_space(
    wall: FaultWall, gateway: GatewayFactory, tmp_path: Path
) -> None:
    with gateway(embeddings_config(wall, tmp_path)) as gw:
        client = OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        raw = client.embeddings.with_raw_response.create(model="embed", input=["hello world", "bye"])
        result = raw.parse()
        wrong_kind = httpx.post(f"{gw.base_url}/embeddings", json={"model": "chat", "input": "x"})
        chat_on_embed = ask(gw, "embed")
        bad_input = httpx.post(f"{gw.base_url}/embeddings", json={"model": "embed", "input": []})
    assert raw.headers["x-lifeline-target"] == "backup"
    assert len(result.data) == 2 and len(result.data[0].embedding) == 8
    assert result.model == "text-embedding-3-small"
    assert result.usage.prompt_tokens == 3
    assert wrong_kind.status_code == 400 and wrong_kind.json()["error"]["code"] == "wrong_model_kind"
    assert chat_on_embed.status_code == 400 and chat_on_embed.json()["error"]["param"] == "model"
    assert bad_input.status_code == 400 and bad_input.json()["error"]["param"] == "input"


def test_mixing_embedding_models_is_a_load_error(wall: FaultWall) -> None:
    with pytest.raises(ConfigError, match="mixes embedding models"):
        make_config(
            {"a": wall_target(wall, "text-embedding-3-small"), "b": wall_target(wall, "bge-m3")},
            aliases={"embed": {"kind": "embeddings", "targets": ["a", "b"]}},
        )
    with pytest.raises(ConfigError, match="cannot embed"):
        make_config({"local": {"kind": "llamacpp"}}, aliases={"embed": {"kind": "embeddings", "targets": ["local"]}})


@pytest.mark.embedded
def test_local_embeddings_from_the_shipped_model(gateway: GatewayFactory, tmp_path: Path) -> None:
    config = make_config(
        {"local-embed": {"kind": "llamacpp", "model": "builtin:smollm2", "embedding": True, "n_ctx": 512}},
        aliases={"embed": {"kind": "embeddings", "targets": ["local-embed"]}},
        accounting={"data_dir": str(tmp_path)},
    )
    with gateway(config) as gw:
        client = OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        as_base64 = client.embeddings.create(model="embed", input=["the cat sat", "the cat sat", "stock prices"])
        as_floats = client.embeddings.create(model="embed", input="the cat sat", encoding_format="float")
    vectors = [d.embedding for d in as_base64.data]
    assert len(vectors) == 3 and len(vectors[0]) == 576
    assert vectors[0] == vectors[1] and vectors[0] != vectors[2]
    assert as_floats.data[0].embedding == pytest.approx(vectors[0], rel=1e-5)
    assert as_base64.model == "smollm2-135m-instruct"
    assert as_base64.usage.prompt_tokens > 0


def test_readiness_counts_only_the_targets_constraints_allow(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config(
        {
            "closed": wall_target(wall, "ok?t=closed", meta={"open_weights": False}),
            "open": wall_target(wall, "status?code=401", meta={"open_weights": True}),
        },
        aliases={"open-only": {"targets": ["closed", "open"], "constraints": {"open_weights_only": True}}},
    )
    with gateway(config) as gw:
        assert httpx.get(f"{gw.url}/readyz").status_code == 200
        assert ask(gw, "open-only").status_code == 502  # the only allowed target is cut off
        ready = httpx.get(f"{gw.url}/readyz")
    # the excluded (healthy) target does not make the alias look ready
    assert ready.status_code == 503 and ready.json()["aliases"] == ["open-only"]
