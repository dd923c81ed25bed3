"""GET /v1/responses/{id}/input_items in process: the stored conversation a response answered (earlier turns
from previous_response_id included), as the Responses API's items with stable ids, paged by limit, order and
after; a wrong query is a 400 naming the parameter, an unknown id a 404."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.server.fakes import in_process, make_config

WEATHER = {"type": "function", "name": "weather", "parameters": {"type": "object", "properties": {}}}
INPUT: list[dict[str, Any]] = [
    {"role": "developer", "content": "Be brief."},
    {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
    {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{}"},
    {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
]


def listing(*queries: str, store: bool = True) -> tuple[str, list[httpx.Response]]:
    """A response made from INPUT and continued once with "Thanks."; the listings of the second's items
    (`{n}` in a query: the id of its n-th item, oldest first)."""

    async def main() -> tuple[str, list[httpx.Response]]:
        async with in_process(make_config("ok")) as served, served.client() as client:
            first = await client.post("/v1/responses", json={"model": "chat", "input": INPUT, "tools": [WEATHER]})
            body = {"model": "chat", "input": "Thanks.", "previous_response_id": first.json()["id"], "store": store}
            second = (await client.post("/v1/responses", json=body)).json()["id"]
            url = f"/v1/responses/{second}/input_items"
            listed = await client.get(url, params={"order": "asc"})
            ids = [item["id"] for item in listed.json()["data"]] if listed.status_code == 200 else []
            return second, [await client.get(url + q.format(*ids)) for q in queries]

    return asyncio.run(main())


def test_the_items_are_the_whole_conversation_newest_first_with_stable_ids() -> None:
    _, (desc, again, asc) = listing("", "", "?order=asc")
    assert desc.status_code == 200, desc.text
    body = desc.json()
    assert body["object"] == "list" and body["has_more"] is False
    items = asc.json()["data"]
    assert items == list(reversed(body["data"])) and again.json() == body
    assert [(i["type"], i.get("role")) for i in items] == [
        ("message", "developer"),
        ("message", "user"),
        ("function_call", None),
        ("function_call_output", None),
        ("message", "assistant"),  # the first response's answer
        ("message", "user"),
    ]
    assert items[0]["content"] == [{"type": "input_text", "text": "Be brief."}]
    assert items[2] | {"id": ""} == {
        "id": "",
        "type": "function_call",
        "status": "completed",
        "call_id": "call_1",
        "name": "weather",
        "arguments": "{}",
    }
    assert (items[3]["call_id"], items[3]["output"]) == ("call_1", "sunny")
    assert items[4]["content"] == [{"type": "output_text", "text": "Hello there", "annotations": []}]
    assert items[5]["content"] == [{"type": "input_text", "text": "Thanks."}]
    ids = [i["id"] for i in items]
    assert len(set(ids)) == 6 and ids[0].startswith("msg_") and ids[2].startswith("fc_") and ids[3].startswith("fco_")
    assert (body["first_id"], body["last_id"]) == (ids[-1], ids[0])


def test_pages_follow_limit_and_after() -> None:
    queries = ("?order=asc", "?order=asc&limit=4", "?order=asc&after={3}", "?order=asc&after={0}&limit=2", "?after={2}")
    _, (whole, first, tail, middle, back) = listing(*queries)
    ids = [i["id"] for i in whole.json()["data"]]

    def page_ids(response: httpx.Response) -> tuple[list[str], bool]:
        return [i["id"] for i in response.json()["data"]], response.json()["has_more"]

    assert page_ids(first) == (ids[:4], True) and first.json()["last_id"] == ids[3]
    assert page_ids(tail) == (ids[4:], False)
    assert page_ids(middle) == (ids[1:3], True)
    assert page_ids(back) == (ids[1::-1], False)  # newest first: after the third item come the second, the first


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("?limit=0", "limit"),
        ("?limit=101", "limit"),
        ("?limit=ten", "limit"),
        ("?order=up", "order"),
        ("?after=x", "after"),
    ],
)
def test_a_wrong_query_is_a_400_naming_the_parameter(query: str, param: str) -> None:
    _, (response,) = listing(query)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"], error["type"]) == (param, "invalid_value", "invalid_request_error")


def test_an_unknown_or_unstored_response_is_a_404() -> None:
    async def main() -> httpx.Response:
        async with in_process(make_config("ok")) as served, served.client() as client:
            return await client.get("/v1/responses/resp_nope/input_items")

    response = asyncio.run(main())
    assert response.status_code == 404 and response.json()["error"]["code"] == "response_not_found"
    second, (unstored,) = listing("", store=False)
    assert unstored.status_code == 404 and second in unstored.json()["error"]["message"]
