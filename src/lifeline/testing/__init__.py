"""Test doubles for Lifeline: the fault wall, an OpenAI-compatible server that misbehaves on purpose.

See ``behaviours`` for the spec language chosen through the ``model`` field and ``wall`` for the server.
"""

from lifeline.testing.behaviours import WALL_WORDS, Behaviour, parse_behaviour, wall_text
from lifeline.testing.wall import Attempt, FaultWall, serve_forever

__all__ = ["WALL_WORDS", "Attempt", "Behaviour", "FaultWall", "parse_behaviour", "serve_forever", "wall_text"]
