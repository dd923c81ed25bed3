"""The pairwise judge: a chat alias asked which of two answers to the same request is better, once with
the baseline's answer first and once with the candidate's first. An order effect (a judge that prefers
whatever comes first) shows up as a disagreement between the two orders, which counts as a tie.

The prompt is versioned: JUDGE_PROMPT_VERSION is stored with every judgement and in results.json, and a
resumed run only reuses judgements made with the same version.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

import orjson

from lifeline.eval.checks import content, tool_calls

JUDGE_PROMPT_VERSION = "pairwise-v1"
#: the judge's answer is short: a sentence or two of reasons and the verdict line
JUDGE_MAX_TOKENS = 512

Order = Literal["baseline_first", "candidate_first"]
ORDERS: tuple[Order, Order] = ("baseline_first", "candidate_first")
Verdict = Literal["A", "B", "TIE", "invalid"]
Outcome = Literal["win", "tie", "loss"]

JUDGE_INSTRUCTIONS = (
    "You compare two answers to the same conversation. Judge which answer better does what the last user "
    "message asks: correct, complete, following every instruction and format asked for, and no longer than "
    "needed. Ignore which answer comes first and how long each is, except where length hurts the answer. "
    "Give at most two sentences of reasons, then end with exactly one line: 'VERDICT: A', 'VERDICT: B' or "
    "'VERDICT: TIE'."
)

_VERDICT = re.compile(r"VERDICT:\s*(A|B|TIE)\b", re.IGNORECASE)


def render_answer(response: Mapping[str, Any] | None) -> str:
    """An answer as the judge reads it: its text, then its tool calls one a line."""
    lines = [content(response)]
    for call in tool_calls(response):
        function = call.get("function") or {}
        lines.append(f"[tool call] {function.get('name')}({function.get('arguments') or ''})")
    return "\n".join(line for line in lines if line)


def render_conversation(request: Mapping[str, Any]) -> str:
    lines = []
    for message in request.get("messages") or ():
        if not isinstance(message, dict):
            continue
        text = message.get("content")
        if not isinstance(text, str):
            text = orjson.dumps(text).decode() if text is not None else ""
        lines.append(f"{message.get('role', 'user')}: {text}")
    if request.get("tools"):
        names = [str((t.get("function") or {}).get("name")) for t in request["tools"] if isinstance(t, dict)]
        lines.append(f"(tools offered: {', '.join(names)})")
    if isinstance(request.get("response_format"), dict):
        lines.append(f"(response format asked: {request['response_format'].get('type')})")
    return "\n".join(lines)


def judge_messages(request: Mapping[str, Any], first: str, second: str) -> list[dict[str, str]]:
    user = (
        f"<conversation>\n{render_conversation(request)}\n</conversation>\n\n"
        f"<answer_a>\n{first}\n</answer_a>\n\n<answer_b>\n{second}\n</answer_b>\n\n"
        "Which answer is better? End with the VERDICT line."
    )
    return [{"role": "system", "content": JUDGE_INSTRUCTIONS}, {"role": "user", "content": user}]


def judge_body(alias: str, request: Mapping[str, Any], baseline: str, candidate: str, order: Order) -> dict[str, Any]:
    first, second = (baseline, candidate) if order == "baseline_first" else (candidate, baseline)
    return {
        "model": alias,
        "messages": judge_messages(request, first, second),
        "max_tokens": JUDGE_MAX_TOKENS,
        "temperature": 0,
    }


def parse_verdict(text: str) -> Verdict:
    """The last VERDICT line's choice; 'invalid' when there is none."""
    found = _VERDICT.findall(text)
    if not found:
        return "invalid"
    choice = found[-1].upper()
    return "A" if choice == "A" else "B" if choice == "B" else "TIE"


def from_candidate(verdict: Verdict, order: Order) -> Outcome | None:
    """A verdict seen from the candidate's side; None when the judge gave none."""
    if verdict == "invalid":
        return None
    if verdict == "TIE":
        return "tie"
    candidate_letter = "B" if order == "baseline_first" else "A"
    return "win" if verdict == candidate_letter else "loss"


def combine(first: Outcome | None, second: Outcome | None) -> tuple[Outcome, bool]:
    """The pair's outcome from both orders, and whether the orders disagreed (then: a tie). A missing or
    invalid verdict makes the pair a tie too (counted as a disagreement: the judge did not decide)."""
    if first is None or second is None or first != second:
        return "tie", True
    return first, False
