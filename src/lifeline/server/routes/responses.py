"""/v1/responses: OpenAI's Responses API in front of the same exchange as chat completions.

POST validates the body as a Responses request and translates it once into a chat body
(protocol/responses.py) — after the stored conversation when it names a `previous_response_id` — so it is
admitted, routed (with failover and continuation over any chat target) and accounted exactly once as on
/v1/chat/completions (server/exchange.py). Beside it goes the body for targets that speak the Responses API
natively (`native_body`), which they are sent instead. The answer is translated back — a `response` object,
or the Responses event stream (server/sse.py) — or, from a native target, passed through under Lifeline's
response id (protocol/native_responses.py). Unless `store` is false, the response is kept in the accounting
database for its key (accounting/responses.py: by default batched with an in-memory read-through on SQLite,
so storing costs the request no thread hand-off, and written through a thread on PostgreSQL); GET and DELETE
/v1/responses/{id} read and remove it, and GET /v1/responses/{id}/input_items lists the conversation it
answered (protocol/response_items.py).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from lifeline.accounting.keys import VirtualKey
from lifeline.accounting.responses import StoredResponses
from lifeline.attempts import Outcome
from lifeline.errors import InvalidRequest, ResponseNotFound
from lifeline.protocol.native_responses import NativeStream, native_response
from lifeline.protocol.parse import validate_chat_request
from lifeline.protocol.response_items import input_item_list, list_query
from lifeline.protocol.response_objects import ResponseStream, Shell, output_as_input, to_response
from lifeline.protocol.responses import BUILT_IN_TOOLS, native_body, to_chat_body, validate_request
from lifeline.providers.openai_responses import FINISHED
from lifeline.routing.streaming import Content, End, StreamEvent
from lifeline.server.exchange import Exchange, Stream, wants_cost
from lifeline.server.gateway import gateway_of
from lifeline.server.sse import EitherResponsesEncoder, ResponsesEncoder, event_stream, is_native_event

log = logging.getLogger("lifeline.server")

Save = Callable[[dict[str, Any]], Awaitable[None]]


def owner(key: VirtualKey | None) -> str:
    """Whose a stored response is: its key's id, or '' when auth is off."""
    return key.id if key is not None else ""


async def create_response(request: Request) -> Response:
    exchange = await Exchange.begin(request, request.headers.get("authorization"))
    parsed = validate_request(exchange.body)
    store = exchange.gateway.accounting.responses
    key_id = owner(exchange.key)
    history: list[dict[str, Any]] = []
    if parsed.previous_response_id is not None:
        previous = await store.load(parsed.previous_response_id, key_id)
        if previous is None:
            raise ResponseNotFound(
                f"Previous response with id '{parsed.previous_response_id}' not found.", param="previous_response_id"
            )
        history = previous.input + output_as_input(previous.response.get("output") or [])
    _check_builtin_tools(exchange, parsed.model)
    data = to_chat_body(parsed, history)
    result = await exchange.chat(data, validate_chat_request(data), native_body(exchange.body, history))
    conversation = history + parsed.items

    async def save(response: dict[str, Any]) -> None:
        if parsed.store:
            await _save(store, key_id, conversation, response)

    shell = Shell.of(parsed, result.model)
    if isinstance(result, Stream):
        translator = ResponseStream(shell)
        events = _storing(result.events, translator, shell, save)
        cost = result.cost if wants_cost(request) else None
        encoder = EitherResponsesEncoder(ResponsesEncoder(translator, cost), NativeStream(shell))
        return event_stream(events, encoder, result.headers)
    if result.body.get("object") == "response":  # a native target's own response object
        response = native_response(result.body, shell)
    else:
        response = to_response(shell, result.body, result.usage)
    if result.usage_estimated:
        response["x_lifeline"] = {"usage_estimated": True}
    await save(response)
    if wants_cost(request):  # in the answer only, not in the stored response
        response = {**response, "usage": {**response["usage"], "cost": result.cost_nusd / 1e9}}
    return Response(orjson.dumps(response), media_type="application/json", headers=result.headers)


def _check_builtin_tools(exchange: Exchange, model: str) -> None:
    """A built-in tool (web_search …) no target of the alias runs is a 400 before anything is admitted: only
    native Responses targets that list it (responses_tools) can. (With a mixed chain the router skips the
    others, each skip recorded.)"""
    tools = exchange.body.get("tools") or []
    router = exchange.gateway.router
    router.alias(model, "chat")  # an unknown alias is a 404 first
    runs = [router.abilities[t].builtin_tools for t in router.permitted.get(model, [])]
    for i, tool in enumerate(tools):
        kind = tool.get("type")
        if kind in BUILT_IN_TOOLS and not any(kind in tools_run for tools_run in runs):
            raise InvalidRequest(
                f"Unsupported tool: 'tools[{i}].type' is {kind!r}, a built-in tool of OpenAI's Responses API. No "
                f"target of '{model}' runs it: only targets that pass the Responses API through natively and "
                "list it in responses_tools can; over chat targets only function tools are supported.",
                param=f"tools[{i}].type",
                code="unsupported_tool",
            )


async def _save(
    store: StoredResponses, key_id: str, conversation: list[dict[str, Any]], response: dict[str, Any]
) -> None:
    """Keep a response. The answer has been paid for: a database that fails now costs the client the stored
    copy (logged), not the answer."""
    stored = {k: v for k, v in response.items() if k != "x_lifeline"}
    try:
        await store.save(key_id, conversation, stored)
    except Exception as exc:
        log.warning("could not store response %s: %s", response["id"], type(exc).__name__)


async def _storing(
    events: AsyncGenerator[StreamEvent, None], translator: ResponseStream, shell: Shell, save: Save
) -> AsyncGenerator[StreamEvent, None]:
    """The stream's events; a complete answer is stored before response.completed goes out, so that a client
    that continues from it at once finds it (a native target's own response.completed, or the end of a
    translated answer)."""
    native = False
    async with contextlib.aclosing(events):
        async for event in events:
            if isinstance(event, Content) and is_native_event(event.data):
                native = True
                if event.data["type"] in FINISHED and isinstance(event.data.get("response"), dict):
                    await save(native_response(event.data["response"], shell))
            elif isinstance(event, End) and event.outcome is Outcome.OK and not native:
                await save(translator.finalize(event.usage, event.usage_estimated))
            yield event


async def _stored(request: Request) -> tuple[StoredResponses, str, str]:
    accounting = gateway_of(request).accounting
    key = accounting.authenticate(request.headers.get("authorization"))
    return accounting.responses, owner(key), request.path_params["response_id"]


async def get_response(request: Request) -> Response:
    store, key_id, response_id = await _stored(request)
    stored = await store.load(response_id, key_id)
    if stored is None:
        raise ResponseNotFound(f"Response with id '{response_id}' not found.")
    return Response(orjson.dumps(stored.response), media_type="application/json")


async def list_input_items(request: Request) -> Response:
    """GET /v1/responses/{id}/input_items: the stored conversation the response answered, a page at a time."""
    store, key_id, response_id = await _stored(request)
    query = list_query(request.query_params)
    stored = await store.load(response_id, key_id)
    if stored is None:
        raise ResponseNotFound(f"Response with id '{response_id}' not found.")
    return Response(orjson.dumps(input_item_list(response_id, stored.input, query)), media_type="application/json")


async def delete_response(request: Request) -> Response:
    store, key_id, response_id = await _stored(request)
    if not await store.delete(response_id, key_id):
        raise ResponseNotFound(f"Response with id '{response_id}' not found.")
    body = {"id": response_id, "object": "response.deleted", "deleted": True}
    return Response(orjson.dumps(body), media_type="application/json")
