"""Kind `openai`: any upstream that speaks OpenAI's chat-completions API.

OpenAI, DeepSeek, Qwen (DashScope compatible mode), GLM, Moonshot, SiliconFlow, vLLM, SGLang, Ollama,
llama.cpp server, LM Studio … One pooled keep-alive HTTP client per target, opened at start-up and closed
at shutdown. The client's JSON is forwarded as it came (unknown fields included) with the target's model
id. httpx exceptions and upstream error responses become Lifeline errors here, in `_boundary` and
`_raise_for_status`, and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson

from lifeline.config.schema import OpenAITarget
from lifeline.errors import (
    UpstreamError,
    UpstreamSilent,
    UpstreamUnavailable,
    from_upstream_status,
)
from lifeline.providers.base import ChatCall, Chunk, Completion, EmbeddingCall, inspect_chunk
from lifeline.providers.http import read_error, retry_after_seconds, scrub
from lifeline.providers.sse import iter_sse_data

log = logging.getLogger("lifeline.providers.openai")


class OpenAICompatProvider:
    def __init__(self, name: str, config: OpenAITarget, transport: httpx.AsyncBaseTransport | None = None):
        self.name = name
        self.config = config
        self.model = config.model
        self.context_window = config.context_window
        self.supports_n = config.supports_n
        self._timeouts = config.timeouts
        self._url = config.base_url.rstrip("/") + "/chat/completions"
        self._embeddings_url = config.base_url.rstrip("/") + "/embeddings"
        key = config.api_key.get_secret_value() if config.api_key else ""
        # Header values may carry keys too (`api-key`, `x-api-key`); long ones are scrubbed like the key.
        self._secrets = tuple(s for s in (key, *config.headers.values()) if len(s) >= 12)
        headers = {"content-type": "application/json", "accept": "application/json", **config.headers}
        if key:
            headers["authorization"] = f"Bearer {key}"
        self._headers = headers
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        limits = httpx.Limits(
            max_connections=self.config.max_connections,
            max_keepalive_connections=self.config.max_connections,
            keepalive_expiry=30.0,
        )
        # Reads are bounded per phase with asyncio.timeout (first byte, TTFT, idle, whole response);
        # httpx bounds only connecting and waiting for a pooled connection.
        timeout = httpx.Timeout(connect=self._timeouts.connect, read=None, write=30.0, pool=self._timeouts.connect)
        self._client = httpx.AsyncClient(
            headers=self._headers, limits=limits, timeout=timeout, transport=self._transport, trust_env=False
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError(f"target {self.name} used before start()")
        return self._client

    # --- one attempt -----------------------------------------------------------------------------

    def _body(self, call: ChatCall, stream: bool) -> bytes:
        body = dict(call.body)
        body["model"] = self.model
        if call.prefill is not None:
            partial: dict[str, Any] = {"role": "assistant", "content": call.prefill}
            mode = self.config.prefill_mode or "prefix"
            if mode == "continue_final_message":
                body["continue_final_message"] = True
                body["add_generation_prompt"] = False
            else:
                partial[mode] = True
            body["messages"] = [*body["messages"], partial]
        if stream:
            body["stream"] = True
            if self.config.stream_usage:
                options = body.get("stream_options")
                body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        else:
            body.pop("stream", None)
            body.pop("stream_options", None)
        return orjson.dumps(body)

    def _headers_for(self, call: ChatCall) -> dict[str, str]:
        return {"x-request-id": call.request_id}

    async def complete(self, call: ChatCall) -> Completion:
        return await self._post(self._url, self._body(call, stream=False), call, expect="choices")

    async def embed(self, call: EmbeddingCall) -> Completion:
        body = orjson.dumps({**call.body, "model": self.model})
        return await self._post(self._embeddings_url, body, call, expect="data")

    async def _post(self, url: str, content: bytes, call: ChatCall | EmbeddingCall, *, expect: str) -> Completion:
        """One non-streaming request; the answer must be a JSON object with a list under `expect`."""
        limit = call.deadline.bound(self._timeouts.response)
        with self._boundary("response"):
            async with asyncio.timeout(limit):
                response = await self.client.post(url, content=content, headers={"x-request-id": call.request_id})
                if response.status_code >= 400:
                    await self._raise_for_status(response)
                raw = await response.aread()
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamUnavailable("the upstream's answer is not valid JSON", target=self.name) from None
        if not isinstance(data, dict) or not isinstance(data.get(expect), list):
            if isinstance(data, dict) and isinstance(data.get("error"), dict):
                err = from_upstream_status(502, data["error"], target=self.name, retry_after=None)
                err.message = scrub(err.message, self._secrets)
                raise err
            raise UpstreamUnavailable(f"the upstream's answer has no {expect}", target=self.name)
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else None
        return Completion(body=data, model=str(data.get("model") or self.model), usage=usage)

    async def stream(self, call: ChatCall) -> AsyncIterator[Chunk]:
        started = time.monotonic()
        request = self.client.build_request(
            "POST", self._url, content=self._body(call, stream=True), headers=self._headers_for(call)
        )
        with self._boundary("first_byte"):
            async with asyncio.timeout(call.deadline.bound(self._timeouts.first_byte)):
                response = await self.client.send(request, stream=True)
        try:
            if response.status_code >= 400:
                with self._boundary("first_byte"):
                    await self._raise_for_status(response)
            async for chunk in self._events(response, call, started):
                yield chunk
        finally:
            await response.aclose()

    async def _events(self, response: httpx.Response, call: ChatCall, started: float) -> AsyncIterator[Chunk]:
        events = iter_sse_data(response.aiter_raw())
        seen_content = False
        finished = False
        while True:
            if seen_content:
                phase, limit = "idle", call.deadline.bound(self._timeouts.idle)
            else:
                phase = "ttft"
                limit = call.deadline.bound(self._timeouts.ttft - (time.monotonic() - started))
            try:
                with self._boundary(phase):
                    async with asyncio.timeout(limit):
                        data = await anext(events)
            except StopAsyncIteration:
                break
            except UpstreamError:
                if finished:
                    # The answer was complete; the upstream just did not close properly.
                    return
                raise
            if data == b"[DONE]":
                return
            try:
                obj = orjson.loads(data)
            except orjson.JSONDecodeError:
                log.warning("skipped a malformed stream event from target %s", self.name)
                continue
            if not isinstance(obj, dict):
                log.warning("skipped a stream event that is not an object from target %s", self.name)
                continue
            if "choices" not in obj and isinstance(obj.get("error"), dict):
                error = obj["error"]
                err = from_upstream_status(502, error, target=self.name, retry_after=None)
                err.message = scrub(err.message, self._secrets)
                raise err
            chunk = inspect_chunk(obj, data)
            seen_content = seen_content or chunk.content or chunk.finish
            yield chunk
            if chunk.finish:
                finished = True
            if finished and chunk.usage is not None and not obj.get("choices"):
                # Usage comes last: the answer is complete even if no [DONE] follows.
                return
        if not finished:
            raise UpstreamUnavailable("the upstream closed the stream before the answer finished", target=self.name)

    async def _raise_for_status(self, response: httpx.Response) -> None:
        error = await read_error(response)
        err = from_upstream_status(
            response.status_code, error, target=self.name, retry_after=retry_after_seconds(response.headers)
        )
        err.message = scrub(err.message, self._secrets)
        raise err

    @contextmanager
    def _boundary(self, phase: str) -> Iterator[None]:
        """Convert transport failures and timeouts into Lifeline errors."""
        try:
            yield
        except TimeoutError:
            raise UpstreamSilent(
                f"target {self.name} sent nothing within the {phase} timeout", target=self.name
            ) from None
        except httpx.TimeoutException as exc:
            # httpx's own timeouts are only connect and pool: the target is unreachable, not silent.
            raise UpstreamUnavailable(
                f"target {self.name}: {type(exc).__name__} while connecting", target=self.name
            ) from None
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(f"target {self.name}: {type(exc).__name__} ({phase})", target=self.name) from None
