"""Kind `openai`: any upstream that speaks OpenAI's chat-completions API.

OpenAI, DeepSeek, Qwen (DashScope compatible mode), GLM, Moonshot, SiliconFlow, vLLM, SGLang, Ollama,
llama.cpp server, LM Studio … The client's JSON is forwarded as it came (unknown fields included) with the
target's model id, and the answer comes back as it was sent. Pooling, timeouts and the conversion of httpx
exceptions and error responses into Lifeline errors are `HttpProvider`'s (providers/http.py); this module
holds the request body, the answer's checks and `from_upstream_status` as the classification.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from lifeline.config.schema import OpenAITarget
from lifeline.errors import UpstreamError, UpstreamUnavailable, from_upstream_status
from lifeline.providers import openai_responses as responses
from lifeline.providers.base import ChatCall, Chunk, Completion, EmbeddingCall, inspect_chunk
from lifeline.providers.http import JSON, HttpProvider, TimedEvents
from lifeline.providers.openai_responses import speaks_natively

log = logging.getLogger("lifeline.providers.openai")


class OpenAICompatProvider(HttpProvider[OpenAITarget]):
    _log = log

    def __init__(self, name: str, config: OpenAITarget, transport: httpx.AsyncBaseTransport | None = None):
        super().__init__(name, config, transport, auth=lambda key: {"authorization": f"Bearer {key}"})
        self.supports_n = config.supports_n
        self._url = self._stream_url = config.base_url.rstrip("/") + "/chat/completions"
        self._embeddings_url = config.base_url.rstrip("/") + "/embeddings"
        self._responses_url = config.base_url.rstrip("/") + "/responses"
        self._native = config.responses == "native"

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

    async def complete(self, call: ChatCall) -> Completion:
        if speaks_natively(call, self._native):
            return await self._respond(call)
        return await self._post(self._url, self._body(call, stream=False), call, expect="choices")

    def stream(self, call: ChatCall) -> AsyncIterator[Chunk]:
        if speaks_natively(call, self._native):
            body = functools.partial(responses.request_body, call, self.model, True)
            return self._stream(call, self._responses_url, body, self._response_events)
        return self._stream(call, self._stream_url, lambda: self._body(call, stream=True), None, self._chunk)

    # --- the Responses API, natively (providers/openai_responses.py) -------------------------------

    async def _respond(self, call: ChatCall) -> Completion:
        body = responses.request_body(call, self.model, False)
        done = await self._post(self._responses_url, body, call, expect="output")
        error = responses.failure(done.body)
        if error is not None:
            raise self._error(None, error, None)
        done.usage = responses.chat_usage(done.body.get("usage"))
        return done

    async def _response_events(self, events: TimedEvents) -> AsyncIterator[Chunk]:
        async for data in events:
            try:
                event = orjson.loads(data)
            except orjson.JSONDecodeError:
                log.warning("skipped a malformed stream event from target %s", self.name)
                continue
            if not isinstance(event, dict):
                continue
            error = responses.failure(event)
            if error is not None:
                raise self._error(None, error, None)
            yield events.seen(responses.event_chunk(event, data))
            if events.finished:
                return  # the response is whole: nothing of the answer follows response.completed

    async def embed(self, call: EmbeddingCall) -> Completion:
        body = orjson.dumps({**call.body, "model": self.model})
        return await self._post(self._embeddings_url, body, call, expect="data")

    async def _post(self, url: str, content: bytes, call: ChatCall | EmbeddingCall, *, expect: str) -> Completion:
        """One non-streaming request; the answer must be a JSON object with a list under `expect`."""
        data = await self._post_json(url, content, call)
        if not isinstance(data, dict) or not isinstance(data.get(expect), list):
            if isinstance(data, dict) and isinstance(data.get("error"), dict):
                raise self._error(None, data["error"], None)
            raise UpstreamUnavailable(f"the upstream's answer has no {expect}", target=self.name)
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else None
        return Completion(body=data, model=str(data.get("model") or self.model), usage=usage)

    def _chunk(self, events: TimedEvents, data: bytes) -> Chunk | None:
        """One event's chunk (see `ChunkOf`): `[DONE]` ends the stream; malformed events are skipped."""
        if data == b"[DONE]":
            events.done = True
            return None
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            log.warning("skipped a malformed stream event from target %s", self.name)
            return None
        if not isinstance(obj, dict):
            log.warning("skipped a stream event that is not an object from target %s", self.name)
            return None
        if "choices" not in obj and isinstance(obj.get("error"), dict):
            raise self._error(None, obj["error"], None)
        chunk = events.seen(inspect_chunk(obj, data))
        if events.finished and chunk.usage is not None and not obj.get("choices"):
            events.done = True  # usage comes last: the answer is complete even if no [DONE] follows
        return chunk

    def _classify(self, status: int | None, error: JSON, retry_after: float | None) -> UpstreamError:
        # An error inside a 200 answer or stream has no status of its own: the target is broken, as by a 502.
        return from_upstream_status(502 if status is None else status, error, target=self.name, retry_after=retry_after)
