"""Token usage: estimating it when an upstream reports none (marked as estimated, never passed as exact)."""

from __future__ import annotations

from typing import Any

# Roughly four characters per token in English for the BPE tokenizers of current models.
CHARS_PER_TOKEN = 4


def _chars(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(len(p["text"]) for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return 0


def estimate_usage(body: dict[str, Any], completion_chars: int) -> dict[str, int]:
    prompt_chars = sum(_chars(m.get("content")) for m in body.get("messages", ()) if isinstance(m, dict))
    # every message costs a few tokens of chat-template framing
    prompt = -(-prompt_chars // CHARS_PER_TOKEN) + 4 * len(body.get("messages", ()))
    completion = -(-completion_chars // CHARS_PER_TOKEN)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def delta_chars(data: dict[str, Any]) -> int:
    total = 0
    for choice in data.get("choices") or ():
        if isinstance(choice, dict):
            delta = choice.get("delta") or choice.get("message") or {}
            if isinstance(delta, dict):
                total += _chars(delta.get("content"))
                for call in delta.get("tool_calls") or ():
                    if isinstance(call, dict):
                        function = call.get("function")
                        arguments = function.get("arguments") if isinstance(function, dict) else None
                        total += len(arguments) if isinstance(arguments, str) else 0
    return total
