"""Lifeline: an OpenAI-compatible gateway that keeps answering when a provider fails."""

__version__ = "0.1.0"
