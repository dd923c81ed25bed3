"""The real embedded model (SmolLM2-135M through llama.cpp) as one candidate on a couple of items: the eval
gets its answers through the gateway like any target's, and checks them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lifeline.eval import EvalPlan, ResultsFile, items_from, run_eval, summarise
from lifeline.testing import FaultWall
from tests.eval.conftest import eval_config

pytestmark = pytest.mark.embedded


def test_the_embedded_model_is_evaluated_as_a_candidate(wall: FaultWall, tmp_path: Path) -> None:
    cfg = eval_config(wall, local={"kind": "llamacpp", "model": "builtin:smollm2", "n_ctx": 512})

    def item(name: str, text: str) -> dict[str, Any]:
        return {"id": name, "request": {"messages": [{"role": "user", "content": text}], "max_tokens": 8}}

    items = items_from([item("greet", "Say hello. SAY: Hello!"), item("sky", "What colour is the sky?")], "embedded")
    done = run_eval(cfg, EvalPlan(("local",), "good", concurrency=1), items, ResultsFile(tmp_path / "r.jsonl"))
    figures = summarise(done, cfg.eval)
    local = figures["candidates"][0]
    assert local["name"] == "local" and local["items"] == 2
    assert all(a.target == "local" for a in done.answers if a.name == "local")
    assert local["answered"] == 2  # the tiny model says something to both
    assert local["checks"]["answered"]["passed"] == 2
    assert local["cost"]["total_usd"] == 0.0  # the embedded model costs nothing
    assert local["latency_ms"]["n"] == 2
