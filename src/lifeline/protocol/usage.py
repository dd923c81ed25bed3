"""Token counts without a tokenizer, of two kinds that must not be confused:

- `reservation_prompt_tokens`: an *upper bound* of a request's prompt tokens, what budgets and TPM limits
  reserve before the call so that concurrent requests cannot together pass a limit. Text is counted by its
  UTF-8 bytes: a byte-level BPE token (GPT, Llama 3, Qwen, DeepSeek, SmolLM…) covers at least one byte,
  and so does a SentencePiece or WordPiece token apart from a word-start marker, which the framing
  allowances cover. Token ids are counted exactly.
- `estimate_usage`: a *best guess* (about four characters a token) recorded, and flagged as estimated,
  when an upstream reports no usage (`answer_usage` decides which); never used to admit anything.
"""

from __future__ import annotations

from typing import Any

# Roughly four characters per token in English for the BPE tokenizers of current models.
CHARS_PER_TOKEN = 4

#: chat-template tokens a message costs besides its text (role markers, separators, a word-start marker):
#: OpenAI documents 3-4, Llama 3's template uses 5
MESSAGE_FRAMING_BOUND = 8
#: tokens around the whole conversation: begin-of-text, the header that primes the answer, and the default
#: system prompt some chat templates add when a conversation has none (SmolLM2's and Qwen 2.5's are about
#: 20 tokens, Llama 3.1's date lines about as many)
CONVERSATION_FRAMING_BOUND = 64
#: tokens an embedding input costs besides its text (begin/end or CLS/SEP tokens, a word-start marker)
INPUT_FRAMING_BOUND = 4
#: an image, audio or file part: an allowance rather than a bound, since its tokens depend on its size, its
#: detail and the provider (Claude counts about 1,600 for its largest image, GPT-4o about 1,450 at high detail)
MEDIA_PART_ALLOWANCE = 2_000
#: the instructions a provider adds when tools are offered (Anthropic documents about 350 tokens)
TOOLS_ALLOWANCE = 512
#: content parts that are not text and are reserved at MEDIA_PART_ALLOWANCE rather than by their bytes
MEDIA_PARTS = frozenset({"image_url", "input_image", "image", "input_audio", "audio", "file", "input_file"})
#: request fields outside the messages that reach the model as prompt text
_PROMPT_FIELDS = ("tools", "functions", "response_format")


def _chars(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(len(p["text"]) for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return 0


def estimate_usage(body: dict[str, Any], completion_chars: int) -> dict[str, int]:
    """Best-guess usage of a chat body (`messages`) or an embeddings body (`input`) for an upstream that
    reported none: text at ~4 characters a token, token ids exactly."""
    messages = body.get("messages", ())
    prompt_chars = sum(_chars(m.get("content")) for m in messages if isinstance(m, dict))
    # every message costs a few tokens of chat-template framing
    prompt = -(-prompt_chars // CHARS_PER_TOKEN) + 4 * len(messages)
    texts, token_ids = _embedding_inputs(body.get("input"))
    prompt += sum(-(-len(text) // CHARS_PER_TOKEN) for text in texts) + token_ids
    completion = -(-completion_chars // CHARS_PER_TOKEN)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def answer_usage(
    body: dict[str, Any], reported: dict[str, Any] | None, completion_chars: int
) -> tuple[dict[str, Any], bool]:
    """An answer's usage, and whether it is estimated: what the upstream reported, or else the best guess for
    the request's `body` and `completion_chars` of answer. Every route, and every target's share of a
    continued stream, decides between the two here."""
    if reported is not None:
        return reported, False
    return estimate_usage(body, completion_chars), True


def reply_usage(
    body: dict[str, Any], reported: dict[str, Any] | None, reply: dict[str, Any]
) -> tuple[dict[str, Any], bool]:
    """`answer_usage` of a whole (non-streamed) `reply`: its characters are counted only when the upstream
    reported no usage, the only case that needs them."""
    if reported is not None:
        return reported, False
    return answer_usage(body, None, delta_chars(reply))


def reservation_prompt_tokens(body: dict[str, Any]) -> int:
    """An upper bound of the prompt tokens of a chat body (`messages`, with tools and response format) or an
    embeddings body (`input`), for reserving budgets and TPM before the call. See the module docstring."""
    tokens = 0
    messages = body.get("messages")
    if isinstance(messages, list) and messages:
        tokens += CONVERSATION_FRAMING_BOUND + sum(_message_bound(m) for m in messages)
    # a tool's schema reaches the model with its property names, so keys and punctuation count too
    tokens += sum(_text_bytes(body[name], structure=True) for name in _PROMPT_FIELDS if body.get(name))
    if body.get("tools") or body.get("functions"):
        tokens += TOOLS_ALLOWANCE
    texts, token_ids = _embedding_inputs(body.get("input"))
    tokens += sum(len(text.encode()) + INPUT_FRAMING_BOUND for text in texts) + token_ids
    return tokens


def _message_bound(message: Any) -> int:
    bound = MESSAGE_FRAMING_BOUND
    if not isinstance(message, dict):
        return bound
    for field, value in message.items():
        if field == "content" and isinstance(value, list):
            for part in value:
                media = isinstance(part, dict) and part.get("type") in MEDIA_PARTS
                bound += MEDIA_PART_ALLOWANCE if media else _text_bytes(part)
        else:
            bound += _text_bytes(value)
    return bound


def _text_bytes(value: Any, *, structure: bool = False) -> int:
    """UTF-8 bytes of the strings and numbers in a JSON value; with `structure`, of its keys and punctuation
    too (about its JSON length). Iterative, because a body may nest deeply."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item.encode()) + (2 if structure else 0)
        elif isinstance(item, dict):
            stack.extend(item.values())
            if structure:
                total += 2 + sum(len(str(k).encode()) + 4 for k in item)
        elif isinstance(item, list):
            stack.extend(item)
            total += 2 + len(item) if structure else 0
        elif isinstance(item, bool) or item is None:
            total += 5 if structure else 0
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 2  # at least its decimal digits and sign, without str() on a huge int
        else:
            total += len(repr(item))
    return total


def _embedding_inputs(raw: Any) -> tuple[list[str], int]:
    """An embeddings `input` as its texts and its number of token ids (a list of ints, or of such lists)."""
    if isinstance(raw, str):
        return [raw], 0
    if not isinstance(raw, list):
        return [], 0
    if all(isinstance(x, int) for x in raw):
        return [], len(raw)
    texts = [x for x in raw if isinstance(x, str)]
    return texts, sum(len(x) for x in raw if isinstance(x, list))


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
