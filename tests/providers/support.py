"""What the provider unit tests share: a chat call, a recording mock upstream, and running one provider."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import orjson

from lifeline.protocol.parse import validate_chat_request
from lifeline.providers.base import ChatCall, Deadline

Handler = Callable[[httpx.Request], httpx.Response]
P = TypeVar("P")


def make_call(messages: list[dict[str, Any]] | None = None, **extra: Any) -> ChatCall:
    body = {"model": "chat", "messages": messages or [{"role": "user", "content": "hi"}], **extra}
    return ChatCall(body=body, request=validate_chat_request(body), request_id="req-1", deadline=Deadline.after(10))


class Upstream:
    """Records every request and answers with the handler."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)

    @property
    def body(self) -> dict[str, Any]:
        return orjson.loads(self.requests[-1].content)


def run_provider(provider: Any, action: Callable[[Any], Awaitable[Any]]) -> Any:
    """Start the provider, run `action` on it, close it — in a fresh event loop."""

    async def main() -> Any:
        await provider.start()
        try:
            return await action(provider)
        finally:
            await provider.close()

    return asyncio.run(main())
