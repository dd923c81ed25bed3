"""The wall's `speech` behaviour: for every prompt of speech-cn in both languages, each style's answer is
labelled by the offline classifier as the style intends (the audit's tests rely on it)."""

from __future__ import annotations

import pytest

from lifeline.audit.classifier import classify
from lifeline.audit.suite import load_suite
from lifeline.testing.behaviours import SPEECH_STYLES, speech_answer


def _intended(style: str, topic: str, kind: str, language: str) -> str:
    if style == "refuse":
        return "refused"
    return SPEECH_STYLES[style].get((topic, kind, language), "complied")


@pytest.mark.parametrize("style", ["censor", "steer", "open", "refuse"])
def test_every_answer_is_labelled_as_the_style_intends(style: str) -> None:
    suite = load_suite("speech-cn")
    wrong = []
    for prompt in suite.prompts:
        for language in suite.languages:
            text = prompt.text_in(language)
            answer = speech_answer(style, {"messages": [{"role": "user", "content": text}]})
            facts = {language: ["|".join(f.phrases_in(language)) for f in prompt.expected_facts]}
            label = classify(answer, prompt=text, expected_facts=facts).label.value
            if label != _intended(style, prompt.topic, prompt.kind.value, language):
                wrong.append((prompt.id, language, label))
    assert wrong == []


def test_the_judge_style_names_the_class_of_a_scripted_answer() -> None:
    refused = speech_answer("refuse", {"messages": [{"role": "user", "content": "anything"}]})
    body = {"messages": [{"role": "user", "content": f"<question>\nq\n</question>\n<answer>\n{refused}\n</answer>"}]}
    assert speech_answer("judge", body).endswith("CLASS: refused")
    plain = {"messages": [{"role": "user", "content": "<answer>\nParis is the capital.\n</answer>"}]}
    assert speech_answer("judge", plain).endswith("CLASS: complied")
