"""Test doubles for Lifeline: the fault wall, an OpenAI-compatible server that misbehaves on purpose.

See ``behaviours`` for the spec language chosen through the ``model`` field and ``wall`` for the server;
``anthropic_face`` and ``gemini_face`` are the same wall speaking Anthropic's and Gemini's APIs.
"""

from lifeline.testing.anthropic_face import AnthropicFace
from lifeline.testing.behaviours import WALL_WORDS, Behaviour, parse_behaviour, wall_text
from lifeline.testing.gemini_face import GeminiFace
from lifeline.testing.wall import Attempt, FaultWall, serve_forever

__all__ = [
    "WALL_WORDS",
    "AnthropicFace",
    "Attempt",
    "Behaviour",
    "FaultWall",
    "GeminiFace",
    "parse_behaviour",
    "serve_forever",
    "wall_text",
]
