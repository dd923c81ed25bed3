"""The `openai` target kind against an in-process mock upstream (httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest

from lifeline.config.schema import OpenAITarget
from lifeline.errors import (
    ContentFiltered,
    ContextLengthExceeded,
    UpstreamCutOff,
    UpstreamError,
    UpstreamModelNotFound,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamSilent,
    UpstreamUnavailable,
)
from lifeline.providers.base import ChatCall, Chunk, Completion
from lifeline.providers.openai_compat import OpenAICompatProvider
from tests.providers.support import Handler, Upstream, make_call, run_provider

KEY = "sk-unit-upstream-secret-0123456789"


def target(**extra: Any) -> OpenAITarget:
    spec: dict[str, Any] = {
        "kind": "openai",
        "base_url": "https://up.example/v1/",
        "model": "up-model",
        "api_key": KEY,
        **extra,
    }
    return OpenAITarget.model_validate(spec)


def run(handler: Handler, action: Callable[[OpenAICompatProvider], Any], **target_extra: Any) -> Any:
    return run_provider(
        OpenAICompatProvider("up", target(**target_extra), transport=httpx.MockTransport(handler)), action
    )


def complete(handler: Handler, call: ChatCall | None = None, **target_extra: Any) -> Completion:
    return run(handler, lambda p: p.complete(call or make_call()), **target_extra)


def stream(handler: Handler, call: ChatCall | None = None) -> list[Chunk]:
    async def collect(provider: OpenAICompatProvider) -> list[Chunk]:
        return [chunk async for chunk in provider.stream(call or make_call(stream=True))]

    return run(handler, collect)


def answer(content: str = "hello") -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion",
        "model": "up-model-2024",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=answer())


def sse(*events: dict[str, Any] | bytes) -> bytes:
    out = b""
    for event in events:
        data = event if isinstance(event, bytes) else orjson.dumps(event)
        out += b"data: " + data + b"\n\n"
    return out


def delta(content: str | None = None, finish: str | None = None) -> dict[str, Any]:
    d = {} if content is None else {"content": content}
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": d, "finish_reason": finish}],
    }


USAGE = {"id": "c1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}


def streaming(raw: bytes | list[bytes], status: int = 200) -> Handler:
    pieces = [raw] if isinstance(raw, bytes) else raw

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=_aiter(pieces), headers={"content-type": "text/event-stream"})

    return handler


async def _aiter(pieces: list[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


def error_response(status: int, error: dict[str, Any] | str, headers: dict[str, str] | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        content = error.encode() if isinstance(error, str) else orjson.dumps({"error": error})
        return httpx.Response(status, content=content, headers=headers)

    return handler


# --- the request sent -------------------------------------------------------------------------------


def test_body_forwarded_with_unknown_fields_and_target_model() -> None:
    upstream = Upstream(ok)
    call = make_call(temperature=0.5, reasoning_effort="low", x_vendor={"k": [1, 2]})
    done = complete(upstream, call)
    sent = upstream.body
    assert sent["model"] == "up-model"
    assert sent["messages"] == [{"role": "user", "content": "hi"}]
    assert sent["temperature"] == 0.5
    assert sent["reasoning_effort"] == "low"
    assert sent["x_vendor"] == {"k": [1, 2]}
    assert "stream" not in sent
    assert call.body["model"] == "chat", "the client's body must not be changed"
    assert done.body == answer()
    assert done.model == "up-model-2024"
    assert done.usage == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}


def test_url_and_headers() -> None:
    upstream = Upstream(ok)
    complete(upstream, headers={"OpenAI-Organization": "org-1"})
    request = upstream.requests[0]
    assert request.method == "POST"
    assert str(request.url) == "https://up.example/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-request-id"] == "req-1"
    assert request.headers["openai-organization"] == "org-1"


def test_no_authorization_without_a_key() -> None:
    upstream = Upstream(ok)
    complete(upstream, api_key=None)
    assert "authorization" not in upstream.requests[0].headers


def test_complete_drops_stream_fields() -> None:
    upstream = Upstream(ok)
    complete(upstream, make_call(stream=True, stream_options={"include_usage": True}))
    assert "stream" not in upstream.body
    assert "stream_options" not in upstream.body


def test_missing_model_in_answer_falls_back_to_target_model() -> None:
    body = answer()
    del body["model"]
    del body["usage"]
    done = complete(lambda r: httpx.Response(200, json=body))
    assert done.model == "up-model"
    assert done.usage is None


def test_stream_asks_for_usage() -> None:
    upstream = Upstream(streaming(sse(delta("hi"), delta(finish="stop"), USAGE) + b"data: [DONE]\n\n"))
    stream(upstream, make_call(stream=True, stream_options={"other": 1}, top_p=0.9))
    sent = upstream.body
    assert sent["stream"] is True
    assert sent["stream_options"] == {"other": 1, "include_usage": True}
    assert sent["model"] == "up-model"
    assert sent["top_p"] == 0.9


def test_stream_usage_can_be_left_to_the_client() -> None:
    upstream = Upstream(streaming(sse(delta("hi", "stop")) + b"data: [DONE]\n\n"))
    run(upstream, lambda p: _drain(p.stream(make_call(stream=True))), stream_usage=False)
    assert "stream_options" not in upstream.body


async def _drain(chunks: AsyncIterator[Chunk]) -> list[Chunk]:
    return [c async for c in chunks]


# --- error responses --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "cls"),
    [
        (500, {"message": "oops"}, UpstreamUnavailable),
        (503, "Service Unavailable", UpstreamUnavailable),
        (401, {"message": "bad key", "code": "invalid_api_key"}, UpstreamCutOff),
        (403, {"message": "region", "code": "unsupported_country_region_territory"}, UpstreamCutOff),
        (404, {"message": "no such model", "code": "model_not_found"}, UpstreamModelNotFound),
        (400, {"message": "long", "code": "context_length_exceeded"}, ContextLengthExceeded),
        (400, {"message": "refused", "code": "content_filter"}, ContentFiltered),
        (422, {"message": "bad", "param": "top_p"}, UpstreamRejected),
    ],
)
def test_error_statuses(status: int, error: dict[str, Any] | str, cls: type[UpstreamError]) -> None:
    with pytest.raises(cls) as info:
        complete(error_response(status, error))
    assert info.value.upstream_status == status
    assert info.value.target == "up"


def test_rate_limited_with_retry_after_from_headers() -> None:
    with pytest.raises(UpstreamRateLimited) as info:
        complete(error_response(429, {"message": "slow"}, {"retry-after": "3"}))
    assert info.value.retry_after == 3.0


def test_rate_limited_with_retry_after_ms() -> None:
    with pytest.raises(UpstreamRateLimited) as info:
        complete(error_response(429, {"message": "slow"}, {"retry-after-ms": "120"}))
    assert info.value.retry_after == pytest.approx(0.12)


def test_stream_error_status_is_classified() -> None:
    handler = error_response(429, {"message": "slow"}, {"retry-after": "2"})
    with pytest.raises(UpstreamRateLimited) as info:
        stream(handler)
    assert info.value.retry_after == 2.0


def test_key_scrubbed_from_error_messages() -> None:
    message = f"Incorrect API key provided: {KEY}. Also sk-unit-u****6789."
    with pytest.raises(UpstreamCutOff) as info:
        complete(error_response(401, {"message": message, "code": "invalid_api_key"}))
    assert KEY not in info.value.message
    assert KEY[:8] not in info.value.message
    assert "Incorrect API key provided" in info.value.message


def test_key_scrubbed_from_stream_error_status() -> None:
    with pytest.raises(UpstreamCutOff) as info:
        stream(error_response(401, {"message": f"bad key {KEY}"}))
    assert KEY not in info.value.message


def test_key_scrubbed_from_error_in_a_200_answer() -> None:
    handler = lambda r: httpx.Response(200, json={"error": {"message": f"bad key {KEY}"}})  # noqa: E731
    with pytest.raises(UpstreamError) as info:
        complete(handler)
    assert KEY not in info.value.message


def test_error_object_in_a_200_answer_is_classified() -> None:
    handler = lambda r: httpx.Response(200, json={"error": {"message": "long", "code": "context_length_exceeded"}})  # noqa: E731
    with pytest.raises(ContextLengthExceeded):
        complete(handler)


def test_non_json_200_is_unavailable() -> None:
    with pytest.raises(UpstreamUnavailable, match="not valid JSON"):
        complete(lambda r: httpx.Response(200, content=b"<html>proxy page</html>"))


@pytest.mark.parametrize("payload", [{"id": "x"}, [1, 2], {"choices": "none"}])
def test_200_without_choices_is_unavailable(payload: Any) -> None:
    with pytest.raises(UpstreamUnavailable, match="no choices"):
        complete(lambda r: httpx.Response(200, json=payload))


def test_connect_error_is_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(UpstreamUnavailable, match="ConnectError") as info:
        complete(refuse)
    assert info.value.target == "up"
    with pytest.raises(UpstreamUnavailable, match="ConnectError"):
        stream(refuse)


def test_connect_timeout_is_unavailable_not_silent() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    with pytest.raises(UpstreamUnavailable) as info:
        complete(slow)
    assert not isinstance(info.value, UpstreamSilent)


def test_used_before_start() -> None:
    provider = OpenAICompatProvider("up", target())
    with pytest.raises(RuntimeError, match="before start"):
        _ = provider.client


# --- streams ----------------------------------------------------------------------------------------


def test_stream_chunks_parsed() -> None:
    raw = sse(delta("Hel"), delta("lo"), delta(finish="stop"), USAGE) + b"data: [DONE]\n\n"
    chunks = stream(streaming(raw))
    assert [c.content for c in chunks] == [True, True, False, False]
    assert [c.finish for c in chunks] == [False, False, True, False]
    assert chunks[0].data["choices"][0]["delta"]["content"] == "Hel"
    assert orjson.loads(chunks[1].raw) == delta("lo")
    assert chunks[-1].usage == USAGE["usage"]


def test_stream_split_into_awkward_pieces() -> None:
    raw = sse(delta("Hel"), delta("lo", "stop")) + b"data: [DONE]\n\n"
    chunks = stream(streaming([raw[i : i + 7] for i in range(0, len(raw), 7)]))
    assert "".join(c.data["choices"][0]["delta"].get("content", "") for c in chunks) == "Hello"


def test_malformed_event_skipped() -> None:
    raw = sse(delta("a"), b"{not json", b"[1, 2]", delta("b", "stop")) + b"data: [DONE]\n\n"
    chunks = stream(streaming(raw))
    assert [c.data["choices"][0]["delta"]["content"] for c in chunks] == ["a", "b"]


def test_stream_without_done_but_finished_completes() -> None:
    chunks = stream(streaming(sse(delta("a"), delta(finish="stop"))))
    assert len(chunks) == 2
    assert chunks[-1].finish


def test_stream_ends_after_usage_without_done() -> None:
    # nothing after the usage chunk is read: the answer is complete
    raw = sse(delta("a", "stop"), USAGE, delta("ignored"))
    chunks = stream(streaming(raw))
    assert len(chunks) == 2
    assert chunks[-1].usage is not None


def test_events_after_done_are_ignored() -> None:
    raw = sse(delta("a", "stop")) + b"data: [DONE]\n\n" + sse(delta("late"))
    assert len(stream(streaming(raw))) == 1


def test_stream_ending_without_finish_reason_is_unavailable() -> None:
    with pytest.raises(UpstreamUnavailable, match="before the answer finished"):
        stream(streaming(sse(delta("a"), delta("b"))))


def test_empty_stream_is_unavailable() -> None:
    with pytest.raises(UpstreamUnavailable):
        stream(streaming(b""))


def test_error_event_in_stream_raises() -> None:
    raw = sse(delta("a"), {"error": {"message": f"overloaded, key {KEY}", "type": "server_error"}})
    with pytest.raises(UpstreamUnavailable) as info:
        stream(streaming(raw))
    assert "overloaded" in info.value.message
    assert KEY not in info.value.message


def test_error_event_keeps_its_code() -> None:
    raw = sse({"error": {"message": "refused", "code": "content_filter"}})
    with pytest.raises(ContentFiltered):
        stream(streaming(raw))


def test_stream_broken_midway_is_unavailable() -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield sse(delta("a"))
        raise httpx.ReadError("connection reset")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=broken())

    with pytest.raises(UpstreamUnavailable, match="ReadError"):
        stream(handler)


def test_stream_broken_after_finish_completes() -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield sse(delta("a", "stop"))
        raise httpx.ReadError("connection reset")

    chunks = stream(lambda r: httpx.Response(200, content=broken()))
    assert len(chunks) == 1


def test_stream_silent_before_first_token() -> None:
    async def silent() -> AsyncIterator[bytes]:
        yield b": waiting\n\n"
        await asyncio.sleep(1)
        yield sse(delta("late", "stop"))

    async def collect(provider: OpenAICompatProvider) -> list[Chunk]:
        return [c async for c in provider.stream(make_call(stream=True))]

    with pytest.raises(UpstreamSilent, match="ttft"):
        run(lambda r: httpx.Response(200, content=silent()), collect, timeouts={"ttft": 0.05})


def test_every_event_of_one_read_is_handed_out_before_the_next_wait() -> None:
    """A read that completes several events gives all of them without waiting for another read: here the
    upstream then stays silent, and the answer it finished is whole."""

    async def then_silent() -> AsyncIterator[bytes]:
        yield sse(delta("a"), delta("b"), delta("", "stop"))
        await asyncio.sleep(30)

    async def collect(provider: OpenAICompatProvider) -> list[Chunk]:
        return [c async for c in provider.stream(make_call(stream=True))]

    chunks = run(lambda r: httpx.Response(200, content=then_silent()), collect, timeouts={"idle": 0.1})
    assert [c.finish for c in chunks] == [False, False, True]


def test_events_of_a_read_come_before_the_failure_of_the_next() -> None:
    got: list[Chunk] = []

    async def broken() -> AsyncIterator[bytes]:
        yield sse(delta("a"), delta("b"))
        yield b'data: {"choices": [{"index": 0, "delta": {"content": "c"}'  # half an event, then the break
        raise httpx.ReadError("connection reset")

    async def collect(provider: OpenAICompatProvider) -> None:
        async for chunk in provider.stream(make_call(stream=True)):
            got.append(chunk)

    with pytest.raises(UpstreamUnavailable, match="ReadError"):
        run(lambda r: httpx.Response(200, content=broken()), collect)
    assert [c.data["choices"][0]["delta"]["content"] for c in got] == ["a", "b"]


def test_a_last_event_without_its_blank_line_counts() -> None:
    chunks = stream(streaming(sse(delta("a")) + b"data: " + orjson.dumps(delta("", "stop"))))
    assert [c.finish for c in chunks] == [False, True]


def test_one_timer_serves_a_whole_stream_not_one_per_event() -> None:
    """Each wait for an event moves the stream's one deadline; no timer is set per event."""
    events = 40

    async def many() -> AsyncIterator[bytes]:
        yield sse({"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})
        for i in range(events):
            await asyncio.sleep(0)  # each event is its own read
            yield sse(delta(f"t{i}"))
        yield sse(delta("", "stop"), b"[DONE]")

    timers: list[float] = []

    async def collect(provider: OpenAICompatProvider) -> list[Chunk]:
        loop = asyncio.get_running_loop()
        call_at = loop.call_at

        def counted(when: float, callback: Any, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
            timers.append(when)
            return call_at(when, callback, *args, **kwargs)

        loop.call_at = counted  # type: ignore[method-assign]
        try:
            return [c async for c in provider.stream(make_call(stream=True))]
        finally:
            loop.call_at = call_at  # type: ignore[method-assign]

    chunks = run(lambda r: httpx.Response(200, content=many()), collect, timeouts={"ttft": 30, "idle": 10})
    assert len(chunks) == events + 2 and chunks[-1].finish
    assert len(timers) == 2  # the first-token budget, then the idle timeout (shorter than what was left of it)


def test_the_idle_deadline_moves_with_each_event() -> None:
    """Events that come more often than the idle timeout, for longer than it in all, never time out: the
    one timer goes off at the first deadline, finds it moved, and waits for the new one."""

    async def steady() -> AsyncIterator[bytes]:
        yield sse(delta("a"))
        for _ in range(6):
            await asyncio.sleep(0.2)
            yield sse(delta("b"))
        yield sse(delta("", "stop"), b"[DONE]")

    async def collect(provider: OpenAICompatProvider) -> list[Chunk]:
        return [c async for c in provider.stream(make_call(stream=True))]

    chunks = run(lambda r: httpx.Response(200, content=steady()), collect, timeouts={"idle": 0.7})
    assert [c.finish for c in chunks] == [False] * 7 + [True]


def test_time_spent_by_the_reader_between_events_is_not_idle() -> None:
    """The idle timeout counts waiting for the upstream only: a reader slower than it loses nothing."""

    async def at_once() -> AsyncIterator[bytes]:
        yield sse(delta("a"), delta("b"), delta("", "stop"), b"[DONE]")

    async def slow_reader(provider: OpenAICompatProvider) -> list[Chunk]:
        got = []
        async for chunk in provider.stream(make_call(stream=True)):
            got.append(chunk)
            await asyncio.sleep(0.15)
        return got

    chunks = run(lambda r: httpx.Response(200, content=at_once()), slow_reader, timeouts={"idle": 0.05})
    assert [c.finish for c in chunks] == [False, False, True]


def test_a_reader_cancelled_while_waiting_is_cancelled_not_timed_out() -> None:
    async def stalls() -> AsyncIterator[bytes]:
        yield sse(delta("a"))
        await asyncio.sleep(30)
        yield sse(delta("", "stop"))

    async def cancel_midway(provider: OpenAICompatProvider) -> str:
        got: list[Chunk] = []

        async def read() -> None:
            async for chunk in provider.stream(make_call(stream=True)):
                got.append(chunk)

        reading = asyncio.ensure_future(read())
        while not got:
            await asyncio.sleep(0.01)
        reading.cancel()
        try:
            await reading
        except asyncio.CancelledError:
            return "cancelled"
        return "finished"

    assert run(lambda r: httpx.Response(200, content=stalls()), cancel_midway, timeouts={"idle": 60}) == "cancelled"


def test_the_routers_first_token_limit_wins_over_the_targets_and_reasoning_counts_as_first_content() -> None:
    async def thinking_first() -> AsyncIterator[bytes]:
        yield sse({"choices": [{"index": 0, "delta": {"reasoning": "hmm"}, "finish_reason": None}]})
        await asyncio.sleep(0.3)  # past the limit below, but the first content (reasoning) has come
        yield sse(delta("answer", "stop"))

    async def silent() -> AsyncIterator[bytes]:
        yield b": waiting\n\n"
        await asyncio.sleep(1)
        yield sse(delta("late", "stop"))

    def collect(limit: float) -> Callable[[OpenAICompatProvider], Any]:
        async def run_it(provider: OpenAICompatProvider) -> list[Chunk]:
            call = dataclasses.replace(make_call(stream=True), ttft=limit)
            return [c async for c in provider.stream(call)]

        return run_it

    chunks = run(lambda r: httpx.Response(200, content=thinking_first()), collect(0.05), timeouts={"ttft": 30})
    assert [c.content for c in chunks] == [True, True]
    with pytest.raises(UpstreamSilent, match="ttft"):  # the target allows 30 s; this attempt only 0.05
        run(lambda r: httpx.Response(200, content=silent()), collect(0.05), timeouts={"ttft": 30})


def test_a_first_token_deadline_already_past_times_out_on_uvloop() -> None:
    """uvloop answers `call_at` for a time already past with a plain Handle (no `when()`): the one timer must
    still go off and end the wait, not fail inside its callback and leave the stream waiting."""
    import time

    import uvloop

    async def late() -> AsyncIterator[bytes]:
        await asyncio.sleep(2)
        yield sse(delta("late", "stop"), b"[DONE]")

    def handler(request: httpx.Request) -> httpx.Response:
        time.sleep(0.05)  # the upstream's answer comes after the first-token limit has already passed
        return httpx.Response(200, content=late())

    provider = OpenAICompatProvider("up", target(timeouts={"ttft": 0.01}), transport=httpx.MockTransport(handler))

    async def main() -> list[Chunk]:
        await provider.start()
        try:
            return [c async for c in provider.stream(make_call(stream=True))]
        finally:
            await provider.close()

    with pytest.raises(UpstreamSilent, match="ttft"):
        uvloop.run(main())
