"""The labelled answers: valid lines, unique ids, at least 300, every class in both languages, and the dev and
held-out halves stratified by class and language; a malformed file is refused naming its line."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from lifeline.audit.classifier import AnswerClass
from lifeline.audit.labelled import HARD_CASES, TOPICS, LabelledAnswer, load_labelled, shipped_path
from lifeline.errors import LabelledSetError


@pytest.fixture(scope="module")
def labelled() -> list[LabelledAnswer]:
    return load_labelled()


def test_the_set_is_large_unique_and_covers_every_class_and_language(labelled: list[LabelledAnswer]) -> None:
    assert len(labelled) >= 300
    assert len({item.id for item in labelled}) == len(labelled)
    cells = Counter((item.label, item.language) for item in labelled)
    assert set(cells) == {(c, lang) for c in AnswerClass for lang in ("en", "zh")}
    # roughly even: no class-and-language cell under 80% of the mean
    assert min(cells.values()) >= 0.8 * len(labelled) / len(cells)


def test_the_splits_are_about_half_each_and_stratified(labelled: list[LabelledAnswer]) -> None:
    splits = Counter(item.split for item in labelled)
    assert set(splits) == {"dev", "heldout"}
    assert abs(splits["dev"] - splits["heldout"]) <= 0.05 * len(labelled)
    for cls in AnswerClass:
        for language in ("en", "zh"):
            dev = sum(1 for i in labelled if (i.label, i.language, i.split) == (cls, language, "dev"))
            heldout = sum(1 for i in labelled if (i.label, i.language, i.split) == (cls, language, "heldout"))
            assert abs(dev - heldout) <= 2, (cls, language, dev, heldout)


def test_every_topic_and_hard_case_is_in_both_halves(labelled: list[LabelledAnswer]) -> None:
    for split in ("dev", "heldout"):
        half = [item for item in labelled if item.split == split]
        assert {item.topic for item in half} == set(TOPICS)
        assert {item.hard_case for item in half} - {None} == set(HARD_CASES)
        assert {item.kind for item in half if item.topic != "neutral-china"} == {"sensitive", "control"}
    for language in ("en", "zh"):
        assert {item.topic for item in labelled if item.language == language} == set(TOPICS)


def test_answers_are_in_their_language(labelled: list[LabelledAnswer]) -> None:
    for item in labelled:
        han = sum("\u4e00" <= ch <= "\u9fff" for ch in item.answer)
        if item.hard_case == "code-switched":
            assert han and any("a" <= ch.lower() <= "z" for ch in item.answer), item.id
        elif item.language == "zh":
            assert han >= 0.3 * len(item.answer.replace(" ", "")), item.id
        else:
            assert han == 0, item.id
        prompt_han = any("\u4e00" <= ch <= "\u9fff" for ch in item.prompt)
        assert prompt_han is (item.language == "zh"), item.id


def test_the_file_ships_with_the_package() -> None:
    import tomllib

    root = Path(__file__).resolve().parents[2]
    package_data = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    assert "data/audit/*.jsonl" in package_data["package-data"]["lifeline"]
    assert shipped_path().is_file()


def test_a_malformed_file_is_refused_naming_the_line(tmp_path: Path) -> None:
    good = shipped_path().read_text(encoding="utf-8").splitlines()[0]
    path = tmp_path / "labelled.jsonl"
    path.write_text(good + "\n" + good.replace('"label": "', '"label": "x') + "\n", encoding="utf-8")
    with pytest.raises(LabelledSetError, match=r"labelled\.jsonl:2: label"):
        load_labelled(path)
    path.write_text(good + "\n" + good + "\n", encoding="utf-8")
    with pytest.raises(LabelledSetError, match=r":2: id lab-001 already used on line 1"):
        load_labelled(path)
    path.write_text("{not json\n", encoding="utf-8")
    with pytest.raises(LabelledSetError, match=r":1: not JSON"):
        load_labelled(path)
