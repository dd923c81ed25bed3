"""Experiment: ``lifeline serve`` unchanged, except that every `openai` target gets the lean transport.

    python bench/experiments/serve_lean.py --config lifeline.yaml

Lifeline's provider already takes an httpx transport (``OpenAICompatProvider(..., transport=...)``); this
wraps its ``start`` to hand it ``LeanTransport`` when none was given, then runs the normal CLI.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lean_transport import LeanTransport

from lifeline.cli.main import main
from lifeline.providers.openai_compat import OpenAICompatProvider

_original_start = OpenAICompatProvider.start


async def _start(self: OpenAICompatProvider, *args: Any, **kwargs: Any) -> None:
    if self._transport is None:
        self._transport = LeanTransport()
    await _original_start(self, *args, **kwargs)


OpenAICompatProvider.start = _start  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.argv = ["lifeline", "serve", *sys.argv[1:]]
    main()
