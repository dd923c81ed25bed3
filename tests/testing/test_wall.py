"""The fault wall, exercised over real sockets with httpx, raw sockets and the official openai SDK."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, BinaryIO

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

import lifeline.testing.wall
from lifeline.testing import WALL_WORDS, FaultWall, parse_behaviour, wall_text
from lifeline.testing.wall import serve_forever

MESSAGES = [{"role": "user", "content": "say something nice"}]
SDK_MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "say something nice"}]


@pytest.fixture(scope="module")
def shared_wall() -> Iterator[FaultWall]:
    with FaultWall().running() as wall:
        yield wall


@pytest.fixture
def wall(shared_wall: FaultWall) -> FaultWall:
    shared_wall.reset()
    return shared_wall


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as client:
        yield client


@pytest.fixture
def sdk(wall: FaultWall) -> Iterator[OpenAI]:
    with OpenAI(base_url=wall.base_url, api_key="x", max_retries=0, timeout=5.0) as client:
        yield client


def chat(http: httpx.Client, wall: FaultWall, model: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": MESSAGES, **extra}
    return http.post(f"{wall.base_url}/chat/completions", json=body)


def stream_lines(
    http: httpx.Client, wall: FaultWall, model: str, *, timeout: float = 5.0, **extra: Any
) -> tuple[list[str], Exception | None]:
    """Non-empty SSE lines received, plus the exception that ended the stream early, if any."""
    body = {"model": model, "messages": MESSAGES, "stream": True, **extra}
    lines: list[str] = []
    url = f"{wall.base_url}/chat/completions"
    try:
        with http.stream("POST", url, json=body, timeout=timeout) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if line:
                    lines.append(line)
    except (httpx.TransportError, httpx.TimeoutException) as exc:
        return lines, exc
    return lines, None


@pytest.fixture
def wall_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits the wall asks of asyncio.sleep (still waited): what it waits, not how long that took."""
    asked: list[float] = []
    real_sleep = asyncio.sleep

    async def recorded(delay: float, result: Any = None) -> Any:
        asked.append(delay)
        return await real_sleep(delay, result)

    monkeypatch.setattr(asyncio, "sleep", recorded)
    return asked


def chunk_payloads(lines: list[str]) -> list[dict[str, Any]]:
    """The JSON chunks among the lines, skipping [DONE] and anything that is not valid JSON."""
    payloads = []
    for line in lines:
        data = line.removeprefix("data: ")
        try:
            payloads.append(json.loads(data))
        except json.JSONDecodeError:
            continue
    return payloads


def content_of(lines: list[str]) -> str:
    return "".join(p["choices"][0]["delta"].get("content") or "" for p in chunk_payloads(lines) if p.get("choices"))


def read_raw_response(stream: BinaryIO) -> tuple[int, dict[str, str], bytes]:
    status_line = stream.readline().decode()
    status = int(status_line.split(" ")[1])
    headers: dict[str, str] = {}
    while (line := stream.readline().decode().strip()) != "":
        name, _, value = line.partition(":")
        headers[name.lower()] = value.strip()
    body = stream.read(int(headers.get("content-length", "0")))
    return status, headers, body


def raw_request(method: str, path: str, body: bytes | None, extra: str = "") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: wall\r\n{extra}"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + (body or b"")


# -- deterministic text and spec parsing ---------------------------------------------------------------


def test_wall_text_cycles_through_the_words() -> None:
    assert len(set(WALL_WORDS)) == len(WALL_WORDS)
    assert wall_text(0) == ""
    assert wall_text(3) == " ".join(WALL_WORDS[:3])
    long = wall_text(len(WALL_WORDS) + 2).split(" ")
    assert long[-2:] == list(WALL_WORDS[:2])


def test_parse_behaviour_reads_params_and_defaults_unknown_names_to_ok() -> None:
    spec = parse_behaviour("status?code=503&retry_after=2&latency_ms=15")
    assert spec.name == "status"
    assert spec.get_int("code", 500) == 503
    assert spec.get_opt_str("retry_after") == "2"
    assert spec.latency_s == pytest.approx(0.015)
    assert spec.tokens == 12
    assert spec.tps is None
    assert parse_behaviour("gpt-4o-mini").name == "ok"
    assert parse_behaviour(None).name == "ok"
    assert parse_behaviour("ok?tokens=nope").tokens == 12


# -- healthy answers -------------------------------------------------------------------------------


def test_ok_non_stream_through_sdk(sdk: OpenAI) -> None:
    completion = sdk.chat.completions.create(model="ok", messages=SDK_MESSAGES)
    assert completion.id.startswith("chatcmpl-wall-")
    assert completion.model == "ok"
    choice = completion.choices[0]
    assert choice.message.content == wall_text(12)
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 3
    assert completion.usage.completion_tokens == 12
    assert completion.usage.total_tokens == 15


def test_ok_stream_through_sdk_with_usage(sdk: OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model="ok",
        messages=SDK_MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == wall_text(12)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 12
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_wire_format(http: httpx.Client, wall: FaultWall) -> None:
    lines, error = stream_lines(http, wall, "ok?tokens=4", stream_options={"include_usage": True})
    assert error is None
    assert lines[-1] == "data: [DONE]"
    payloads = chunk_payloads(lines)
    assert all(p["object"] == "chat.completion.chunk" for p in payloads)
    assert all("usage" in p for p in payloads)
    assert payloads[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [p["choices"][0]["delta"]["content"] for p in payloads[1:5]] == [
        WALL_WORDS[0],
        " " + WALL_WORDS[1],
        " " + WALL_WORDS[2],
        " " + WALL_WORDS[3],
    ]
    assert payloads[5]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert payloads[6]["choices"] == []
    assert payloads[6]["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def test_stream_without_include_usage_has_no_usage_keys(http: httpx.Client, wall: FaultWall) -> None:
    lines, error = stream_lines(http, wall, "ok")
    assert error is None
    assert all("usage" not in p for p in chunk_payloads(lines))
    assert content_of(lines) == wall_text(12)


def test_max_tokens_shortens_the_answer(http: httpx.Client, wall: FaultWall) -> None:
    body = chat(http, wall, "ok?tokens=20", max_tokens=5).json()
    assert body["choices"][0]["message"]["content"] == wall_text(5)
    assert body["choices"][0]["finish_reason"] == "length"
    body = chat(http, wall, "ok?tokens=3", max_completion_tokens=10).json()
    assert body["choices"][0]["finish_reason"] == "stop"


def test_served_model_and_tokens_params(http: httpx.Client, wall: FaultWall) -> None:
    body = chat(http, wall, "ok?tokens=20&served_model=gpt-4o-2024-08-06").json()
    assert body["model"] == "gpt-4o-2024-08-06"
    assert body["choices"][0]["message"]["content"] == wall_text(20)


def test_latency_and_tps_slow_the_answer(http: httpx.Client, wall: FaultWall, wall_sleeps: list[float]) -> None:
    assert chat(http, wall, "ok?latency_ms=150").status_code == 200
    assert wall_sleeps == [pytest.approx(0.15)]
    wall_sleeps.clear()
    lines, _ = stream_lines(http, wall, "ok?tokens=6&tps=50")
    assert wall_sleeps == [pytest.approx(0.02)] * 5  # five gaps of 20 ms between six tokens
    assert content_of(lines) == wall_text(6)


# -- error statuses --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "status", "retry_after", "code"),
    [
        ("status?code=500", 500, None, None),
        ("status?code=503&retry_after=7", 503, "7", "service_unavailable"),
        ("status?code=401", 401, None, "invalid_api_key"),
        ("status?code=403", 403, None, "unsupported_country_region_territory"),
        ("status?code=404", 404, None, "model_not_found"),
        ("status?code=451&error_code=blocked&error_type=policy", 451, None, "blocked"),
        ("rate_limit", 429, None, "rate_limit_exceeded"),
        ("rate_limit?retry_after=2", 429, "2", "rate_limit_exceeded"),
    ],
)
def test_status_errors(
    http: httpx.Client, wall: FaultWall, model: str, status: int, retry_after: str | None, code: str | None
) -> None:
    response = chat(http, wall, model)
    assert response.status_code == status
    assert response.headers.get("retry-after") == retry_after
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    if status >= 500:
        assert error["type"] == "server_error"
    if "error_type" in model:
        assert error["type"] == "policy"
    assert wall.attempts[-1].outcome == f"status:{status}"


def test_status_errors_through_sdk(sdk: OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.chat.completions.create(model="rate_limit?retry_after=1", messages=SDK_MESSAGES)
    assert caught.value.response.headers["retry-after"] == "1"
    with pytest.raises(openai.AuthenticationError):
        sdk.chat.completions.create(model="status?code=401", messages=SDK_MESSAGES)


@pytest.mark.parametrize(
    ("model", "code", "param"),
    [
        ("context_length?limit=8192", "context_length_exceeded", "messages"),
        ("content_filter", "content_filter", "prompt"),
        ("bad_request", "invalid_value", "temperature"),
        ("bad_request?error_code=unsupported_parameter&param=top_k", "unsupported_parameter", "top_k"),
    ],
)
def test_bad_request_family(http: httpx.Client, wall: FaultWall, model: str, code: str, param: str) -> None:
    response = chat(http, wall, model)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"], error["type"]) == (code, param, "invalid_request_error")
    if code == "context_length_exceeded":
        assert error["message"].startswith("This model's maximum context length is 8192 tokens.")


def test_fail_once_then_healthy(http: httpx.Client, wall: FaultWall) -> None:
    assert chat(http, wall, "fail_once").status_code == 500
    assert chat(http, wall, "fail_once").status_code == 200
    # A different spec string has its own counter.
    assert chat(http, wall, "fail_once?code=502&times=2").status_code == 502
    assert chat(http, wall, "fail_once?code=502&times=2").status_code == 502
    assert chat(http, wall, "fail_once?code=502&times=2").status_code == 200
    assert [a.outcome for a in wall.attempts_for("fail_once")] == ["status:500", "ok"]


def test_flap_is_down_then_up(http: httpx.Client, wall: FaultWall, monkeypatch: pytest.MonkeyPatch) -> None:
    # the wall's clock is the test's: down for 0.3 s of it, however long the requests really take
    now = [1000.0]
    monkeypatch.setattr(lifeline.testing.wall, "time", SimpleNamespace(monotonic=lambda: now[0], time=time.time))
    assert chat(http, wall, "flap?down=0.3").status_code == 503
    now[0] += 0.29
    assert chat(http, wall, "flap?down=0.3").status_code == 503
    now[0] += 0.02
    assert chat(http, wall, "flap?down=0.3").status_code == 200


# -- broken connections ----------------------------------------------------------------------------


def test_reset_breaks_the_connection(http: httpx.Client, wall: FaultWall) -> None:
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        chat(http, wall, "reset")
    assert wall.attempts[-1].outcome == "reset"
    # The client recovers on a fresh connection.
    assert chat(http, wall, "ok").status_code == 200


def test_reset_is_a_tcp_rst(wall: FaultWall) -> None:
    body = json.dumps({"model": "reset", "messages": MESSAGES}).encode()
    with socket.create_connection(("127.0.0.1", wall.port), timeout=2) as sock:
        sock.sendall(raw_request("POST", "/v1/chat/completions", body))
        with pytest.raises(ConnectionResetError):
            sock.recv(1024)


def test_hang_times_out_without_blocking_others(wall: FaultWall) -> None:
    with httpx.Client(timeout=0.5) as slow, httpx.Client(timeout=30) as other:
        results: list[int] = []
        worker = threading.Thread(target=lambda: results.append(chat(other, wall, "ok").status_code))
        with pytest.raises(httpx.ReadTimeout):
            worker.start()
            chat(slow, wall, "hang")  # the wall never answers: only the client's own timeout ends it
        worker.join(30)
        assert results == [200]  # answered meanwhile
    assert [a.outcome for a in wall.attempts_for("hang")] == ["hang"]


def test_stop_does_not_wait_for_hanging_connections() -> None:
    with socket.socket() as sock:
        with FaultWall().running() as wall:
            sock.settimeout(2)
            sock.connect(("127.0.0.1", wall.port))
            body = json.dumps({"model": "hang", "messages": MESSAGES}).encode()
            sock.sendall(raw_request("POST", "/v1/chat/completions", body))
            for _ in range(3000):  # until the wall holds the request (a guard, not a measure)
                if wall.attempts:
                    break
                time.sleep(0.01)
            assert [a.outcome for a in wall.attempts] == ["hang"]
        # stop() returned (a stop that waited for the hanging connection would hang the test) and closed it
        assert sock.recv(1024) == b""  # closed by the wall without a response


def test_cut_stream_ends_early(http: httpx.Client, wall: FaultWall) -> None:
    lines, error = stream_lines(http, wall, "cut?after=5")
    assert isinstance(error, httpx.RemoteProtocolError)
    assert "data: [DONE]" not in lines
    assert content_of(lines) == wall_text(5)
    assert wall.attempts[-1].outcome == "cut:5"


def test_cut_stream_through_sdk(sdk: OpenAI) -> None:
    stream = sdk.chat.completions.create(model="cut", messages=SDK_MESSAGES, stream=True)
    seen: list[str] = []
    with pytest.raises((httpx.RemoteProtocolError, openai.APIConnectionError)):
        for chunk in stream:
            seen.append(chunk.choices[0].delta.content or "")
    assert "".join(seen) == wall_text(3)


def test_cut_non_stream_closes_without_response(http: httpx.Client, wall: FaultWall) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        chat(http, wall, "cut")


def test_stall_stream_stops_sending(http: httpx.Client, wall: FaultWall) -> None:
    lines, error = stream_lines(http, wall, "stall", timeout=0.5)
    assert isinstance(error, httpx.ReadTimeout)
    assert content_of(lines) == wall_text(3)
    assert wall.attempts[-1].outcome == "stall:3"


def test_stall_with_delay_resumes(http: httpx.Client, wall: FaultWall, monkeypatch: pytest.MonkeyPatch) -> None:
    stalls: list[tuple[int, float | None]] = []  # (content chunks sent so far, the stall's length)
    wait_for_peer = lifeline.testing.wall._wait_for_peer

    async def recorded(reader: asyncio.StreamReader, timeout: float | None) -> bool:
        stalls.append((len(wall_writes), timeout))
        return await wait_for_peer(reader, timeout)

    wall_writes: list[bytes] = []
    event = lifeline.testing.wall._event

    async def counted(writer: asyncio.StreamWriter, payload: dict[str, Any]) -> None:
        if any(c.get("delta", {}).get("content") for c in payload.get("choices", ())):
            wall_writes.append(b"")
        await event(writer, payload)

    monkeypatch.setattr(lifeline.testing.wall, "_wait_for_peer", recorded)
    monkeypatch.setattr(lifeline.testing.wall, "_event", counted)
    lines, error = stream_lines(http, wall, "stall?after=2&delay=0.2")
    assert error is None
    assert stalls == [(2, 0.2)]  # silent for 0.2 s after the second content chunk, then on
    assert content_of(lines) == wall_text(12)
    assert lines[-1] == "data: [DONE]"


def test_slow_first_token(http: httpx.Client, wall: FaultWall, monkeypatch: pytest.MonkeyPatch) -> None:
    # The wall's delay is held open by the test: the role chunk must arrive while the wall still waits.
    delays: list[float] = []
    release = threading.Event()
    real_sleep = asyncio.sleep

    async def held(delay: float, result: Any = None) -> Any:
        delays.append(delay)
        while not release.is_set():
            await real_sleep(0.005)
        return result

    monkeypatch.setattr(asyncio, "sleep", held)
    url = f"{wall.base_url}/chat/completions"
    body = {"model": "slow_first_token?delay=0.3", "messages": MESSAGES, "stream": True}
    lines: list[str] = []
    with http.stream("POST", url, json=body, timeout=30) as response:
        for line in response.iter_lines():
            if not line:
                continue
            if not lines:
                assert delays == [0.3] and not release.is_set()  # the role chunk came before the wait ended
                release.set()
            lines.append(line)
    assert '"role":"assistant"' in lines[0]
    assert content_of(lines) == wall_text(12)


def test_malformed_injects_one_broken_event(http: httpx.Client, wall: FaultWall) -> None:
    lines, error = stream_lines(http, wall, "malformed")
    assert error is None
    broken = [line for line in lines if line.startswith("data: {") and "broken" in line]
    assert len(broken) == 1
    assert lines.index(broken[0]) == 3  # role chunk plus two tokens before it
    assert content_of(lines) == wall_text(12)
    assert lines[-1] == "data: [DONE]"


def test_no_done(http: httpx.Client, wall: FaultWall) -> None:
    lines, error = stream_lines(http, wall, "no_done", stream_options={"include_usage": True})
    assert error is None
    assert "data: [DONE]" not in lines
    payloads = chunk_payloads(lines)
    assert payloads[-1]["usage"]["completion_tokens"] == 12
    assert payloads[-2]["choices"][0]["finish_reason"] == "stop"


def test_no_usage(http: httpx.Client, wall: FaultWall) -> None:
    lines, _ = stream_lines(http, wall, "no_usage", stream_options={"include_usage": True})
    assert all(p.get("usage") is None for p in chunk_payloads(lines))
    assert lines[-1] == "data: [DONE]"
    assert "usage" not in chat(http, wall, "no_usage").json()


def test_error_event(http: httpx.Client, wall: FaultWall) -> None:
    lines, error = stream_lines(http, wall, "error_event")
    assert error is None  # the chunked body still ends properly
    assert "data: [DONE]" not in lines
    assert content_of(lines) == wall_text(2)
    assert chunk_payloads(lines)[-1]["error"]["code"] == "internal_error"


# -- tool calls ------------------------------------------------------------------------------------

TOOLS: list[ChatCompletionToolParam] = [
    {"type": "function", "function": {"name": "lookup_city", "parameters": {"type": "object"}}}
]


def test_tool_call_non_stream_through_sdk(sdk: OpenAI) -> None:
    completion = sdk.chat.completions.create(model="tool_call", messages=SDK_MESSAGES, tools=TOOLS)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == "lookup_city"
    assert json.loads(call.function.arguments) == {"city": "Paris"}


def test_tool_call_stream_through_sdk(sdk: OpenAI) -> None:
    stream = sdk.chat.completions.create(model="tool_call", messages=SDK_MESSAGES, stream=True)
    names: list[str] = []
    arguments = ""
    finish = None
    argument_chunks = 0
    for chunk in stream:
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for delta in choice.delta.tool_calls or []:
            assert delta.index == 0
            if delta.function and delta.function.name:
                names.append(delta.function.name)
            if delta.function and delta.function.arguments:
                arguments += delta.function.arguments
                argument_chunks += 1
    assert names == ["get_weather"]
    assert json.loads(arguments) == {"city": "Paris"}
    assert argument_chunks >= 2
    assert finish == "tool_calls"


# -- recording and control -------------------------------------------------------------------------


def test_attempts_are_recorded(http: httpx.Client, wall: FaultWall) -> None:
    before = time.time()
    chat(http, wall, "ok", temperature=0.5)
    after = time.time()
    chat(http, wall, "status?code=500")
    stream_lines(http, wall, "ok")
    attempts = wall.attempts
    assert len(attempts) == 3
    assert [a.at for a in attempts] == sorted(a.at for a in attempts)
    assert attempts[0].at < attempts[2].at
    assert attempts[0].body == {"model": "ok", "messages": MESSAGES, "temperature": 0.5}
    assert attempts[0].headers["content-type"] == "application/json"
    assert [a.outcome for a in attempts] == ["ok", "status:500", "ok"]
    assert [a.stream for a in attempts] == [False, False, True]
    assert all(a.method == "POST" and a.path == "/v1/chat/completions" for a in attempts)
    assert len(wall.attempts_for("ok")) == 2
    assert before <= attempts[0].wall_time <= after  # stamped when the wall received it


def test_attempts_endpoint_redacts_and_reset_endpoint_clears(http: httpx.Client, wall: FaultWall) -> None:
    http.post(
        f"{wall.base_url}/chat/completions",
        json={"model": "ok", "messages": MESSAGES},
        headers={"Authorization": "Bearer sk-secret"},
    )
    listed = http.get(f"{wall.url}/_wall/attempts").json()
    assert len(listed) == 1
    assert listed[0]["headers"]["authorization"] == "***"
    assert listed[0]["model"] == "ok"
    assert http.post(f"{wall.url}/_wall/reset").json() == {"ok": True}
    assert wall.attempts == []


def test_header_overrides_behaviour(http: httpx.Client, wall: FaultWall) -> None:
    response = http.post(
        f"{wall.base_url}/chat/completions",
        json={"model": "gpt-4o", "messages": MESSAGES},
        headers={"x-wall-behaviour": "status?code=502"},
    )
    assert response.status_code == 502
    attempt = wall.attempts[-1]
    assert (attempt.model, attempt.behaviour) == ("gpt-4o", "status")
    assert chat(http, wall, "gpt-4o").json()["model"] == "gpt-4o"


def test_reset_clears_attempts_and_counters(http: httpx.Client, wall: FaultWall) -> None:
    assert chat(http, wall, "fail_once").status_code == 500
    assert chat(http, wall, "flap?down=30").status_code == 503
    wall.reset()
    assert wall.attempts == []
    assert chat(http, wall, "fail_once").status_code == 500


# -- plain HTTP ------------------------------------------------------------------------------------


def test_keep_alive_with_httpx(wall: FaultWall) -> None:
    ports: set[int] = set()
    with httpx.Client(timeout=2.0) as client:
        for _ in range(3):
            response = chat(client, wall, "ok")
            assert response.status_code == 200
            ports.add(response.extensions["network_stream"].get_extra_info("client_addr")[1])
    assert len(ports) == 1


def test_keep_alive_and_connection_close_on_raw_socket(wall: FaultWall) -> None:
    body = json.dumps({"model": "ok", "messages": MESSAGES}).encode()
    with socket.create_connection(("127.0.0.1", wall.port), timeout=2) as sock, sock.makefile("rb") as stream:
        sock.sendall(raw_request("POST", "/v1/chat/completions", body))
        status, headers, first = read_raw_response(stream)
        assert (status, headers["connection"]) == (200, "keep-alive")
        assert json.loads(first)["choices"][0]["message"]["content"] == wall_text(12)
        sock.sendall(raw_request("POST", "/v1/chat/completions", body, "Connection: close\r\n"))
        status, headers, _ = read_raw_response(stream)
        assert (status, headers["connection"]) == (200, "close")
        assert stream.read() == b""


def test_a_post_without_content_length_has_no_body(wall: FaultWall) -> None:
    """RFC 9112: no Content-Length and no Transfer-Encoding is an empty body. `curl -X POST …/_wall/reset`
    sends just that (it was a 411); a chat request without a body is the client's 400."""
    with socket.create_connection(("127.0.0.1", wall.port), timeout=2) as sock, sock.makefile("rb") as stream:
        sock.sendall(raw_request("POST", "/_wall/reset", None))
        reset, _, _ = read_raw_response(stream)
        sock.sendall(raw_request("POST", "/v1/chat/completions", None))
        status, _, body = read_raw_response(stream)
    assert reset == 200
    assert status == 400 and "error" in json.loads(body)


def test_invalid_json_unknown_path_and_models(http: httpx.Client, wall: FaultWall) -> None:
    response = http.post(
        f"{wall.base_url}/chat/completions", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert wall.attempts[-1].outcome == "status:400"

    missing = http.get(f"{wall.base_url}/embeddings")
    assert missing.status_code == 404
    assert set(missing.json()["error"]) == {"message", "type", "param", "code"}

    models = http.get(f"{wall.base_url}/models").json()
    assert models["object"] == "list"
    assert {"ok", "reset", "hang", "tool_call"} <= {m["id"] for m in models["data"]}


# -- asyncio use -----------------------------------------------------------------------------------


def test_async_start_stop_and_serve_forever() -> None:
    async def scenario() -> None:
        async with FaultWall() as wall, httpx.AsyncClient(timeout=2.0) as client:
            response = await client.post(
                f"{wall.base_url}/chat/completions", json={"model": "ok", "messages": MESSAGES}
            )
            assert response.json()["choices"][0]["message"]["content"] == wall_text(12)

        ready: asyncio.Future[FaultWall] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(serve_forever("127.0.0.1", 0, on_ready=ready.set_result))
        served = await asyncio.wait_for(ready, 2)
        async with httpx.AsyncClient(timeout=2.0) as client:
            assert (await client.get(f"{served.base_url}/models")).status_code == 200
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())


# -- the eval's answer models: scripted and judge ---------------------------------------------------


def _said(http: httpx.Client, wall: FaultWall, model: str, text: str, **extra: Any) -> dict[str, Any]:
    reply = chat(http, wall, model, messages=[{"role": "user", "content": text}], **extra)
    assert reply.status_code == 200
    data: dict[str, Any] = reply.json()
    return data


def test_scripted_says_what_it_is_told_and_breaks_every_nth_json_answer(http: httpx.Client, wall: FaultWall) -> None:
    plain = _said(http, wall, "scripted", "Capital? SAY: Paris is the capital.")
    assert plain["choices"][0]["message"]["content"] == "Paris is the capital."
    assert plain["usage"]["completion_tokens"] == 4
    assert _said(http, wall, "scripted", "no marker")["choices"][0]["message"]["content"] == wall_text(12)
    json_format = {"response_format": {"type": "json_object"}}
    answers = [_said(http, wall, "scripted?json_break=3", 'SAY: {"a": 1}', **json_format) for _ in range(6)]
    texts = [a["choices"][0]["message"]["content"] for a in answers]
    assert texts == ['{"a": 1}', '{"a": 1}', '{"a": 1', '{"a": 1}', '{"a": 1}', '{"a": 1']
    # a text answer does not count towards the share
    assert _said(http, wall, "scripted?json_break=1", 'SAY: {"a": 1}')["choices"][0]["message"]["content"] == '{"a": 1}'


def test_scripted_calls_the_first_offered_tool_unless_it_never_does(http: httpx.Client, wall: FaultWall) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    called = _said(http, wall, "scripted", "Weather?", tools=tools)["choices"][0]
    assert called["finish_reason"] == "tool_calls"
    assert called["message"]["tool_calls"][0]["function"]["name"] == "lookup"
    words = _said(http, wall, "scripted?tools=never", "Weather?", tools=tools)["choices"][0]
    assert words["finish_reason"] == "stop" and "tool_calls" not in words["message"]


def test_scripted_with_tools_once_answers_after_the_tool_result(http: httpx.Client, wall: FaultWall) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    asked = [{"role": "user", "content": "Weather? SAY: Sunny."}]
    first = chat(http, wall, "scripted?tools=once", messages=asked, tools=tools).json()["choices"][0]
    assert first["finish_reason"] == "tool_calls"
    call = first["message"]["tool_calls"][0]
    answered = [*asked, first["message"], {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}]
    second = chat(http, wall, "scripted?tools=once", messages=answered, tools=tools).json()["choices"][0]
    assert second["finish_reason"] == "stop" and second["message"]["content"] == "Sunny."


@pytest.mark.parametrize(("prefer", "verdict"), [("longer", "B"), ("shorter", "A"), ("first", "A"), ("none", "TIE")])
def test_judge_picks_by_its_preference(http: httpx.Client, wall: FaultWall, prefer: str, verdict: str) -> None:
    prompt = "<answer_a>\nshort\n</answer_a>\n<answer_b>\na longer answer\n</answer_b>"
    text = _said(http, wall, f"judge?prefer={prefer}", prompt)["choices"][0]["message"]["content"]
    assert text.endswith(f"VERDICT: {verdict}")


def test_scripted_streams_the_same_answer(http: httpx.Client, wall: FaultWall) -> None:
    messages = [{"role": "user", "content": "SAY: Paris it is."}]
    lines, error = stream_lines(http, wall, "scripted", messages=messages, stream_options={"include_usage": True})
    assert error is None and lines[-1] == "data: [DONE]"
    assert content_of(lines) == "Paris it is."
    payloads = chunk_payloads(lines)
    assert payloads[-1]["usage"]["completion_tokens"] == 3
    assert any(p["choices"] and p["choices"][0]["finish_reason"] == "stop" for p in payloads)
