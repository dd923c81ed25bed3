"""Token counts without a tokenizer: the best-guess usage recorded when an upstream reports none (about four
characters a token, plus message framing), and the upper bound that budgets and TPM limits reserve."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lifeline.errors import InvalidRequest
from lifeline.protocol.parse import validate_chat_request
from lifeline.protocol.usage import (
    CONVERSATION_FRAMING_BOUND,
    INPUT_FRAMING_BOUND,
    MEDIA_PART_ALLOWANCE,
    MESSAGE_FRAMING_BOUND,
    TOOLS_ALLOWANCE,
    delta_chars,
    estimate_usage,
    reply_usage,
    reservation_prompt_tokens,
)


def test_estimate_rounds_up_and_adds_framing() -> None:
    body = {"messages": [{"role": "system", "content": "abcde"}, {"role": "user", "content": "abc"}]}
    # 8 prompt characters → 2 tokens, + 4 per message; 5 completion characters → 2 tokens (rounded up)
    assert estimate_usage(body, 5) == {"prompt_tokens": 2 + 8, "completion_tokens": 2, "total_tokens": 12}


def test_estimate_exact_multiple() -> None:
    body = {"messages": [{"role": "user", "content": "x" * 8}]}
    assert estimate_usage(body, 8) == {"prompt_tokens": 2 + 4, "completion_tokens": 2, "total_tokens": 8}


def test_estimate_counts_text_parts_only() -> None:
    parts = [{"type": "text", "text": "abcd"}, {"type": "image_url", "image_url": {"url": "http://x/long/url"}}, "junk"]
    body = {"messages": [{"role": "user", "content": parts}]}
    assert estimate_usage(body, 0)["prompt_tokens"] == 1 + 4


def test_estimate_with_null_content_and_no_completion() -> None:
    body = {"messages": [{"role": "assistant", "content": None}, "not a message"]}
    usage = estimate_usage(body, 0)
    assert usage["completion_tokens"] == 0
    assert usage["prompt_tokens"] == 8  # framing counted for both entries
    assert usage["total_tokens"] == 8


def test_estimate_without_messages() -> None:
    assert estimate_usage({}, 3) == {"prompt_tokens": 0, "completion_tokens": 1, "total_tokens": 1}


def test_delta_chars_of_stream_deltas() -> None:
    data = {"choices": [{"delta": {"content": "hello"}}, {"delta": {"content": "hi"}}]}
    assert delta_chars(data) == 7


def test_delta_chars_of_whole_message() -> None:
    assert delta_chars({"choices": [{"message": {"role": "assistant", "content": "abc"}}]}) == 3


def test_delta_chars_counts_tool_call_arguments() -> None:
    call = {"index": 0, "function": {"name": "f", "arguments": '{"a":1}'}}
    data = {"choices": [{"delta": {"content": "ab", "tool_calls": [call, {"index": 1}, "junk"]}}]}
    assert delta_chars(data) == 2 + len('{"a":1}')


def test_delta_chars_of_empty_or_odd_events() -> None:
    assert delta_chars({}) == 0
    assert delta_chars({"choices": None}) == 0
    assert delta_chars({"choices": []}) == 0
    assert delta_chars({"choices": ["x", {"delta": None}, {"delta": {"content": None}}]}) == 0
    assert delta_chars({"choices": [], "usage": {"prompt_tokens": 1}}) == 0


class _Uncountable(list[object]):
    """Choices that fail when walked: counting a reply's characters with them raises."""

    def __iter__(self) -> Iterator[object]:
        raise AssertionError("the reply's characters were counted")


def test_reply_usage_takes_reported_usage_without_counting_the_reply() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}]}
    reported = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert reply_usage(body, reported, {"choices": _Uncountable([1])}) == (reported, False)
    with pytest.raises(AssertionError):
        reply_usage(body, None, {"choices": _Uncountable([1])})


def test_reply_usage_estimates_from_the_reply_when_none_reported() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}]}
    reply = {"choices": [{"message": {"role": "assistant", "content": "abcdefghi"}}]}
    assert reply_usage(body, None, reply) == (estimate_usage(body, 9), True)


def test_estimate_survives_a_text_part_without_text() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]}
    with pytest.raises(InvalidRequest):
        validate_chat_request(body)  # refused at the door (a text part needs text), yet the estimate copes
    assert estimate_usage(body, 0)["prompt_tokens"] == 4


# --- the reservation: an upper bound of the prompt's tokens (issue #15, items 6 and 7) -----------------

SHORT_WORDS = " ".join(["a"] * 50)  # 50 tokens for any tokenizer, 99 characters: ~25 at four a token
TRICKY_TEXTS = [
    SHORT_WORDS,
    " ".join(str(n) for n in range(40)),
    "日本語のテキストを数える。",
    "🙂🙃🤖" * 10,
    "\n\n \t" * 20,
    "x",
    "",
    "!?.,;:'\"()[]{}<>/\\|" * 5,
    "ünïcödé ĉĥàŕś " * 5,
    "<|im_start|>user\nhi<|im_end|>",
]


def test_token_id_input_is_reserved_and_estimated_at_its_length() -> None:
    assert reservation_prompt_tokens({"input": list(range(5000))}) == 5000
    assert reservation_prompt_tokens({"input": [list(range(2500)), list(range(2500))]}) == 5000
    assert estimate_usage({"input": list(range(5000))}, 0)["prompt_tokens"] == 5000
    assert estimate_usage({"input": [[1, 2, 3], [4, 5]]}, 0)["prompt_tokens"] == 5


def test_text_input_is_reserved_by_its_bytes() -> None:
    assert reservation_prompt_tokens({"input": "日本語"}) == 9 + INPUT_FRAMING_BOUND
    assert reservation_prompt_tokens({"input": [SHORT_WORDS, "x"]}) == 99 + 1 + 2 * INPUT_FRAMING_BOUND
    assert estimate_usage({"input": [SHORT_WORDS, "x"]}, 0)["prompt_tokens"] == 25 + 1


def test_short_words_are_reserved_above_what_they_cost() -> None:
    body = {"messages": [{"role": "user", "content": SHORT_WORDS}]}
    assert estimate_usage(body, 0)["prompt_tokens"] < 50, "the best guess undercounts one-letter words"
    assert reservation_prompt_tokens(body) == CONVERSATION_FRAMING_BOUND + MESSAGE_FRAMING_BOUND + 4 + 99


def test_every_part_of_a_conversation_that_reaches_the_model_is_reserved() -> None:
    plain = {"messages": [{"role": "user", "content": "hi"}]}
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x" }'}}
    tool_turns = {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "result " * 20},
        ]
    }
    assert reservation_prompt_tokens(tool_turns) > reservation_prompt_tokens(plain) + 2 * MESSAGE_FRAMING_BOUND + 140
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"properties": {"query_text": {}}}}}
    with_tools = {**plain, "tools": [tool]}
    assert reservation_prompt_tokens(with_tools) >= reservation_prompt_tokens(plain) + TOOLS_ALLOWANCE + len(
        "lookupquery_text"
    )
    schema = {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}}}
    assert reservation_prompt_tokens({**plain, "response_format": schema}) > reservation_prompt_tokens(plain) + 20


def test_an_image_is_reserved_at_an_allowance_not_at_its_encoded_size() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 1_000_000}}
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "what is this?"}, image]}]}
    bound = reservation_prompt_tokens(body)
    text_only = reservation_prompt_tokens(
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "what is this?"}]}]}
    )
    assert bound == text_only + MEDIA_PART_ALLOWANCE


def test_the_reservation_survives_odd_and_hostile_bodies() -> None:
    deep: list[object] = []
    for _ in range(5000):
        deep = [deep]
    odd = [
        {"messages": [{"role": "user", "content": deep}]},
        {"messages": [{"role": "user", "content": "x", "n": 10**5000, "f": 1.5, "b": True}]},
        {"messages": ["not a message", None, 3]},
        {"messages": "not a list", "input": 7},
        {"input": []},
        {"tools": deep},
        {},
    ]
    for body in odd:
        assert reservation_prompt_tokens(body) >= 0


@pytest.mark.embedded
def test_the_reservation_bounds_what_the_shipped_models_tokenizer_counts() -> None:
    """The embedded target's real prompt tokens (its chat template included) never exceed the reservation."""
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from lifeline.providers.llamacpp import resolve_model

    path, _ = resolve_model("builtin:smollm2")
    llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
    formatter = Jinja2ChatFormatter(
        template=llm.metadata["tokenizer.chat_template"],
        eos_token=llm.detokenize([llm.token_eos()]).decode("utf-8", "replace"),
        bos_token=llm.detokenize([llm.token_bos()]).decode("utf-8", "replace"),
    )

    def tokens(text: str) -> int:
        return len(llm.tokenize(text.encode(), add_bos=True, special=True))

    conversations = [[{"role": "user", "content": text}] for text in TRICKY_TEXTS]
    conversations.append([{"role": "system", "content": "x"}] + [{"role": "user", "content": t} for t in TRICKY_TEXTS])
    conversations.append([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}] * 20)
    for messages in conversations:
        counted = tokens(formatter(messages=messages).prompt)
        assert counted <= reservation_prompt_tokens({"messages": messages}), messages
    for text in TRICKY_TEXTS:
        assert tokens(text) <= reservation_prompt_tokens({"input": text}), text
