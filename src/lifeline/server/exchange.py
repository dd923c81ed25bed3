"""One model request's life, owned in one place for /v1/chat/completions, /v1/messages and /v1/embeddings.

`Exchange.begin` authenticates the caller and reads the body within the request's deadline; the route
parses it and calls `chat` or `embed`, which admit the request, route it (cancelled if the client leaves),
relay a stream, and account it exactly once — whatever happened: an answer, an error, a client that left,
a stream that broke. What comes back is an `Answer` (accounted already) or a `Stream` of typed events
(accounted when it ends), for the route to render in its own wire format.

A request may name further aliases to try when its own cannot answer (OpenRouter's `models`, LiteLLM's
`fallbacks`): `begin` takes them off the body (protocol/fallbacks.py); each must be a known alias of the right
kind that the key may use, or the request is refused before anything is sent.

An alias with a response cache (accounting/cache.py) may answer a chat request from it: a deterministic repeat
before any target is asked (`x-lifeline-cache: hit`), or the last good answer when every target failed
(`x-lifeline-cache: stale`); an answer that ended normally is kept for next time.

A chat request chosen for capture at admission hands its answer to `finish` (a stream's assembled from the
chunks the client received); one chosen for shadowing starts its shadow calls once the response has been
sent (server/shadow.py, through the after-response hook of server/middleware.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.requests import Request

from lifeline.accounting.cache import Cached, Lookup
from lifeline.accounting.captures import Plan
from lifeline.accounting.keys import VirtualKey
from lifeline.accounting.service import Admission, Finish
from lifeline.attempts import AttemptLog, CacheUse, Outcome
from lifeline.errors import InvalidRequest, LifelineError, PermissionDenied
from lifeline.protocol.assemble import Assembler
from lifeline.protocol.chat import ChatCompletionRequest
from lifeline.protocol.embeddings import EmbeddingRequest
from lifeline.protocol.fallbacks import NO_FALLBACKS, take_fallbacks
from lifeline.protocol.parse import parse_json_object
from lifeline.protocol.usage import estimate_usage, reply_usage
from lifeline.providers.base import ChatCall, Completion, Deadline, EmbeddingCall, TokenCounter
from lifeline.routing.cached import replay
from lifeline.routing.router import OpenStream, Routed
from lifeline.routing.streaming import Content, End, StreamEvent, relay
from lifeline.server.body import read_body
from lifeline.server.direct import CYCLE, DirectCycle
from lifeline.server.gateway import Gateway, gateway_of
from lifeline.server.middleware import after_response

T = TypeVar("T")

log = logging.getLogger("lifeline.server")


@dataclass(slots=True)
class Answer:
    """A whole answer, accounted: the upstream's body, its usage (estimated when the upstream reported none)
    and the headers that say who answered."""

    body: dict[str, Any]
    model: str
    usage: dict[str, Any]
    usage_estimated: bool
    headers: dict[str, str]
    #: what the answer cost, in nano-USD
    cost_nusd: int = 0


@dataclass(slots=True)
class TokenCount:
    """A request's prompt tokens: counted by the target a request would try first, or estimated."""

    tokens: int
    estimated: bool
    headers: dict[str, str]


@dataclass(slots=True)
class Stream:
    """An answer under way: its events, accounted once when they end, however they end. `model` is the one its
    first chunks name (else the target's)."""

    model: str
    events: AsyncGenerator[StreamEvent, None]
    headers: dict[str, str]
    #: what the answer that ended as `End` costs, in nano-USD, as the ledger will record it
    cost: Callable[[End], int] = lambda end: 0


class Exchange:
    def __init__(
        self, request: Request, gateway: Gateway, key: VirtualKey | None, deadline: Deadline, body: dict[str, Any]
    ) -> None:
        self.request = request
        self.gateway = gateway
        self.key = key
        self.deadline = deadline
        #: the client's JSON body, parsed once
        self.body = body
        self.request_id: str = request.state.request_id
        #: the further aliases the body named (taken off it by `begin`)
        self.fallbacks = NO_FALLBACKS

    @classmethod
    async def begin(cls, request: Request, authorization: str | None) -> Exchange:
        """Authenticate `authorization`, then read the body (under its limit, within the request's deadline)
        as a JSON object."""
        gateway = gateway_of(request)
        settings = gateway.config.server
        key = gateway.accounting.authenticate(authorization)
        deadline = request_deadline(request, settings.request_timeout)
        body = parse_json_object(await read_body(request, settings.max_body_bytes, deadline))
        exchange = cls(request, gateway, key, deadline, body)
        exchange.fallbacks = take_fallbacks(body)  # before the body is validated: never passed upstream
        return exchange

    async def chat(
        self, data: dict[str, Any], chat: ChatCompletionRequest, responses: dict[str, Any] | None = None
    ) -> Answer | Stream:
        """A chat request (`data`, validated as `chat`): a whole answer, or a stream when it asked for one.
        `responses`: a /v1/responses request's body for native Responses targets (`data` is its translation)."""
        router = self.gateway.router
        router.alias(chat.model, "chat")  # an unknown alias is a 404 before anything else
        fallbacks = self._fallbacks("chat")
        call = ChatCall(
            body=data, request=chat, request_id=self.request_id, deadline=self.deadline, responses=responses
        )
        admission = await self.gateway.accounting.admit(
            self.key, chat.model, data, chat.token_limit, self.request_id, fallbacks=fallbacks
        )
        # A native Responses target's answer is not a chat completion: a Responses request to an alias with
        # one is not cached.
        native = responses is not None and not router.native_responses.isdisjoint((chat.model, *fallbacks))
        cache = None if native else self.gateway.accounting.cache.lookup(chat.model, self.key, data, chat)
        if cache is not None and (hit := await cache.hit()) is not None:
            return await self._cached(admission, hit, chat, CacheUse.HIT, AttemptLog())
        plan = admission.capture
        if plan is not None and plan.shadow:
            after_response(self.request, self._shadow(plan))
        try:
            if chat.stream:
                opening = router.open_stream(chat.model, call, fallbacks)
                routed = await self._routed(admission, opening, streamed=True, cache=cache)
                return self._stream(admission, routed, call, cache)
            done = await self._routed(
                admission, router.complete(chat.model, call, fallbacks), streamed=False, cache=cache
            )
            return await self._answer(admission, done, data, embedding=False, cache=cache)
        except LifelineError as exc:
            if cache is None or cache.stale is None:
                raise
            return await self._cached(admission, cache.stale, chat, CacheUse.STALE, exc.attempts)

    async def embed(self, embedding: EmbeddingRequest) -> Answer:
        """The embeddings request the body holds (validated as `embedding`)."""
        router, data = self.gateway.router, self.body
        router.alias(embedding.model, "embeddings")
        fallbacks = self._fallbacks("embeddings")
        # The body as it is: the reservation counts text inputs from above and token-id inputs exactly.
        admission = await self.gateway.accounting.admit(
            self.key, embedding.model, data, 1, self.request_id, "embeddings", fallbacks
        )
        call = EmbeddingCall(body=data, request_id=self.request_id, deadline=self.deadline)
        done = await self._routed(admission, router.embed(embedding.model, call, fallbacks), streamed=False)
        return await self._answer(admission, done, data, embedding=True)

    def _fallbacks(self, kind: str) -> tuple[str, ...]:
        """The body's fallback aliases: each known, of `kind`, and one the key may use — a forbidden one is
        refused (403), not skipped, so that a client learns at once that its safety net is not there."""
        names = self.gateway.router.fallbacks(self.fallbacks, kind)
        for name in names:
            if self.key is not None and not self.key.may_use(name):
                raise PermissionDenied(
                    f"This key may not use the model '{name}' (named in '{self.fallbacks.field}').",
                    param=self.fallbacks.field,
                )
        return names

    async def count_tokens(self, data: dict[str, Any], chat: ChatCompletionRequest) -> TokenCount:
        """The prompt tokens of a chat request (`data`, validated as `chat`), generating nothing: counted by
        the target the alias would try first when it can count (Anthropic's endpoint, the embedded model's
        tokenizer), else estimated. Not admitted against budgets or rate limits and not in the ledger; a
        target that fails to count leaves the estimate."""
        router = self.gateway.router
        router.alias(chat.model, "chat")
        self.gateway.accounting.permit(self.key, chat.model)
        call = ChatCall(body=data, request=chat, request_id=self.request_id, deadline=self.deadline)
        target = router.first_choice(chat.model, call)
        provider = self.gateway.providers.get(target) if target is not None else None
        if target is not None and isinstance(provider, TokenCounter):
            try:
                tokens = await until_disconnect(self.request, provider.count_tokens(call))
            except Exception as exc:
                if isinstance(exc, LifelineError) and exc.status == 499:
                    raise  # the client left
                log.warning("target %s could not count tokens (%s); estimating", target, type(exc).__name__)
            else:
                return TokenCount(tokens, False, {"x-lifeline-target": target})
        return TokenCount(estimate_usage(data, 0)["prompt_tokens"], True, {"x-lifeline-estimate": "true"})

    def _shadow(self, plan: Plan) -> Callable[[], None]:
        shadows = self.gateway.shadows

        def start() -> None:
            shadows.start(plan)

        return start

    async def _routed(
        self, admission: Admission, work: Awaitable[T], *, streamed: bool, cache: Lookup | None = None
    ) -> T:
        """The router's work, cancelled if the client leaves. If it fails, the request is accounted here as
        unanswered, and the error goes on to be rendered — unless the alias's cache answers it instead."""
        try:
            result: T = await until_disconnect(self.request, work)
        except BaseException as exc:
            if cache is None or not await cache.rescue(exc):
                await self.gateway.accounting.finish(admission, _failed(exc, streamed))
            raise
        return result

    async def _cached(
        self, admission: Admission, cached: Cached, chat: ChatCompletionRequest, use: CacheUse, attempts: AttemptLog
    ) -> Answer | Stream:
        """An answer from the alias's cache, accounted at no upstream cost and marked `x-lifeline-cache`."""
        streamed = bool(chat.stream)
        await self.gateway.accounting.finish(
            admission,
            Finish(200, "ok", streamed, model=cached.model, attempts=attempts, usage=cached.usage, cache=use),
        )
        headers = {"x-lifeline-cache": use.value, "x-lifeline-attempts": str(attempts.tries)}
        body = {**cached.body, "id": f"chatcmpl-{self.request_id}"}
        if streamed:
            return Stream(cached.model, replay(body, cached.usage, cached.usage_estimated), headers)
        headers["x-lifeline-cost-usd"] = "0"
        return Answer(body, cached.model, cached.usage, cached.usage_estimated, headers)

    async def _answer(
        self,
        admission: Admission,
        done: Routed[Completion],
        data: dict[str, Any],
        *,
        embedding: bool,
        cache: Lookup | None = None,
    ) -> Answer:
        usage, estimated = reply_usage(data, done.result.usage, done.result.body)
        if embedding:  # all prompt
            usage = {"prompt_tokens": int(usage.get("prompt_tokens") or 0), "completion_tokens": 0}
        await self.gateway.accounting.finish(
            admission,
            Finish(
                status=200,
                outcome="ok",
                streamed=False,
                target=done.target,
                model=done.result.model,
                attempts=done.attempts,
                usage=usage,
                usage_estimated=estimated,
                answer=None if embedding or admission.capture is None else {**done.result.body, "usage": usage},
                alias=done.alias or None,
            ),
        )
        if cache is not None:
            await cache.keep({**done.result.body, "usage": usage}, done.result.model, usage, estimated)
        headers = _headers(done)
        # The answer's cost at its target's price, as the ledger records it (the ledger stays the source of truth).
        cost = self.gateway.accounting.prices.cost(done.target, usage["prompt_tokens"], usage["completion_tokens"])
        headers["x-lifeline-cost-usd"] = usd_text(cost)
        return Answer(done.result.body, done.result.model, usage, estimated, headers, cost)

    def _stream(
        self, admission: Admission, routed: Routed[OpenStream], call: ChatCall, cache: Lookup | None = None
    ) -> Stream:
        model = next((str(c.data["model"]) for c in routed.result.head if c.data.get("model")), routed.model)
        ttft = time.monotonic() - admission.started
        headers = _headers(routed)  # before a continuation adds its attempts

        assembler = Assembler() if admission.capture is not None or cache is not None else None

        async def on_end(end: End) -> None:
            finish = _stream_finish(routed, end, call.body, model, ttft)
            answer = {"usage": end.usage, **assembler.completion()} if assembler is not None else None
            if admission.capture is not None:
                finish.answer = answer
            await self.gateway.accounting.finish(admission, finish)
            # Only an answer one target finished normally is kept: never a broken or a continued (spliced) one.
            if cache is not None and answer is not None and end.outcome is Outcome.OK and len(end.parts) == 1:
                await cache.keep(answer, model, end.usage, end.usage_estimated)

        def cost(end: End) -> int:  # the ledger's own sum, from the same Finish
            return self.gateway.accounting.cost_of(_stream_finish(routed, end, call.body, model, ttft))

        events = relay(routed, call, self.gateway.router, routed.alias or admission.alias, on_end)
        return Stream(model, events if assembler is None else _assembled(events, assembler), headers, cost)


async def _assembled(events: AsyncGenerator[StreamEvent, None], assembler: Assembler) -> AsyncGenerator[StreamEvent]:
    """The events as they are, each chunk also fed to `assembler` (the answer the client received)."""
    try:
        async for event in events:
            if isinstance(event, Content):
                assembler.add(event.data)
            yield event
    finally:
        await events.aclose()


def usd_text(nusd: int) -> str:
    """Nano-USD as a decimal number of dollars, exactly (no float rounding): 123_000 → "0.000123"."""
    sign, whole, frac = "-" if nusd < 0 else "", abs(nusd) // 1_000_000_000, abs(nusd) % 1_000_000_000
    text = f"{sign}{whole}.{frac:09d}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def wants_cost(request: Request) -> bool:
    """Whether the client asked for the cost inside the answer's usage (`x-lifeline-include-cost: true`)."""
    return request.headers.get("x-lifeline-include-cost", "").strip().lower() in ("true", "1", "yes")


def _headers(routed: Routed[Any]) -> dict[str, str]:
    headers = {"x-lifeline-target": routed.target, "x-lifeline-attempts": str(routed.tries)}
    if routed.alias:  # the alias that answered: the requested one, or a fallback the request named
        headers["x-lifeline-alias"] = routed.alias
    return headers


def _failed(exc: BaseException, streamed: bool) -> Finish:
    """A request no target answered: refused, failed, or left by its client."""
    if isinstance(exc, LifelineError):
        return Finish(exc.status, "client_closed" if exc.status == 499 else "error", streamed, attempts=exc.attempts)
    # Cancelled: the client left (or the server is stopping); anything else unexpected is our own 500.
    cancelled = isinstance(exc, asyncio.CancelledError)
    return Finish(499 if cancelled else 500, "client_closed" if cancelled else "error", streamed)


def _stream_finish(routed: Routed[OpenStream], end: End, body: dict[str, Any], model: str, ttft: float) -> Finish:
    """A stream that ended — complete, broken after content, or left by its client: all three still cost
    what was produced. A continued stream costs each target's share at that target's price."""
    # The answering attempt is the last: a stream that broke, or whose client left, says so there.
    attempts = routed.attempts.ended(end.outcome)
    parts = [(p.target, *p.tokens(body)) for p in end.parts] if len(end.parts) > 1 else None
    return Finish(
        status=200,
        outcome=end.outcome.value,
        streamed=True,
        target=end.target or routed.target,
        model=model,
        attempts=attempts,
        usage=end.usage,
        usage_estimated=end.usage_estimated,
        ttft=ttft,
        cost_parts=parts,
        alias=routed.alias or None,
    )


def request_deadline(request: Request, default: float) -> Deadline:
    """When the request must be answered: the server's request timeout, or less when the client asks
    (`x-lifeline-timeout`, in seconds)."""
    header = request.headers.get("x-lifeline-timeout")
    if header is None:
        return Deadline.after(default)
    try:
        seconds = float(header)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise InvalidRequest(
            "The header x-lifeline-timeout must be a positive number of seconds.", param="x-lifeline-timeout"
        )
    return Deadline.after(min(seconds, default))


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run the router's work, cancelling it if the client goes away meanwhile (a generation on the
    embedded engine stops; an upstream request is abandoned)."""
    cycle: DirectCycle | None = request.scope.get(CYCLE)
    if cycle is not None:  # served without ASGI: the cycle cancels this task when the client leaves
        return await cycle.cancellable(work)
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        raise LifelineError("The client closed the connection.", status=499, code="client_closed_request")
    return task.result()


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
