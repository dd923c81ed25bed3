"""Run Lifeline's fault wall as the benchmark's upstream: uvloop when available, a short attempt log
(the benchmark never reads it, and a long one would only grow the wall's memory), and one line on stdout
(`READY <port>`) once it listens.

    python bench/wall_server.py --port 0
"""

from __future__ import annotations

import argparse
import sys

from lifeline.testing.wall import FaultWall, serve_forever


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--keep-attempts", type=int, default=1000)
    args = parser.parse_args()

    def ready(wall: FaultWall) -> None:
        print(f"READY {wall.port}", flush=True)

    coro = serve_forever(args.host, args.port, on_ready=ready, keep_attempts=args.keep_attempts)
    try:
        import uvloop
    except ImportError:
        import asyncio

        asyncio.run(coro)
    else:
        uvloop.run(coro)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
