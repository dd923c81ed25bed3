"""The judge's prompt, its verdict parsing and how the two orders combine."""

from __future__ import annotations

from lifeline.eval.judge import (
    JUDGE_PROMPT_VERSION,
    combine,
    from_candidate,
    judge_body,
    parse_verdict,
    render_answer,
)


def test_both_orders_put_the_answers_in_swapped_places() -> None:
    request = {"messages": [{"role": "user", "content": "Capital of France?"}]}
    first = judge_body("judge", request, "BASE", "CAND", "baseline_first")["messages"][1]["content"]
    second = judge_body("judge", request, "BASE", "CAND", "candidate_first")["messages"][1]["content"]
    assert "<answer_a>\nBASE\n</answer_a>" in first and "<answer_b>\nCAND\n</answer_b>" in first
    assert "<answer_a>\nCAND\n</answer_a>" in second and "<answer_b>\nBASE\n</answer_b>" in second
    assert "user: Capital of France?" in first
    assert JUDGE_PROMPT_VERSION


def test_the_last_verdict_line_counts_and_none_is_invalid() -> None:
    assert parse_verdict("A is wordy. VERDICT: B") == "B"
    assert parse_verdict("verdict: a\nOn reflection, VERDICT: TIE") == "TIE"
    assert parse_verdict("I prefer the first one.") == "invalid"


def test_verdicts_seen_from_the_candidate() -> None:
    assert from_candidate("B", "baseline_first") == "win"
    assert from_candidate("A", "baseline_first") == "loss"
    assert from_candidate("A", "candidate_first") == "win"
    assert from_candidate("TIE", "candidate_first") == "tie"
    assert from_candidate("invalid", "candidate_first") is None


def test_orders_that_disagree_make_a_tie() -> None:
    assert combine("win", "win") == ("win", False)
    assert combine("loss", "loss") == ("loss", False)
    assert combine("tie", "tie") == ("tie", False)
    assert combine("win", "loss") == ("tie", True)  # an order-biased judge
    assert combine("win", None) == ("tie", True)


def test_an_answer_is_rendered_with_its_tool_calls() -> None:
    response = {
        "choices": [
            {
                "message": {
                    "content": None,
                    "tool_calls": [{"function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}],
                }
            }
        ]
    }
    assert render_answer(response) == '[tool call] get_weather({"city": "Paris"})'
