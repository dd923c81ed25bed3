"""The fault wall: an OpenAI-compatible HTTP server that misbehaves on purpose.

It sits directly on ``asyncio.start_server`` with the tiny HTTP/1.1 layer from ``wire`` so it can do
what web frameworks cannot: reset a connection before any byte, accept a request and never answer,
or stop a stream half-way. Tests, benchmarks and ``lifeline fakes serve`` all drive this class.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any

import orjson

from lifeline.errors import HttpError
from lifeline.testing.behaviours import (
    KNOWN_BEHAVIOURS,
    Behaviour,
    judge_choice,
    parse_behaviour,
    prompt_words,
    scripted_text,
    speech_answer,
    stream_piece,
    wall_text,
    wants_json,
)
from lifeline.testing.payloads import (
    ErrorReply,
    Reply,
    bad_request_error,
    content_filter_error,
    context_length_error,
    envelope,
    status_error,
    tool_call_deltas,
    tool_call_message,
    tool_name,
)
from lifeline.testing.responses_payloads import RESPONSES_PATH, ResponsesReply, error_event
from lifeline.testing.wire import (
    CHUNK_END,
    MAX_HEAD_BYTES,
    Request,
    chunk,
    fixed_response,
    read_request,
    sse,
    stream_head,
)
from lifeline.testing.wire import json_object as _json_object
from lifeline.testing.wire import send as _send
from lifeline.testing.wire import send_json as _send_json

logger = logging.getLogger(__name__)

CHAT_PATH = "/v1/chat/completions"
BEHAVIOUR_HEADER = "x-wall-behaviour"
REDACTED_HEADERS = frozenset({"authorization", "proxy-authorization", "api-key", "x-api-key"})
# Where the stream-breaking behaviours strike when no ``after`` is given.
AFTER_DEFAULTS = {"cut": 3, "stall": 3, "malformed": 2, "error_event": 2}
TOOL_CALL_TOKENS = 8
MALFORMED_EVENT = b'{"choices": [broken'
STREAM_ERROR = envelope(
    "The server had an error while processing your request.", "server_error", None, "internal_error"
)


@dataclass(frozen=True)
class Attempt:
    """One request to the chat endpoint as the wall saw it, recorded before the wall acted on it."""

    at: float
    wall_time: float
    method: str
    path: str
    model: str | None
    behaviour: str
    stream: bool
    body: dict[str, Any] | None
    headers: dict[str, str]
    outcome: str

    def public(self) -> dict[str, Any]:
        """JSON-ready form with credentials masked, as served by ``/_wall/attempts``."""
        headers = {k: ("***" if k in REDACTED_HEADERS else v) for k, v in self.headers.items()}
        return {
            "at": self.at,
            "wall_time": self.wall_time,
            "method": self.method,
            "path": self.path,
            "model": self.model,
            "behaviour": self.behaviour,
            "stream": self.stream,
            "body": self.body,
            "headers": headers,
            "outcome": self.outcome,
        }


def _token_limit(body: dict[str, Any]) -> int | None:
    limits = [
        v
        for v in (body.get("max_tokens"), body.get("max_completion_tokens"))
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0
    ]
    return min(limits) if limits else None


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _outcome(behaviour: Behaviour, stream: bool, tokens: int) -> str:
    name = behaviour.name
    if name in AFTER_DEFAULTS and stream:
        return f"{name}:{_strike_at(behaviour, tokens)}"
    if name in ("cut", "reset", "hang", "stall", "malformed", "slow_first_token", "tool_call", "no_usage"):
        return name
    if name == "no_done" and stream:
        return name
    return "ok"


def prefill_of(body: dict[str, Any]) -> str | None:
    """The partial assistant text a request asks to continue, in any of the dialects Lifeline sends:
    DeepSeek's `prefix: true`, Qwen's `partial: true`, or vLLM's `continue_final_message`."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return None
    last = messages[-1]
    if last.get("role") != "assistant" or not isinstance(last.get("content"), str):
        return None
    if last.get("prefix") is True or last.get("partial") is True or body.get("continue_final_message") is True:
        return str(last["content"])
    return None


@dataclass(frozen=True)
class _Asked:
    """A chat or Responses request as the wall reads it: its body and the behaviour it asks for."""

    body: dict[str, Any]
    model: str | None
    spec: str  # the behaviour as written: the header, else the model name
    behaviour: Behaviour
    stream: bool
    keep: bool


def _asked(request: Request) -> _Asked | None:
    """None when the body is not a JSON object."""
    body = _json_object(request.body)
    if body is None:
        return None
    model = body.get("model") if isinstance(body.get("model"), str) else None
    spec = request.headers.get(BEHAVIOUR_HEADER) or model
    return _Asked(body, model, spec or "", parse_behaviour(spec), body.get("stream") is True, request.keep_alive)


def _strike_at(behaviour: Behaviour, tokens: int) -> int:
    return max(0, min(behaviour.get_int("after", AFTER_DEFAULTS.get(behaviour.name, 0)), tokens))


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        # Linger 0 turns the close into an RST instead of an orderly FIN.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _wait_for_peer(reader: asyncio.StreamReader, timeout: float | None) -> bool:
    """Sit on the connection until the client leaves (True) or ``timeout`` passes (False)."""
    try:
        async with asyncio.timeout(timeout):
            # Whatever the client still sends is ignored; only its departure matters.
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


async def _event(writer: asyncio.StreamWriter, payload: dict[str, Any]) -> None:
    await _send(writer, sse(orjson.dumps(payload)))


async def _named_event(writer: asyncio.StreamWriter, payload: dict[str, Any]) -> None:
    """A server-sent event named by its type, as the Responses API streams them."""
    await _send(
        writer, chunk(b"event: " + str(payload["type"]).encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n")
    )


class FaultWall:
    """An OpenAI-compatible server whose misbehaviour is picked per request through ``model``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, keep_attempts: int = 100_000) -> None:
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._server: asyncio.Server | None = None
        # Readers live on other threads when the wall runs via running(); the lock covers all shared state.
        self._lock = threading.Lock()
        self._attempts: deque[Attempt] = deque(maxlen=keep_attempts)
        self._failures: dict[str, int] = {}
        self._flap_since: dict[str, float] = {}
        self._ids = itertools.count(1)
        self._connections: set[asyncio.Task[Any]] = set()

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the fault wall is not started")
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    async def start(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._on_connection, self.host, self._requested_port, limit=MAX_HEAD_BYTES, backlog=1024
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        # Hanging and stalled connections would otherwise live on; cancelling them closes their sockets.
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()

    async def __aenter__(self) -> FaultWall:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @contextlib.contextmanager
    def running(self, timeout: float = 10.0) -> Iterator[FaultWall]:
        """Run the wall on its own event loop in a daemon thread, for synchronous callers."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="fault-wall", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(timeout)
            yield self
        finally:
            try:
                asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout)
            finally:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(timeout)
                if not thread.is_alive():
                    loop.close()

    # -- recorded state --------------------------------------------------------------------------

    @property
    def attempts(self) -> list[Attempt]:
        with self._lock:
            return list(self._attempts)

    def attempts_for(self, model: str) -> list[Attempt]:
        return [a for a in self.attempts if a.model == model]

    def reset(self) -> None:
        with self._lock:
            self._attempts.clear()
            self._failures.clear()
            self._flap_since.clear()

    def _record(self, attempt: Attempt) -> None:
        with self._lock:
            self._attempts.append(attempt)

    # -- connections -----------------------------------------------------------------------------

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass  # the client went away mid-exchange; there is nobody left to answer
        except Exception:
            logger.exception("fault wall: unexpected error while serving a connection")
        finally:
            if task is not None:
                self._connections.discard(task)
            if not writer.is_closing():
                writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                request = await read_request(reader, writer)
            except HttpError as exc:
                await _send_json(writer, exc.status, envelope(exc.message, "invalid_request_error"), False)
                return
            if request is None or not await self._dispatch(request, reader, writer):
                return

    async def _dispatch(self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; returns whether the connection may carry another."""
        route = (request.method, request.path)
        keep = request.keep_alive
        if route == ("POST", CHAT_PATH):
            return await self._chat(request, reader, writer)
        if route == ("POST", "/v1/embeddings"):
            return await self._embeddings(request, writer)
        if route == ("POST", RESPONSES_PATH):
            return await self._responses(request, reader, writer)
        if route == ("GET", "/v1/models"):
            models = [{"id": n, "object": "model", "created": 0, "owned_by": "lifeline-wall"} for n in KNOWN_BEHAVIOURS]
            return await _send_json(writer, 200, {"object": "list", "data": models}, keep)
        if route == ("GET", "/_wall/attempts"):
            return await _send_json(writer, 200, [a.public() for a in self.attempts], keep)
        if route == ("POST", "/_wall/reset"):
            self.reset()
            return await _send_json(writer, 200, {"ok": True}, keep)
        if request.path == CHAT_PATH:
            error = envelope(f"Method {request.method} not allowed.", "invalid_request_error")
            return await _send_json(writer, 405, error, keep, [("Allow", "POST")])
        error = envelope(f"Invalid URL ({request.method} {request.path})", "invalid_request_error")
        return await _send_json(writer, 404, error, keep)

    # -- embeddings --------------------------------------------------------------------------------

    async def _embeddings(self, request: Request, writer: asyncio.StreamWriter) -> bool:
        """Deterministic vectors (`dims`, default 8) derived from each input and the served model's name, so
        that vectors from differently named models differ; error behaviours as for chat."""
        keep = request.keep_alive
        body = _json_object(request.body)
        if body is None:
            return await _send_json(writer, 400, envelope("Invalid JSON body.", "invalid_request_error"), keep)
        model = body.get("model") if isinstance(body.get("model"), str) else None
        spec = request.headers.get(BEHAVIOUR_HEADER) or model
        behaviour = parse_behaviour(spec)
        reply = self._reply({"messages": []}, behaviour, model, False)
        error = self._error_for(behaviour, spec or "", model, reply)
        outcome = f"status:{error.status}" if error else "ok"
        self._record(self._attempt(request, model, behaviour.name, False, body, outcome))
        if behaviour.latency_s > 0:
            await asyncio.sleep(behaviour.latency_s)
        if error is not None:
            return await _send_json(writer, error.status, error.envelope, keep, error.headers)
        if behaviour.name == "reset":
            _reset(writer)
            return False
        raw = body.get("input")
        inputs = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
        served = behaviour.get_str("served_model", model or "wall")
        dims = behaviour.get_int("dims", 8)
        data = []
        for index, item in enumerate(inputs):
            digest = hashlib.sha256(f"{served}:{item}".encode()).digest()
            vector = [round((digest[i % len(digest)] - 128) / 128, 6) for i in range(dims)]
            data.append({"object": "embedding", "index": index, "embedding": vector})
        tokens = sum(len(str(item).split()) for item in inputs)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return await _send_json(writer, 200, {"object": "list", "data": data, "model": served, "usage": usage}, keep)

    # -- the Responses API (testing/responses_payloads.py) ---------------------------------------

    async def _responses(self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """OpenAI's Responses API, misbehaving as chat does: the error behaviours, reset, hang, and in a stream
        cut?after=N (the connection closes after N deltas) and error_event?after=N (an `error` event)."""
        asked = _asked(request)
        if asked is None:
            return await self._invalid_json(request, writer, "Invalid JSON body.")
        body, model, behaviour, stream, keep = asked.body, asked.model, asked.behaviour, asked.stream, asked.keep
        reply = ResponsesReply.of(
            next(self._ids),
            int(time.time()),
            behaviour.get_opt_str("served_model") or model or "wall",
            body,
            behaviour.tokens,
            scripted=behaviour.name == "scripted",
        )
        reply.tool_call = behaviour.name in ("tool_call", "scripted") and any(
            isinstance(t, dict) and t.get("type") == "function" for t in body.get("tools") or []
        )
        error = self._error_for(behaviour, asked.spec, model, self._reply({"messages": []}, behaviour, model, False))
        ended = await self._common_endings(request, reader, writer, asked, error, reply.tokens)
        if ended is not None:
            return ended
        name = behaviour.name
        if not stream:
            if name == "cut":
                return False
            return await _send_json(writer, 200, reply.whole(), keep)
        strike = _strike_at(behaviour, reply.tokens) if name in ("cut", "error_event") else -1
        writer.write(stream_head(keep_alive=keep))
        deltas = 0
        for is_delta, event in reply.events():
            if is_delta and deltas == strike:
                if name == "cut":
                    return False  # the chunked body ends without its terminator
                await _named_event(writer, error_event(event["sequence_number"]))
                await _send(writer, CHUNK_END)
                return keep
            deltas += is_delta
            await _named_event(writer, event)
        await _send(writer, CHUNK_END)
        return keep

    # -- chat completions ------------------------------------------------------------------------

    async def _chat(self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        asked = _asked(request)
        if asked is None:
            message = (
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
                "your HTTP library correctly.)"
            )
            return await self._invalid_json(request, writer, message)
        body, model, spec, behaviour = asked.body, asked.model, asked.spec, asked.behaviour
        stream, keep = asked.stream, asked.keep
        reply = self._reply(body, behaviour, model, stream)
        error = self._error_for(behaviour, spec, model, reply)
        if error is None and behaviour.name == "no_prefill" and prefill_of(body) is not None:
            # a host that does not support continuing an assistant message refuses it
            message = "Assistant prefill is not supported by this model."
            error = ErrorReply(400, envelope(message, "invalid_request_error", "messages", "invalid_value"), [])
        ended = await self._common_endings(request, reader, writer, asked, error, reply.tokens)
        if ended is not None:
            return ended

        name = behaviour.name
        if name == "tool_call":
            return await self._tool_call(writer, behaviour, reply, body, stream, keep)
        if name in ("scripted", "judge", "speech"):
            answer = self._scripted(behaviour, spec, reply, body)
            if stream:
                return await self._stream_answer(writer, reply, answer, keep)
            return await _send_json(writer, 200, answer, keep)
        if stream:
            return await self._stream(reader, writer, behaviour, reply, keep)
        return await self._answer(reader, writer, behaviour, reply, keep)

    async def _invalid_json(self, request: Request, writer: asyncio.StreamWriter, message: str) -> bool:
        self._record(self._attempt(request, None, "invalid_json", False, None, "status:400"))
        return await _send_json(writer, 400, envelope(message, "invalid_request_error"), request.keep_alive)

    async def _common_endings(
        self,
        request: Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        asked: _Asked,
        error: ErrorReply | None,
        tokens: int,
    ) -> bool | None:
        """Record the attempt, wait out any latency, then answer what chat and Responses answer alike (an
        error, a reset, a hang); None leaves the answer to the caller."""
        behaviour = asked.behaviour
        outcome = f"status:{error.status}" if error else _outcome(behaviour, asked.stream, tokens)
        self._record(self._attempt(request, asked.model, behaviour.name, asked.stream, asked.body, outcome))
        if behaviour.latency_s > 0:
            await asyncio.sleep(behaviour.latency_s)
        if error is not None:
            return await _send_json(writer, error.status, error.envelope, asked.keep, error.headers)
        if behaviour.name == "reset":
            _reset(writer)
            return False
        if behaviour.name == "hang":
            await _wait_for_peer(reader, None)
            return False
        return None

    def _scripted(self, behaviour: Behaviour, spec: str, reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
        """A whole answer of `scripted` (says what the prompt asks it to, calls the first offered tool, breaks
        every `json_break`-th JSON answer) or `judge` (a verdict line on the two answers it is shown)."""
        if behaviour.name == "judge":
            text = f"Compared as asked. VERDICT: {judge_choice(body, behaviour.get_str('prefer', 'longer'))}"
            return _say(reply, text)
        if behaviour.name == "speech":
            return _say(reply, speech_answer(behaviour.get_str("style", "open"), body))
        if body.get("tools") and _calls_tool(behaviour.get_str("tools", ""), body):
            call_id = f"call_wall_{reply.id.rsplit('-', 1)[-1]}"
            called = replace(reply, tokens=TOOL_CALL_TOKENS, finish_reason="tool_calls")
            return called.completion(tool_call_message(call_id, tool_name(body)))
        said = scripted_text(body)
        text = said if said is not None else wall_text(reply.tokens)
        every = behaviour.get_int("json_break", 0)
        if every > 0 and wants_json(body):
            with self._lock:
                seen = self._failures.get(spec, 0) + 1
                self._failures[spec] = seen
            if seen % every == 0:
                text = text[: max(len(text) - 1, 0)]  # the closing brace lost: no longer JSON
        return _say(reply, text)

    async def _stream_answer(
        self, writer: asyncio.StreamWriter, reply: Reply, answer: dict[str, Any], keep: bool
    ) -> bool:
        """A whole answer sent as a stream: the role chunk, its text or tool call in one delta, the finish."""
        choice = answer["choices"][0]
        message = choice["message"]
        writer.write(stream_head(keep_alive=keep))
        await _event(writer, reply.chunk({"role": "assistant", "content": "" if message.get("content") else None}))
        if message.get("tool_calls"):
            calls = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
            await _event(writer, reply.chunk({"tool_calls": calls}))
        elif message.get("content"):
            await _event(writer, reply.chunk({"content": message["content"]}))
        await _event(writer, reply.chunk({}, choice["finish_reason"]))
        if reply.include_usage:
            await _event(writer, {**reply.usage_chunk(), "usage": answer["usage"]})
        await _send(writer, sse(b"[DONE]") + CHUNK_END)
        return keep

    def _attempt(
        self,
        request: Request,
        model: str | None,
        behaviour: str,
        stream: bool,
        body: dict[str, Any] | None,
        outcome: str,
    ) -> Attempt:
        return Attempt(
            at=request.received_at,
            wall_time=request.received_wall_time,
            method=request.method,
            path=request.path,
            model=model,
            behaviour=behaviour,
            stream=stream,
            body=body,
            headers=dict(request.headers),
            outcome=outcome,
        )

    def _reply(self, body: dict[str, Any], behaviour: Behaviour, model: str | None, stream: bool) -> Reply:
        tokens, finish = behaviour.tokens, "stop"
        if behaviour.name == "tool_call":
            tokens, finish = TOOL_CALL_TOKENS, "tool_calls"
        else:
            limit = _token_limit(body)
            if limit is not None and limit < tokens:
                tokens, finish = limit, "length"
        # `prefill=ignore`: a server that takes no notice of the prefix marker and answers afresh
        prefill = prefill_of(body) if behaviour.get_str("prefill", "") != "ignore" else None
        return Reply(
            id=f"chatcmpl-wall-{next(self._ids)}",
            created=int(time.time()),
            model=behaviour.get_opt_str("served_model") or model or "wall",
            tokens=tokens,
            finish_reason=finish,
            prompt_tokens=prompt_words(body),
            include_usage=stream and behaviour.name != "no_usage" and _include_usage(body),
            start=min(len(prefill.split()), tokens) if prefill is not None else 0,
            offset=max(behaviour.get_int("offset", 0), 0),
        )

    def _error_for(self, behaviour: Behaviour, spec: str, model: str | None, reply: Reply) -> ErrorReply | None:
        """The error this request gets, if any; advances the per-model fail_once and flap state."""
        name = behaviour.name
        if name == "status":
            return status_error(behaviour.get_int("code", 500), behaviour, model)
        if name == "rate_limit":
            return status_error(429, behaviour, model)
        if name == "fail_once":
            with self._lock:
                seen = self._failures.get(spec, 0)
                self._failures[spec] = seen + 1
            if seen < behaviour.get_int("times", 1):
                return status_error(behaviour.get_int("code", 500), behaviour, model)
            return None
        if name == "flap":
            now = time.monotonic()
            with self._lock:
                since = self._flap_since.setdefault(spec, now)
            if now - since < behaviour.get_float("down", 2.0):
                return status_error(behaviour.get_int("code", 503), behaviour, model)
            return None
        if name == "context_length":
            return context_length_error(behaviour, reply.prompt_tokens)
        if name == "content_filter":
            return content_filter_error()
        if name == "bad_request":
            return bad_request_error(behaviour)
        return None

    async def _answer(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        behaviour: Behaviour,
        reply: Reply,
        keep: bool,
    ) -> bool:
        name = behaviour.name
        if name == "cut":
            return False  # the connection closes without a single response byte
        if name == "slow_first_token":
            await asyncio.sleep(behaviour.get_float("delay", 5.0))
        elif name == "stall" and await _wait_for_peer(reader, behaviour.get_opt_float("delay")):
            return False
        completion = reply.completion(reply.text_message(), with_usage=name != "no_usage")
        if name == "malformed":
            # A 200 whose JSON body stops half-way; Content-Length still matches what is sent.
            raw = orjson.dumps(completion)
            await _send(writer, fixed_response(200, raw[: len(raw) // 2], keep_alive=keep))
            return keep
        return await _send_json(writer, 200, completion, keep)

    async def _stream(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        behaviour: Behaviour,
        reply: Reply,
        keep: bool,
    ) -> bool:
        name = behaviour.name
        strike = _strike_at(behaviour, reply.tokens) if name in AFTER_DEFAULTS else -1
        tps = behaviour.tps
        writer.write(stream_head(keep_alive=keep))
        await _event(writer, reply.chunk({"role": "assistant", "content": ""}))
        if name == "slow_first_token":
            await asyncio.sleep(behaviour.get_float("delay", 5.0))

        for i in range(reply.start, reply.tokens + 1):
            if i == strike:
                if name == "cut":
                    return False  # closing now leaves the chunked body without its terminator
                if name == "stall":
                    if await _wait_for_peer(reader, behaviour.get_opt_float("delay")):
                        return False
                elif name == "malformed":
                    await _send(writer, sse(MALFORMED_EVENT))
                elif name == "error_event":
                    await _event(writer, STREAM_ERROR)
                    await _send(writer, CHUNK_END)
                    return keep
            if i == reply.tokens:
                break
            if tps is not None and i > 0:
                await asyncio.sleep(1.0 / tps)
            await _event(writer, reply.chunk({"content": stream_piece(i, reply.offset)}))

        await self._finish_stream(writer, reply, done=name != "no_done")
        return keep

    async def _finish_stream(self, writer: asyncio.StreamWriter, reply: Reply, *, done: bool = True) -> None:
        await _event(writer, reply.chunk({}, reply.finish_reason))
        if reply.include_usage:
            await _event(writer, reply.usage_chunk())
        tail = (sse(b"[DONE]") if done else b"") + CHUNK_END
        await _send(writer, tail)

    async def _tool_call(
        self,
        writer: asyncio.StreamWriter,
        behaviour: Behaviour,
        reply: Reply,
        body: dict[str, Any],
        stream: bool,
        keep: bool,
    ) -> bool:
        call_id = f"call_wall_{reply.id.rsplit('-', 1)[-1]}"
        name = tool_name(body)
        if not stream:
            return await _send_json(writer, 200, reply.completion(tool_call_message(call_id, name)), keep)
        tps = behaviour.tps
        writer.write(stream_head(keep_alive=keep))
        await _event(writer, reply.chunk({"role": "assistant", "content": None}))
        cut_after = behaviour.get_int("cut_after", -1)  # a tool call that dies half-way
        for i, delta in enumerate(tool_call_deltas(call_id, name)):
            if i == cut_after:
                return False
            if tps is not None and i > 0:
                await asyncio.sleep(1.0 / tps)
            await _event(writer, reply.chunk(delta))
        await self._finish_stream(writer, reply)
        return keep


def _calls_tool(mode: str, body: dict[str, Any]) -> bool:
    """Whether `scripted` calls a tool it is offered: always, `never`, or `once` (not when the last message
    is a tool's result, so an agent's loop calls the tool and then gets its answer)."""
    if mode == "never":
        return False
    if mode == "once":
        messages = body.get("messages")
        last = messages[-1] if isinstance(messages, list) and messages else None
        return not (isinstance(last, dict) and last.get("role") == "tool")
    return True


def _say(reply: Reply, text: str) -> dict[str, Any]:
    """A whole answer saying `text`; its completion tokens are its words."""
    message = {"role": "assistant", "content": text, "refusal": None}
    return replace(reply, tokens=len(text.split()), start=0).completion(message)


async def serve_forever(
    host: str,
    port: int,
    *,
    on_ready: Callable[[FaultWall], None] | None = None,
    keep_attempts: int = 100_000,
) -> None:
    """Run a fault wall until cancelled; ``on_ready`` gets the started wall (e.g. to print its URL)."""
    wall = FaultWall(host, port, keep_attempts=keep_attempts)
    await wall.start()
    try:
        if on_ready is not None:
            on_ready(wall)
        await asyncio.get_running_loop().create_future()
    finally:
        await wall.stop()
