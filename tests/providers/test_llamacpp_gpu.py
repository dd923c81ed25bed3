"""`n_gpu_layers` reaches llama.cpp: on a build with a GPU backend it offloads that many layers; on this
CPU build the engine loads with the setting and answers on the CPU all the same."""

from __future__ import annotations

import asyncio

import pytest

from lifeline.config.load import parse_config
from lifeline.config.schema import LlamaCppTarget
from lifeline.errors import ConfigError
from lifeline.providers.llamacpp import LlamaCppProvider
from tests.providers.support import make_call


def _loaded_layers_and_answer(config: LlamaCppTarget) -> tuple[int, str]:
    async def run() -> tuple[int, str]:
        provider = LlamaCppProvider("local", config)
        await provider.start()
        try:
            layers = provider._llm.model_params.n_gpu_layers
            call = make_call([{"role": "user", "content": "Say hi."}], temperature=0, max_tokens=4)
            completion = await provider.complete(call)
            return layers, completion.body["choices"][0]["message"]["content"]
        finally:
            await provider.close()

    return asyncio.run(run())


@pytest.mark.embedded
def test_the_gpu_layers_setting_reaches_the_engine() -> None:
    default = LlamaCppTarget(kind="llamacpp", n_ctx=256, n_threads=2)
    offloaded = LlamaCppTarget(kind="llamacpp", n_ctx=256, n_threads=2, n_gpu_layers=7)
    assert _loaded_layers_and_answer(default)[0] == 0
    layers, answer = _loaded_layers_and_answer(offloaded)
    assert layers == 7 and answer


def test_a_negative_layer_count_below_all_is_refused() -> None:
    data = {"targets": {"local": {"kind": "llamacpp", "n_gpu_layers": -2}}, "aliases": {"a": {"targets": ["local"]}}}
    with pytest.raises(ConfigError, match=r"targets\.local\.llamacpp\.n_gpu_layers"):
        parse_config(data, {})
    data["targets"]["local"]["n_gpu_layers"] = -1
    assert parse_config(data, {}).targets["local"].n_gpu_layers == -1  # type: ignore[union-attr]
