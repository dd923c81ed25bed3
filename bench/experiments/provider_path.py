"""The CPU the providers' layer spends per upstream call and per streamed event, in one process, without the
server: how bench/sections/13-events.md measured its steps between the side-by-side runs.

    python bench/experiments/provider_path.py --src /tmp/before/src --src src [--calls 3000] [--repeat 5]

Each `--src` (a Lifeline `src` directory) runs in its own interpreter, in turn; each prints the lowest of
`--repeat` runs (CPU time of the process, so that other processes' load counts less than on the clock):

- `stream`: a 12-token OpenAI stream (the role chunk, 12 tokens, the finish with `[DONE]`; each its own read,
  the loop turned between reads) through `OpenAICompatProvider.stream` and the relay's `_event`, from an
  answer whose bytes are already there (no socket): the SSE reader, the timers, the chunk reader, the relay.
- `over loopback`: the same stream through the lean transport from a minimal upstream on loopback (another
  process, on another core when `taskset` is there), its events written at once (so read in one or a few reads).
- `whole`: non-streaming calls through `OpenAICompatProvider.complete` and the lean transport to a minimal
  keep-alive upstream on loopback (another process, on another core when `taskset` is there).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

UPSTREAM = r"""
import asyncio, sys
body = b'{"id":"x","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant",' \
       b'"content":"hello there"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,' \
       b'"total_tokens":5}}'
answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
def sse(data):
    event = b"data: " + data + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)
def delta(d, finish=b"null"):
    return (b'{"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":' + d +
            b',"finish_reason":' + finish + b'}]}')
stream = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
          + sse(delta(b'{"role":"assistant","content":""}'))
          + b"".join(sse(delta(b'{"content":" t%d"}' % i)) for i in range(12))
          + sse(delta(b"{}", b'"stop"')) + sse(b"[DONE]") + b"0\r\n\r\n")
class Upstream(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buf = transport, b""
    def data_received(self, data):
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, _, rest = self.buf.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if len(rest) < length:
                return
            self.buf = rest[length:]
            self.transport.write(stream if b'"stream":true' in rest[:length] else answer)
async def main():
    server = await asyncio.get_running_loop().create_server(Upstream, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
asyncio.run(main())
"""

MEASURE = r"""
import asyncio, sys, time
import orjson, uvloop
from lifeline.config.schema import OpenAITarget
from lifeline.protocol.parse import validate_chat_request
from lifeline.providers.base import ChatCall, Deadline
from lifeline.providers.openai_compat import OpenAICompatProvider
from lifeline.routing.streaming import Part, _event, _State

port, calls, repeat = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])

def call(stream):
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    return ChatCall(body=body, request=validate_chat_request(body), request_id="req-1", deadline=Deadline.after(60))

def chunk(delta, finish=None):
    return orjson.dumps({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1764561234,
                         "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

def sse(data):
    return b"data: " + data + b"\n\n"

PIECES = [sse(chunk({"role": "assistant", "content": ""}))] + [sse(chunk({"content": f" t{i}"})) for i in range(12)]
PIECES.append(sse(chunk({}, "stop")) + sse(b"[DONE]"))

class Pieces:
    # not an async generator, which the loop would close with a task of its own when left at [DONE]
    def __init__(self):
        self.left = iter(PIECES)
    def __aiter__(self):
        return self
    async def __anext__(self):
        await asyncio.sleep(0)
        for piece in self.left:
            return piece
        raise StopAsyncIteration

class Ready:
    # an answer whose bytes are there: the providers' own work per event, without a socket
    status, complete, headers = 200, True, {}
    def body(self):
        return Pieces()
    async def aclose(self):
        pass

async def streams(n):
    provider = OpenAICompatProvider("up", OpenAITarget.model_validate(
        {"kind": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "m"}), None)
    async def send(url, content, c, phase):
        return Ready()
    provider._send = send
    return await relayed(provider, n)

async def relayed(provider, n):
    # n streams through the provider and the relay's reading of each chunk; CPU us per stream
    c = call(True)
    async def one():
        state, part = _State(), Part("up")
        async for got in provider.stream(c):
            _event(state, got, part)
    for _ in range(200):
        await one()
    started = time.process_time()
    for _ in range(n):
        await one()
    return (time.process_time() - started) / n * 1e6

async def wholes(n):
    provider = OpenAICompatProvider("up", OpenAITarget.model_validate(
        {"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "model": "m"}), None)
    await provider.start()
    c = call(False)
    try:
        for _ in range(200):
            await provider.complete(c)
        started = time.process_time()
        for _ in range(n):
            await provider.complete(c)
        return (time.process_time() - started) / n * 1e6
    finally:
        await provider.close()

async def socket_streams(n):
    provider = OpenAICompatProvider("up", OpenAITarget.model_validate(
        {"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "model": "m"}), None)
    await provider.start()
    try:
        return await relayed(provider, n)
    finally:
        await provider.close()

s = min(uvloop.run(streams(calls)) for _ in range(repeat))
t = min(uvloop.run(socket_streams(calls)) for _ in range(repeat))
w = min(uvloop.run(wholes(calls)) for _ in range(repeat))
print(f"stream {s:.1f} us per 12-token stream ({s / 14:.2f} us per event); over loopback {t:.1f} us per stream; "
      f"whole {w:.1f} us per call")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", action="append", required=True, help="a Lifeline src directory (repeatable)")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    pin = ["taskset", "-c", "1"] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []
    upstream = subprocess.Popen([*pin, sys.executable, "-c", UPSTREAM], stdout=subprocess.PIPE, text=True)
    try:
        assert upstream.stdout is not None
        port = upstream.stdout.readline().strip()
        for round_ in range(args.rounds):
            for src in args.src if round_ % 2 == 0 else args.src[::-1]:
                env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())}
                cmd = [sys.executable, "-c", MEASURE, port, str(args.calls), str(args.repeat)]
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout.strip()
                print(f"round {round_} {src}: {out}", flush=True)
                time.sleep(0.1)
    finally:
        upstream.terminate()
        upstream.wait()


if __name__ == "__main__":
    main()
