"""The prompts a drill replays: a JSON Lines file, or a small built-in set.

Each line of the file is an object with either `messages` (an OpenAI chat conversation) or `prompt` (one
user turn as text). Other keys on a line (an `id`, a dataset's labels …) are ignored, so an existing eval or
fine-tuning file can be replayed as it is; blank lines are skipped. A conversation that ends with an
assistant turn — a fine-tuning example carries its expected answer there — has that turn dropped, so the
model is asked the question instead of being handed the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from lifeline.errors import PromptError

#: one conversation, as sent in a request's `messages`
Messages = list[dict[str, Any]]

BUILTIN_PROMPTS: tuple[str, ...] = (
    "In two sentences, what is a circuit breaker in software?",
    "Give three tips for writing a clear commit message.",
    "Translate 'the service is back online' into French and German.",
    "What is the difference between latency and throughput? Answer briefly.",
    "Write a haiku about a server that keeps answering.",
    "List the planets of the solar system in order from the sun.",
    "Explain what an HTTP 429 status means, in one paragraph.",
    "Suggest a name for a cat that likes to sleep on keyboards.",
)


def builtin_prompts() -> list[Messages]:
    return [[{"role": "user", "content": text}] for text in BUILTIN_PROMPTS]


def load_prompts(path: str | Path) -> list[Messages]:
    """Every conversation in a JSONL file, in file order."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PromptError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise PromptError(f"{path}: not UTF-8 text") from None
    prompts: list[Messages] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            prompts.append(parse_line(line))
        except PromptError as exc:
            raise PromptError(f"{path}:{number}: {exc}") from None
    if not prompts:
        raise PromptError(f"{path}: no prompts (expected one JSON object per line)")
    return prompts


def parse_line(line: str) -> Messages:
    try:
        item = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise PromptError(f"not valid JSON ({exc})") from None
    if not isinstance(item, dict):
        raise PromptError('expected an object with "messages" or "prompt"')
    if "messages" in item:
        return _messages(item["messages"])
    prompt = item.get("prompt")
    if isinstance(prompt, str) and prompt.strip():
        return [{"role": "user", "content": prompt}]
    if "prompt" in item:
        raise PromptError('"prompt" must be a non-empty string')
    raise PromptError('expected an object with "messages" or "prompt"')


def _messages(value: Any) -> Messages:
    if not isinstance(value, list) or not value:
        raise PromptError('"messages" must be a non-empty list')
    for i, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise PromptError(f'"messages[{i}]" must be an object with a "role"')
    messages: Messages = list(value)
    while messages and messages[-1]["role"] == "assistant":
        messages.pop()
    if not messages:
        raise PromptError('"messages" has nothing but assistant turns')
    return messages


def cycle(prompts: Sequence[Messages], index: int) -> Messages:
    """The conversation for the `index`-th request: the prompts in order, round and round."""
    return prompts[index % len(prompts)]
