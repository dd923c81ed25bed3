"""Each deterministic check on answers that pass and answers that break it."""

from __future__ import annotations

from typing import Any

import pytest

from lifeline.eval.checks import refused, run_checks
from lifeline.eval.items import Item, Reference

SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "integer"}},
    "required": ["a"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def said(text: str | None, finish: str = "stop", **message: Any) -> dict[str, Any]:
    return {"choices": [{"message": {"role": "assistant", "content": text, **message}, "finish_reason": finish}]}


def called(name: str, arguments: str) -> dict[str, Any]:
    call = {"id": "c1", "type": "function", "function": {"name": name, "arguments": arguments}}
    return said(None, "tool_calls", tool_calls=[call])


def item(**request: Any) -> Item:
    return Item("i", {"messages": [{"role": "user", "content": "q"}], **request})


def test_a_failed_call_breaks_only_answered() -> None:
    checks = run_checks(item(), None, said("x"))
    assert checks["answered"] is False
    assert {k for k, v in checks.items() if v is not None} == {"answered"}


def test_an_empty_or_cut_answer() -> None:
    assert run_checks(item(), said("   "), None)["answered"] is False
    cut = run_checks(item(), said("half an ans", "length"), None)
    assert cut["answered"] is True and cut["finish"] is False


def test_json_and_schema() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}}
    good = run_checks(item(response_format=fmt), said('{"a": 1}'), None)
    assert good["json"] is True and good["schema"] is True
    wrong_type = run_checks(item(response_format=fmt), said('{"a": "one"}'), None)
    assert wrong_type["json"] is True and wrong_type["schema"] is False
    broken = run_checks(item(response_format=fmt), said('{"a": 1'), None)
    assert broken["json"] is False and broken["schema"] is False
    fenced = run_checks(item(response_format={"type": "json_object"}), said('```json\n{"b": 2}\n```'), None)
    assert fenced["json"] is True and fenced["schema"] is None
    assert run_checks(item(), said("{not json"), None)["json"] is None  # no JSON asked


def test_tool_calls_must_name_an_offered_tool_with_valid_arguments() -> None:
    offered = item(tools=[WEATHER])
    assert run_checks(offered, called("get_weather", '{"city": "Paris"}'), None)["tool"] is True
    assert run_checks(offered, called("get_time", '{"city": "Paris"}'), None)["tool"] is False
    assert run_checks(offered, called("get_weather", '{"town": "Paris"}'), None)["tool"] is False
    assert run_checks(offered, called("get_weather", '{"city": '), None)["tool"] is False


def test_tool_use_follows_the_baseline() -> None:
    offered = item(tools=[WEATHER])
    tool = called("get_weather", '{"city": "Paris"}')
    assert run_checks(offered, said("It is sunny."), tool)["tool_use"] is False
    assert run_checks(offered, tool, said("It is sunny."))["tool_use"] is False
    assert run_checks(offered, tool, tool)["tool_use"] is True
    assert run_checks(offered, said("Sunny."), said("It is sunny."))["tool_use"] is True
    assert run_checks(offered, tool, None)["tool_use"] is None  # nothing to compare with


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't help with that.",
        "I can\u2019t assist with this request.",
        "抱歉\uff0c我无法回答这个问题。",
        "作为一个人工智能\uff0c我不能讨论这个话题。",
    ],
)
def test_refusals_in_english_and_chinese_are_detected(text: str) -> None:
    assert refused(said(text))
    assert run_checks(item(), said(text), said("Paris."))["refusal"] is False
    assert run_checks(item(), said(text), said(text))["refusal"] is True  # the baseline refused too


def test_an_explicit_refusal_field_and_answers_that_are_not_refusals() -> None:
    assert refused(said(None, refusal="I can't do that"))
    assert not refused(said("The capital of France is Paris."))
    assert not refused(said("北京是中国的首都。"))


def test_length_ratio_within_bounds() -> None:
    checks = run_checks(item(), said("x" * 30), said("x" * 10))
    assert checks["length"] is False  # 3.0 > 2.0
    assert run_checks(item(), said("x" * 15), said("x" * 10))["length"] is True
    assert run_checks(item(), said("x" * 15), said("x" * 10), length_bounds=(0.5, 1.2))["length"] is False


@pytest.mark.parametrize(
    ("reference", "answer", "ok"),
    [
        (Reference("Paris", "exact"), " Paris\n", True),
        (Reference("Paris", "exact"), "paris", False),
        (Reference("Paris", "normalised"), "  PARIS. ", True),
        (Reference("New York", "normalised"), "new   york!", True),
        (Reference("Paris", "normalised"), "Lyon", False),
        (Reference("42", "numeric"), "The answer is 42.", True),
        (Reference("3.14", "numeric", 0.01), "about 3.1416", True),
        (Reference("3.14", "numeric", 0.001), "about 3.1416", False),
        (Reference("1234", "numeric"), "It costs 1,234 dollars", True),
        (Reference("7", "numeric"), "no number here", False),
    ],
)
def test_reference_match(reference: Reference, answer: str, ok: bool) -> None:
    with_reference = Item("i", {"messages": [{"role": "user", "content": "q"}]}, reference=reference)
    assert run_checks(with_reference, said(answer), None)["reference"] is ok


def test_an_item_can_ask_for_a_subset_of_checks() -> None:
    only_length = Item("i", {"messages": [], "response_format": {"type": "json_object"}}, checks=("length",))
    checks = run_checks(only_length, said("not json"), said("x"))
    assert checks["json"] is None and checks["refusal"] is None
    assert checks["answered"] is True and checks["length"] is not None


def test_a_tool_calling_answer_is_shown_with_its_calls() -> None:
    from lifeline.eval.checks import shown_answer

    call = {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}
    response = {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": [call]}}]}
    assert shown_answer(response) == '→ weather({"city": "Oslo"})'
    text = {"choices": [{"message": {"role": "assistant", "content": "Sunny."}}]}
    assert shown_answer(text) == "Sunny."
    assert shown_answer(None) == ""


def test_a_failed_answer_is_shown_by_its_error() -> None:
    from lifeline.eval.summary import _shown_error

    error = {"status": 400, "code": "unsupported_capability", "message": "No target can serve this request."}
    assert _shown_error(error) == "error 400 unsupported_capability: No target can serve this request."
    assert _shown_error(None) == ""
