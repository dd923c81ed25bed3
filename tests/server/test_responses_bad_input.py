"""Bad input on /v1/responses in process, beyond the shapes tests/server/test_responses.py lists: every wrong
shape of `input` and of its items, built-in tools (refused on a translated target), wrong `text.format`,
tool fields of the wrong type, and a `previous_response_id` that is unknown, empty or another key's — each
a 400 or 404 in the OpenAI envelope naming the parameter, never a 500, and no target called."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from lifeline.config import parse_config
from tests.server.fakes import in_process, make_config

MASTER = "mk-test-master-key-0123456789"

BAD: list[tuple[dict[str, Any], int, str, str]] = [
    # input: neither a string nor a list of items
    ({"input": 3.5}, 400, "input", "invalid_type"),
    ({"input": True}, 400, "input", "invalid_type"),
    ({"input": {"type": "message", "role": "user", "content": "hi"}}, 400, "input", "invalid_type"),
    # items that are not objects
    ({"input": [1]}, 400, "input[0]", "invalid_type"),
    ({"input": ["hi", None]}, 400, "input[0]", "invalid_type"),
    ({"input": [{"role": "user", "content": "hi"}, []]}, 400, "input[1]", "invalid_type"),
    # items missing their type, role or content
    ({"input": [{"type": None, "role": "user", "content": "x"}]}, 400, "input[0].type", "missing_required_parameter"),
    ({"input": [{"type": "message", "content": "x"}]}, 400, "input[0].role", "invalid_value"),
    ({"input": [{"role": 5, "content": "x"}]}, 400, "input[0].role", "invalid_value"),
    ({"input": [{"role": "user"}]}, 400, "input[0].content", "invalid_type"),
    ({"input": [{"role": "user", "content": None}]}, 400, "input[0].content", "invalid_type"),
    ({"input": [{"role": "user", "content": [{"text": "x"}]}]}, 400, "input[0].content[0].type", "invalid_value"),
    (
        {"input": [{"role": "user", "content": [{"type": "input_text"}]}]},
        400,
        "input[0].content[0].text",
        "invalid_type",
    ),
    (
        {"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}]},
        400,
        "input[0].arguments",
        "invalid_type",
    ),
    (
        {"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}", "id": 5}]},
        400,
        "input[0].id",
        "invalid_type",
    ),
    (
        {"input": [{"type": "function_call_output", "call_id": 5, "output": "x"}]},
        400,
        "input[0].call_id",
        "invalid_type",
    ),
    (
        {"input": [{"type": "function_call_output", "call_id": "c", "output": {"a": 1}}]},
        400,
        "input[0].output",
        "invalid_type",
    ),
    # unknown item types (and those of OpenAI's own tools)
    ({"input": [{"type": 5}]}, 400, "input[0].type", "invalid_value"),
    ({"input": [{"type": "unknown_thing"}]}, 400, "input[0].type", "invalid_value"),
    ({"input": [{"type": "computer_call_output", "call_id": "c"}]}, 400, "input[0].type", "invalid_value"),
    ({"input": [{"type": "mcp_call", "id": "m"}]}, 400, "input[0].type", "invalid_value"),
    # built-in tools on a translated target
    ({"input": "x", "tools": [{"type": "web_search_preview"}]}, 400, "tools[0].type", "unsupported_tool"),
    ({"input": "x", "tools": [{"type": "image_generation"}]}, 400, "tools[0].type", "unsupported_tool"),
    ({"input": "x", "tools": [{"type": "mcp", "server_label": "s"}]}, 400, "tools[0].type", "unsupported_tool"),
    (
        {"input": "x", "tools": [{"type": "function", "name": "f"}, {"type": "local_shell"}]},
        400,
        "tools[1].type",
        "unsupported_tool",
    ),
    ({"input": "x", "tools": [{}]}, 400, "tools[0].type", "invalid_value"),
    (
        {"input": "x", "tools": [{"type": "function", "name": "f", "description": 5}]},
        400,
        "tools[0].description",
        "invalid_type",
    ),
    (
        {"input": "x", "tools": [{"type": "function", "name": "f", "strict": "yes"}]},
        400,
        "tools[0].strict",
        "invalid_type",
    ),
    # wrong text.format
    ({"input": "x", "text": 5}, 400, "text", "invalid_type"),
    ({"input": "x", "text": {"format": "json"}}, 400, "text.format", "invalid_type"),
    ({"input": "x", "text": {"format": {}}}, 400, "text.format.type", "invalid_value"),
    (
        {"input": "x", "text": {"format": {"type": "json_schema", "name": "a", "schema": []}}},
        400,
        "text.format.schema",
        "invalid_type",
    ),
    (
        {"input": "x", "text": {"format": {"type": "json_schema", "name": "a", "schema": {}, "strict": "yes"}}},
        400,
        "text.format.strict",
        "invalid_type",
    ),
    # previous_response_id
    ({"input": "x", "previous_response_id": 5}, 400, "previous_response_id", "invalid_type"),
    ({"input": "x", "previous_response_id": ""}, 400, "previous_response_id", "invalid_value"),
    ({"input": "x", "previous_response_id": "resp_unknown"}, 404, "previous_response_id", "response_not_found"),
]


@pytest.mark.parametrize(("body", "status", "param", "code"), BAD)
def test_each_bad_input_is_a_clear_error_in_the_openai_envelope(
    body: dict[str, Any], status: int, param: str, code: str
) -> None:
    async def main() -> list[httpx.Response]:
        async with in_process(make_config("ok")) as served, served.client() as client:
            whole = await client.post("/v1/responses", json={"model": "chat", **body})
            streamed = await client.post("/v1/responses", json={"model": "chat", "stream": True, **body})
            assert not served.providers["t1"].called.is_set() and served.finishes == []
            return [whole, streamed]

    for response in asyncio.run(main()):
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert (error["param"], error["code"]) == (param, code)
        assert error["type"] == "invalid_request_error"
        assert param in error["message"] if status == 400 else body["previous_response_id"] in error["message"]


def test_another_keys_previous_response_is_not_found(tmp_path: Path) -> None:
    targets = {"t1": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "ok"}}
    config = parse_config(
        {
            "targets": targets,
            "aliases": {"chat": {"targets": ["t1"]}},
            "auth": {"enabled": True},
            "admin": {"master_key": MASTER},
            "accounting": {"data_dir": str(tmp_path)},
        },
        env={},
    )

    async def main() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        async with in_process(config) as served, served.client() as client:
            master = {"authorization": f"Bearer {MASTER}"}

            async def key(name: str) -> dict[str, str]:
                made = await client.post("/admin/keys", json={"name": name}, headers=master)
                return {"authorization": f"Bearer {made.json()['secret']}"}

            owner, other = await key("a"), await key("b")
            made = (await client.post("/v1/responses", json={"model": "chat", "input": "Hi"}, headers=owner)).json()
            body = {"model": "chat", "input": "More.", "previous_response_id": made["id"]}
            theirs = await client.post("/v1/responses", json=body, headers=other)
            items = await client.get(f"/v1/responses/{made['id']}/input_items", headers=other)
            mine = await client.post("/v1/responses", json=body, headers=owner)
            return theirs, items, mine

    theirs, items, mine = asyncio.run(main())
    assert theirs.status_code == 404
    assert (theirs.json()["error"]["param"], theirs.json()["error"]["code"]) == (
        "previous_response_id",
        "response_not_found",
    )
    assert items.status_code == 404 and mine.status_code == 200
