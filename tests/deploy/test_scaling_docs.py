"""docs/scaling.md: every Lifeline config it shows loads with Lifeline's loader (with a value for every
variable it reads), the engines' endpoints are the ones the docs give, and the room for the workers section
is kept."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import pytest
import yaml

from lifeline.config.load import parse_config
from tests.deploy.support import ROOT

SCALING = ROOT / "docs" / "scaling.md"


class _AnyVariable(Mapping[str, str]):
    """An environment in which every variable is set (the URLs to URLs): the examples' structure is what is
    checked."""

    URLS: ClassVar[dict[str, str]] = {
        "DATABASE_URL": "postgresql://lifeline:secret@postgres:5432/lifeline",
        "REDIS_URL": "redis://redis:6379/0",
    }

    def __getitem__(self, name: str) -> str:
        return self.URLS.get(name, f"value-of-{name.lower()}")

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _yaml_blocks() -> list[Any]:
    text = SCALING.read_text(encoding="utf-8")
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", text, flags=re.S)]


def _configs() -> list[dict[str, Any]]:
    return [block for block in _yaml_blocks() if isinstance(block, dict) and "aliases" in block]


def test_the_page_shows_a_config_for_every_engine_and_the_hardware_section() -> None:
    configs = _configs()
    base_urls = [t.get("base_url", "") for c in configs for t in c.get("targets", {}).values()]
    assert any(u.endswith(":8000/v1") and "ray" not in u for u in base_urls)  # vLLM
    assert any(u.endswith(":30000/v1") for u in base_urls)  # SGLang
    assert any(u.endswith("/openai/v1") for u in base_urls)  # KServe's prefix
    assert any("ray" in u and u.endswith(":8000/v1") for u in base_urls)  # Ray Serve
    assert any(t.get("n_gpu_layers") == -1 for c in configs for t in c.get("targets", {}).values())


@pytest.mark.parametrize("index", range(6))
def test_every_config_on_the_page_loads(index: int) -> None:
    configs = _configs()
    assert len(configs) == 6
    config = parse_config(configs[index], _AnyVariable())
    assert config.aliases


def test_the_kserve_example_is_an_inference_service_named_like_the_target_model() -> None:
    (service,) = [b for b in _yaml_blocks() if isinstance(b, dict) and b.get("kind") == "InferenceService"]
    args = service["spec"]["predictor"]["model"]["args"]
    (kserve,) = [c["targets"]["kserve"] for c in _configs() if "kserve" in c.get("targets", {})]
    assert f"--model_name={kserve['model']}" in args


def test_the_workers_section_describes_workers_and_their_engine_process() -> None:
    text = SCALING.read_text(encoding="utf-8")
    assert "## Workers: every core of one machine" in text and "<!-- WORKERS:" not in text
    assert "--workers auto" in text and "### The embedded model: one engine process" in text
