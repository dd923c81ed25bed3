"""OpenAI's legacy text completions (/v1/completions) as an inbound protocol, translated onto chat; pure, no I/O.

The prompt becomes one user message of a chat body (`to_chat_body`), so that a completions client is served by
every chat target with the same failover, continuation and accounting; the answer comes back as a
`text_completion` (`to_completion`), or its chunks (`CompletionChunks`). The target applies its chat
template: a prompt is answered, not continued verbatim as a base model would.

Supported: `prompt` as a string or an array of one string, `max_tokens`, `temperature`, `top_p`, `stop`,
`seed`, `presence_penalty`, `frequency_penalty`, `user`, `n` = 1, `stream` with `stream_options.include_usage`.
Refused with a 400 naming the parameter: several prompts, token-id prompts (their ids belong to one
tokenizer, and the targets behind an alias have different ones), `n` > 1, `best_of` > 1, `echo`, `logprobs`,
`suffix` and `logit_bias`.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from lifeline.errors import InvalidRequest

#: parameters passed on to the chat body under the same name (checked there by the chat validation)
_PASSED = ("max_tokens", "temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty", "user")

#: parameters refused unless they have the value that asks for nothing
_REFUSED = {
    "echo": (False, "echoing the prompt is not supported"),
    "logprobs": (None, "log probabilities are not supported"),
    "suffix": (None, "a suffix (insertion) is not supported"),
    "logit_bias": (None, "logit_bias is not supported: token ids differ between the targets behind an alias"),
}


@dataclass(frozen=True, slots=True)
class CompletionsRequest:
    """A validated completions request: its chat body, and what the answer echoes back."""

    model: str
    chat: dict[str, Any]
    stream: bool
    wants_usage: bool


def _bad(param: str, message: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(f"Invalid value for '{param}': {message}.", param=param, code=code)


def _unsupported(param: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"Unsupported parameter: '{param}': {why}.", param=param, code="unsupported_parameter")


def validate_request(data: dict[str, Any]) -> CompletionsRequest:
    """The body of POST /v1/completions, checked and translated; a 400 naming the parameter at the first
    mistake (the chat validation then checks the parameters passed on)."""
    model = data.get("model")
    if model is None:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise _bad("model", "expected a non-empty string")
    prompt = _prompt(data.get("prompt"))
    for name, (allowed, why) in _REFUSED.items():
        if data.get(name) not in (None, allowed):
            raise _unsupported(name, why)
    for name in ("n", "best_of"):
        value = data.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise _bad(name, "expected an integer", "invalid_type")
        if value is not None and value != 1:
            raise _unsupported(name, "only one completion per request (n = 1) is supported")
    chat: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    chat.update({name: data[name] for name in _PASSED if data.get(name) is not None})
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad("stream", "expected a boolean", "invalid_type")
    options = data.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _bad("stream_options", "expected an object", "invalid_type")
    wants_usage = bool(stream and options and options.get("include_usage"))
    if stream:
        # usage always comes from upstream when it can, for the ledger; the client sees it only if it asked
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return CompletionsRequest(model=model, chat=chat, stream=bool(stream), wants_usage=wants_usage)


def _prompt(value: Any) -> str:
    if value is None:
        raise InvalidRequest("Missing required parameter: 'prompt'.", param="prompt", code="missing_required_parameter")
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        if len(value) == 1 and isinstance(value[0], str):
            return value[0]
        if (value and all(isinstance(x, int) and not isinstance(x, bool) for x in value)) or any(
            isinstance(x, list) for x in value
        ):
            raise _unsupported(
                "prompt",
                "token-id prompts are not supported (the targets behind an alias use different tokenizers); send text",
            )
        if len(value) > 1 and all(isinstance(x, str) for x in value):
            raise _unsupported("prompt", "several prompts in one request are not supported; send one prompt a request")
    raise _bad("prompt", "expected a string or an array of one string", "invalid_type")


def new_id() -> str:
    return f"cmpl-{secrets.token_hex(12)}"


def to_completion(answer: dict[str, Any], *, completion_id: str, model: str, usage: dict[str, Any]) -> dict[str, Any]:
    """A whole chat completion as a `text_completion`."""
    choices = []
    for choice in answer.get("choices") or ():
        message = choice.get("message") or {}
        choices.append(
            {
                "text": _text(message.get("content")),
                "index": choice.get("index", 0),
                "logprobs": None,
                "finish_reason": choice.get("finish_reason"),
            }
        )
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": int(answer.get("created") or time.time()),
        "model": model,
        "choices": choices,
        "usage": usage,
    }


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text") or "" for p in content if isinstance(p, dict))
    return ""


class CompletionChunks:
    """Chat completion chunks, translated one by one into `text_completion` chunks of one completion id."""

    def __init__(self, completion_id: str, model: str) -> None:
        self.id = completion_id
        self.model = model
        self.created = int(time.time())

    def chunk(self, data: dict[str, Any]) -> dict[str, Any] | None:
        """The text chunk for one chat chunk, or None when it carries neither text nor a finish reason."""
        choices = []
        for choice in data.get("choices") or ():
            delta = choice.get("delta") or {}
            text = _text(delta.get("content"))
            finish = choice.get("finish_reason")
            if text or finish:
                choices.append(
                    {"text": text, "index": choice.get("index", 0), "logprobs": None, "finish_reason": finish}
                )
        if not choices:
            return None
        return self._shell(data.get("model") or self.model, choices)

    def usage(self, usage: dict[str, Any], estimated: bool) -> dict[str, Any]:
        """The last chunk when the client asked for usage: no choices, the whole answer's usage."""
        chunk = self._shell(self.model, [])
        chunk["usage"] = usage
        if estimated:
            chunk["x_lifeline"] = {"usage_estimated": True}
        return chunk

    def _shell(self, model: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": model, "choices": choices}
