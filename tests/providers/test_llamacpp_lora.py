"""LoRA on the embedded engine: the tests write a small adapter for the shipped SmolLM2 themselves (the
`gguf` package) — low-rank updates to the feed-forward output of its last two blocks — and check that it
changes greedy output, the same way every time, that `lora_scale: 0` leaves the model as it was, and that
a path that is not a usable adapter stops `serve` with one line."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import yaml

from lifeline.config.schema import LlamaCppTarget
from lifeline.errors import ModelResolutionError
from lifeline.providers.ggufmeta import lora_misfit
from lifeline.providers.llamacpp import LlamaCppProvider, resolve_model
from tests.providers.support import make_call

#: SmolLM2-135M: 30 blocks, 576 wide, feed-forward 1536 wide
N_EMBD, N_FF, LAST = 576, 1536, 29


def write_adapter(path: Path, *, arch: str = "llama", width: int = N_FF, kind: str = "adapter") -> Path:
    """A rank-4 LoRA on blk.28/29.ffn_down.weight. GGUF lists shapes innermost first, so A is
    (rank, inputs) and B (outputs, rank) here; a seeded generator makes it the same adapter every time."""
    rng = np.random.default_rng(7)
    rank = 4
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_type(kind)
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(rank))
    for block in (LAST - 1, LAST):
        name = f"blk.{block}.ffn_down.weight"
        writer.add_tensor(f"{name}.lora_a", (rng.standard_normal((rank, width)) * 0.5).astype(np.float32))
        writer.add_tensor(f"{name}.lora_b", (rng.standard_normal((N_EMBD, rank)) * 0.5).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def target(**extra: Any) -> LlamaCppTarget:
    return LlamaCppTarget(kind="llamacpp", n_ctx=256, n_threads=2, **extra)


def greedy_answers(config: LlamaCppTarget, times: int = 1) -> list[str]:
    """Load the model (with its adapter, if any), answer one prompt greedily `times` times, unload."""

    async def run() -> list[str]:
        provider = LlamaCppProvider("local", config)
        await provider.start()
        try:
            answers = []
            for _ in range(times):
                call = make_call([{"role": "user", "content": "Say hi."}], temperature=0, max_tokens=8)
                completion = await provider.complete(call)
                answers.append(completion.body["choices"][0]["message"]["content"])
            return answers
        finally:
            await provider.close()

    return asyncio.run(run())


@pytest.mark.embedded
def test_an_adapter_changes_the_output_the_same_way_every_time(tmp_path: Path) -> None:
    adapter = str(write_adapter(tmp_path / "adapter.gguf"))
    [base] = greedy_answers(target())
    adapted = greedy_answers(target(lora_path=adapter), times=2)
    [switched_off] = greedy_answers(target(lora_path=adapter, lora_scale=0.0))
    assert base and adapted[0]
    assert adapted[0] != base
    assert adapted[1] == adapted[0]
    assert switched_off == base


def test_an_unusable_adapter_path_is_refused_before_any_model_loads(tmp_path: Path) -> None:
    model, _ = resolve_model("builtin:smollm2")
    text = tmp_path / "notes.gguf"
    text.write_text("not a model")
    cases = {
        str(tmp_path / "absent.gguf"): "no LoRA adapter at",
        str(text): "is not a GGUF file",
        str(model): "is a GGUF file but not a LoRA adapter",
        str(write_adapter(tmp_path / "gemma.gguf", arch="gemma3")): "adapts gemma3 models, and .* is llama",
        str(write_adapter(tmp_path / "wide.gguf", width=N_FF * 2)): r"does not fit .*blk\.28\.ffn_down\.weight is",
    }
    for path, says in cases.items():
        with pytest.raises(ModelResolutionError, match=f"^target local: lora_path: .*{says}"):
            LlamaCppProvider("local", target(lora_path=path))


def test_a_bad_adapter_path_stops_serve_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "absent.gguf"
    config = tmp_path / "lifeline.yaml"
    data = {
        "accounting": {"data_dir": str(tmp_path)},
        "targets": {"local": {"kind": "llamacpp", "lora_path": str(missing)}},
        "aliases": {"chat": {"targets": ["local"]}},
    }
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "lifeline.cli.main", "serve", "--config", str(config), "--port", "0"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"error: target local: lora_path: no LoRA adapter at {missing}"]
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("adapter", "says"),
    [
        ({}, "adapts no tensor"),
        ({"blk.0.ffn_down.weight.lora_a": (N_FF, 4)}, "has no blk.0.ffn_down.weight.lora_b"),
        ({"blk.99.ffn_down.weight.lora_a": (N_FF, 4), "blk.99.ffn_down.weight.lora_b": (4, N_EMBD)}, "no tensor"),
        ({"blk.0.ffn_down.weight.lora_a": (N_EMBD, 4), "blk.0.ffn_down.weight.lora_b": (4, N_EMBD)}, "is [1536, 576]"),
        ({"blk.0.ffn_down.weight.lora_a": (N_FF, 4), "blk.0.ffn_down.weight.lora_b": (8, N_EMBD)}, "[1536, 4] and"),
        ({"output_norm.weight.lora_a": (N_EMBD, 4), "output_norm.weight.lora_b": (4, 1)}, "2-dimensional"),
    ],
)
def test_an_adapter_that_does_not_fit_says_which_tensor(adapter: dict[str, tuple[int, ...]], says: str) -> None:
    model = {"blk.0.ffn_down.weight": (N_FF, N_EMBD), "output_norm.weight": (N_EMBD,), "token_embd.weight": (N_EMBD, 9)}
    misfit = lora_misfit(adapter, model)
    assert misfit is not None and says in misfit


def test_adapters_that_fit_pass_the_check() -> None:
    model = {"blk.0.ffn_down.weight": (N_FF, N_EMBD), "token_embd.weight": (N_EMBD, 9)}
    ffn = {"blk.0.ffn_down.weight.lora_a": (N_FF, 4), "blk.0.ffn_down.weight.lora_b": (4, N_EMBD)}
    # the token embedding's A and B are the other way round (llama.cpp looks rows up in it)
    embedding = {"token_embd.weight.lora_a": (4, 9), "token_embd.weight.lora_b": (4, N_EMBD)}
    assert lora_misfit(ffn, model) is None and lora_misfit(embedding, model) is None
