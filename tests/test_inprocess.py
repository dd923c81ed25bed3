"""Lifeline as a library (lifeline/inprocess.py): the official openai SDK, sync and async, whole and streamed,
talking to a gateway in this process through its transports — no gateway socket — with the fault wall as the
upstream; the gateway's whole life (startup, failover, the ledger flushed at close)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from lifeline.config import parse_config
from lifeline.errors import ModelResolutionError
from lifeline.inprocess import Lifeline
from lifeline.providers.registry import ProviderRegistry
from lifeline.testing import FaultWall
from tests.conftest import FAST_RETRY, wall_target

PROMPT = [{"role": "user", "content": "Say hello."}]


def config(wall: FaultWall, data_dir: Path, *models: str, **target: Any) -> dict[str, Any]:
    """The chat alias over wall targets serving `models` in order, with its ledger in `data_dir`."""
    targets = {f"t{i}": wall_target(wall, model, **target) for i, model in enumerate(models, 1)}
    return {
        "targets": targets,
        "aliases": {"chat": {"targets": list(targets)}},
        "retry": {**FAST_RETRY, "max_retries": 0},
        "accounting": {"data_dir": str(data_dir), "ledger": {"commit_interval": 60}},
    }


def ledger(data_dir: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(data_dir / "lifeline.db") as db:
        return db.execute("SELECT target, outcome, streamed FROM ledger ORDER BY started_at").fetchall()


def test_the_sync_sdk_fails_over_streams_and_the_ledger_is_flushed_at_close(wall: FaultWall, tmp_path: Path) -> None:
    with Lifeline.from_config(config(wall, tmp_path, "status?code=403", "ok"), env={}) as gateway:
        client = gateway.openai(max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model="chat", messages=PROMPT)
        reply = raw.parse()
        assert reply.choices[0].message.content
        assert (raw.headers["x-lifeline-target"], raw.headers["x-lifeline-attempts"]) == ("t2", "2")
        pieces = [
            chunk.choices[0].delta.content or ""
            for chunk in client.chat.completions.create(model="chat", messages=PROMPT, stream=True)
            if chunk.choices
        ]
        assert len([p for p in pieces if p]) > 1 and "".join(pieces)
        # the ledger commits every 60 s here: what is in the database now was not written by the writer yet
        assert ledger(tmp_path) == []
    assert ledger(tmp_path) == [("t2", "ok", 0), ("t2", "ok", 1)]
    assert [a.model for a in wall.attempts] == ["status?code=403", "ok", "ok"]


def test_the_async_sdk_from_the_callers_own_event_loop(wall: FaultWall, tmp_path: Path) -> None:
    async def main() -> tuple[str, list[str], str]:
        async with Lifeline.from_config(config(wall, tmp_path, "ok"), env={}) as gateway:
            client = gateway.async_openai(max_retries=0)
            whole = await client.chat.completions.create(model="chat", messages=PROMPT)
            stream = await client.chat.completions.create(
                model="chat", messages=PROMPT, stream=True, stream_options={"include_usage": True}
            )
            pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
            models = await client.models.list()
            return whole.choices[0].message.content or "", pieces, models.data[0].id

    text, pieces, model = asyncio.run(main())
    assert text and len([p for p in pieces if p]) > 1
    assert model == "chat"
    assert ledger(tmp_path) == [("t1", "ok", 0), ("t1", "ok", 1)]


def test_a_stream_the_client_stops_reading_is_a_client_that_left(wall: FaultWall, tmp_path: Path) -> None:
    # the wall sends two words, then nothing until its client leaves (the idle timeout is far away)
    spec = config(wall, tmp_path, "stall?after=2", timeouts={"idle": 60})
    with Lifeline.from_config(spec, env={}) as gateway:
        client = gateway.openai(max_retries=0)
        stream = client.chat.completions.create(model="chat", messages=PROMPT, stream=True)
        first = next(c for c in stream if c.choices and c.choices[0].delta.content)
        assert first.choices[0].delta.content
        stream.close()
    # the gateway saw its client leave: the stream is recorded as the client's choice, not a failure
    assert ledger(tmp_path) == [("t1", "client_closed", 1)]


def test_errors_come_back_as_the_sdk_raises_them(wall: FaultWall, tmp_path: Path) -> None:
    with Lifeline.from_config(config(wall, tmp_path, "ok"), env={}) as gateway:
        client = gateway.openai(max_retries=0)
        with pytest.raises(openai.NotFoundError) as caught:
            client.chat.completions.create(model="no-such-alias", messages=PROMPT)
        assert caught.value.status_code == 404
        assert gateway.http_client().get("/healthz").status_code == 200


def test_a_config_file_is_read_with_its_variables(wall: FaultWall, tmp_path: Path) -> None:
    path = tmp_path / "lifeline.yaml"
    path.write_text(
        f"targets:\n  t1: {{kind: openai, base_url: '{wall.base_url}', model: ok, api_key: '${{WALL_KEY}}'}}\n"
        f"aliases:\n  chat: {{targets: [t1]}}\naccounting: {{data_dir: '{tmp_path}'}}\n",
        encoding="utf-8",
    )
    gateway = Lifeline.from_config(path, env={"WALL_KEY": "sk-wall-key-0123456789"})
    try:
        reply = gateway.openai(max_retries=0).chat.completions.create(model="chat", messages=PROMPT)
        assert reply.choices[0].message.content
    finally:
        gateway.close()
    assert ledger(tmp_path) == [("t1", "ok", 0)]
    with pytest.raises(RuntimeError, match="closed"):
        gateway.start()


def test_requests_before_start_are_refused_plainly(wall: FaultWall, tmp_path: Path) -> None:
    gateway = Lifeline.from_config(config(wall, tmp_path, "ok"), env={})
    with pytest.raises(RuntimeError, match="not running"):
        gateway.transport().handle_request(httpx.Request("GET", "http://localhost/healthz"))
    gateway.close()  # never started: nothing to do


class _Unstartable:
    """A target that cannot start (a model that does not load, say)."""

    supports_n = True
    context_window = None

    def __init__(self, name: str, target: Any) -> None:
        self.name = name

    async def start(self) -> None:
        raise ModelResolutionError("no such model file")

    async def close(self) -> None:
        pass


def test_a_gateway_that_cannot_start_raises_as_its_startup_did(wall: FaultWall, tmp_path: Path) -> None:
    registry = ProviderRegistry()
    registry.register("openai", _Unstartable)
    gateway = Lifeline(parse_config(config(wall, tmp_path, "ok"), env={}), registry=registry)
    with pytest.raises(ModelResolutionError, match="no such model file"):
        gateway.start()
    assert not [t for t in threading.enumerate() if t.name == "lifeline-inprocess"]  # its loop is gone too
    with pytest.raises(RuntimeError, match="not running"):
        gateway.transport().handle_request(httpx.Request("GET", "http://localhost/healthz"))
