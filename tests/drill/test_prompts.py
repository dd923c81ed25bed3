"""Reading a drill's prompts: JSON Lines of conversations or plain prompts, with errors that name the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifeline.drill.prompts import builtin_prompts, cycle, load_prompts
from lifeline.errors import PromptError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text(text, encoding="utf-8")
    return path


def test_messages_and_prompts_are_read_in_order_and_other_keys_ignored(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '{"id": 1, "messages": [{"role": "user", "content": "a"}]}\n\n   \n{"prompt": "b", "label": "x"}\n',
    )
    assert load_prompts(path) == [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]]


def test_a_trailing_assistant_answer_is_dropped_so_the_model_is_asked(tmp_path: Path) -> None:
    conversation = (
        '{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},'
        ' {"role": "assistant", "content": "the expected answer"}]}\n'
    )
    [messages] = load_prompts(write(tmp_path, conversation))
    assert [m["role"] for m in messages] == ["system", "user"]


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", 'expected an object with "messages" or "prompt"'),
        ('{"text": "hi"}', 'expected an object with "messages" or "prompt"'),
        ('{"prompt": ""}', '"prompt" must be a non-empty string'),
        ('{"messages": []}', '"messages" must be a non-empty list'),
        ('{"messages": [{"content": "no role"}]}', '"messages[0]" must be an object with a "role"'),
        ('{"messages": [{"role": "assistant", "content": "x"}]}', "nothing but assistant turns"),
    ],
)
def test_a_bad_line_is_named_by_number(tmp_path: Path, line: str, error: str) -> None:
    path = write(tmp_path, '{"prompt": "fine"}\n' + line + "\n")
    with pytest.raises(PromptError) as raised:
        load_prompts(path)
    assert str(raised.value).startswith(f"{path}:2: ")
    assert error in str(raised.value)


def test_an_empty_or_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match="no prompts"):
        load_prompts(write(tmp_path, "\n\n"))
    with pytest.raises(PromptError, match="cannot read"):
        load_prompts(tmp_path / "absent.jsonl")


def test_prompts_are_sent_round_and_round() -> None:
    prompts = builtin_prompts()
    assert len(prompts) >= 5
    assert [cycle(prompts, i) for i in (0, len(prompts), len(prompts) + 1)] == [prompts[0], prompts[0], prompts[1]]
