"""Which provider class serves which target kind, and building every target of a config.

Built-in kinds register here through the same table a third-party kind would use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lifeline.config.schema import Config
from lifeline.providers.base import Provider

ProviderFactory = Callable[[str, Any], Provider]


def _openai(name: str, config: Any) -> Provider:
    from lifeline.providers.openai_compat import OpenAICompatProvider

    return OpenAICompatProvider(name, config)


def _anthropic(name: str, config: Any) -> Provider:
    from lifeline.providers.anthropic import AnthropicProvider

    return AnthropicProvider(name, config)


def _gemini(name: str, config: Any) -> Provider:
    from lifeline.providers.gemini import GeminiProvider

    return GeminiProvider(name, config)


def _llamacpp(name: str, config: Any) -> Provider:
    if config.engine_socket is not None:  # a worker: the engine process (one per machine) has the model
        from lifeline.providers.engine_client import EngineClientProvider

        return EngineClientProvider(name, config)
    # Imported lazily: a gateway with only hosted targets never loads llama.cpp.
    from lifeline.providers.llamacpp import LlamaCppProvider

    return LlamaCppProvider(name, config)


class ProviderRegistry:
    def __init__(self) -> None:
        self._factories: dict[str, ProviderFactory] = {}

    def register(self, kind: str, factory: ProviderFactory) -> None:
        self._factories[kind] = factory

    def build(self, config: Config) -> dict[str, Provider]:
        return {name: self._factories[target.kind](name, target) for name, target in config.targets.items()}


def default_registry() -> ProviderRegistry:
    registry = ProviderRegistry()
    registry.register("openai", _openai)
    registry.register("anthropic", _anthropic)
    registry.register("gemini", _gemini)
    registry.register("llamacpp", _llamacpp)
    return registry
