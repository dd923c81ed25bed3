"""`lifeline serve` on a chosen event loop, for a side-by-side measurement (bench/experiments/asgi_ledger.py).

    python bench/experiments/serve_loop.py --loop asyncio --config bench/out/x.yaml

`lifeline serve` leaves uvicorn's `loop` at "auto", which is uvloop whenever it is installed (it is, with
`uvicorn[standard]` on Linux). `--loop asyncio` makes uvicorn use the standard library's loop instead;
`--loop auto` is `lifeline serve` unchanged. Everything else is Lifeline's own code, unmodified.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import uvicorn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto")
    parser.add_argument("--config", required=True)
    args = parser.parse_args()

    config_init = uvicorn.Config.__init__

    def with_loop(self: uvicorn.Config, *a: Any, **kw: Any) -> None:
        kw.setdefault("loop", args.loop)
        config_init(self, *a, **kw)

    uvicorn.Config.__init__ = with_loop  # type: ignore[method-assign]
    from lifeline.cli.main import main as lifeline_main

    sys.argv = ["lifeline", "serve", "--config", args.config]
    lifeline_main()


if __name__ == "__main__":
    main()
