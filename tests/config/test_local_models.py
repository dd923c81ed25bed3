"""The catalogue's local models (`lifeline models local` / `pull`): facts with sources. Every pullable
row names a hub file and its size, a licence from the known set, and each quality figure the page it was
read from; a row whose file facts were not read on the repository's page says so."""

from __future__ import annotations

from pathlib import Path

from lifeline.config.catalogue import CATALOGUE, local_models
from lifeline.providers.llamacpp import resolve_model

#: the licences of the models recommended for the embedded engine: OSI licences, or the publisher's terms
KNOWN_LICENCES = {"apache-2.0", "mit", "gemma"}
#: what the issue asks for: Qwen3 0.6B/1.7B and Gemma 3 270M/1B, beside the shipped SmolLM2
REQUIRED = {"qwen3-0.6b", "qwen3-1.7b", "gemma-3-270m-it", "gemma-3-1b-it", "smollm2-135m-instruct"}


def _cache(repo_id: str, filename: str) -> str:
    return f"/cache/{repo_id}/{filename}"


def test_the_recommended_models_are_there_and_the_shipped_one_first() -> None:
    ids = [m.id for m in local_models()]
    assert set(ids) >= REQUIRED
    assert ids[0] == "smollm2-135m-instruct" and CATALOGUE[ids[0]].embedded == "builtin:smollm2"


def test_every_local_row_is_a_sourced_fact() -> None:
    for model in local_models():
        assert model.open_weights and model.licence in KNOWN_LICENCES, model.id
        assert model.source.startswith("https://") and model.parameters, model.id
        for figure in model.quality:
            assert figure.source.startswith("https://"), (model.id, figure.benchmark)
            assert 0 < figure.score <= 100 and figure.setting.strip(), (model.id, figure.benchmark)
        if model.local is None:
            continue
        local = model.local
        assert local.size_mb > 0 and local.source.startswith("https://"), model.id
        assert local.file.lower().endswith(".gguf") and local.quantisation.strip(), model.id
        assert local.verified or local.note, f"{model.id}: an unverified file row must say what was not read"
        # the spec the engine is given resolves through the hub fetch to exactly that repository and file
        path, _ = resolve_model(local.spec, _cache)
        assert path == Path("/cache", local.repo, local.file), model.id


def test_the_licences_are_the_publishers() -> None:
    for model in local_models():
        family = model.id.split("-")[0]
        expected = {"qwen3": "apache-2.0", "gemma": "gemma", "smollm2": "apache-2.0"}[family]
        assert model.licence == expected, model.id
