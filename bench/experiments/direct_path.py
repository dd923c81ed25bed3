"""The hot route's two framings side by side in one process: served directly from the HTTP/1.1 protocol
(server/direct.py) and through ASGI (the same request target with a query string, which the protocol leaves to
uvicorn's cycle and the app), over an in-process target that answers at once, so that what differs is only the
serving of the request.

    PYTHONPATH=src python bench/experiments/direct_path.py --requests 2000 --blocks 6

One process holds the gateway and a client on a keep-alive connection, requests one at a time; blocks of
`--requests` alternate between the two framings (reversed every other block), and each block's process CPU
(user + system) per request is kept. The client's share is the same in both, so the difference between the
framings is the server's. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import uvicorn
from uvicorn.server import ServerState

from lifeline.config import parse_config
from lifeline.providers.base import ChatCall, Chunk, Completion, inspect_chunk
from lifeline.providers.registry import ProviderRegistry
from lifeline.server.app import create_app
from lifeline.server.serving import uvicorn_options

USAGE = {"prompt_tokens": 7, "completion_tokens": 8, "total_tokens": 15}


class Instant:
    """A target that answers at once: a whole answer, or eight content chunks and a usage chunk."""

    supports_n = True
    context_window: int | None = None

    def __init__(self, name: str, model: str) -> None:
        self.name, self.model = name, model

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def complete(self, call: ChatCall) -> Completion:
        body = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": self.model, "usage": USAGE}
        body["choices"] = [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}]
        return Completion(body=body, model=self.model, usage=USAGE)

    async def stream(self, call: ChatCall) -> AsyncIterator[Chunk]:
        for i in range(8):
            await asyncio.sleep(0)  # one upstream read per chunk
            yield _chunk(self.model, {"content": f"w{i} "})
        yield _chunk(self.model, {}, "stop")


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> Chunk:
    data = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model}
    data["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
    return inspect_chunk(data, orjson.dumps(data))


async def main(requests: int, blocks: int) -> None:
    config = parse_config(
        {
            "targets": {"t": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}},
            "aliases": {"chat": {"targets": ["t"]}},
            "server": {"max_requests_per_connection": 1_000_000},
        },
        env={},
    )
    registry = ProviderRegistry()
    registry.register("openai", lambda name, target: Instant(name, target.model))
    app = create_app(config, registry)
    await app.state.gateway.start()
    options = uvicorn.Config(app, lifespan="off", **uvicorn_options(config))
    options.load()
    state = ServerState()
    server = await asyncio.get_running_loop().create_server(
        lambda: options.http_protocol_class(config=options, server_state=state, app_state={}), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]

    async def block(target: str, stream: bool) -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = orjson.dumps({"model": "chat", "messages": [{"role": "user", "content": "Hi"}], "stream": stream})
        request = (
            f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        started = time.process_time()
        for _ in range(requests):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if stream:
                await reader.readuntil(b"\r\n0\r\n\r\n")
            else:
                length = head.split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0]
                await reader.readexactly(int(length))
        spent = time.process_time() - started
        writer.close()
        return spent / requests * 1e6

    for stream in (False, True):
        await block("/v1/chat/completions", stream)  # warm-up
        seen: dict[str, list[float]] = {"direct": [], "asgi": []}
        for i in range(blocks):
            order = [("direct", "/v1/chat/completions"), ("asgi", "/v1/chat/completions?via=asgi")]
            for name, target in order if i % 2 == 0 else order[::-1]:
                seen[name].append(await block(target, stream))
        direct, asgi = statistics.median(seen["direct"]), statistics.median(seen["asgi"])
        print(
            f"{'stream' if stream else 'json'}: CPU µs/request (server + client), median of {blocks} blocks of "
            f"{requests}: direct {direct:.0f}, asgi {asgi:.0f} ({(direct / asgi - 1) * 100:+.0f}%); "
            f"blocks direct {[round(x) for x in seen['direct']]}, asgi {[round(x) for x in seen['asgi']]}"
        )
    server.close()
    await app.state.gateway.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--blocks", type=int, default=6)
    args = parser.parse_args()
    import uvloop

    uvloop.run(main(args.requests, args.blocks))
