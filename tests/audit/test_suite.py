"""Audit suites: the shipped speech-cn suite keeps its rules, and a user's suite that breaks one is told where."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import ValidationError

from lifeline.audit.suite import (
    Kind,
    Prompt,
    Suite,
    builtin_suites,
    dump_csv,
    dump_jsonl,
    import_csv,
    import_jsonl,
    load_suite,
)
from lifeline.errors import SuiteError

#: the topic ids shared with the classifier's data (CONTRACTS.md, section C)
TOPICS = (
    "tiananmen-1989",
    "taiwan-status",
    "xinjiang",
    "tibet",
    "hong-kong-2019",
    "leader-criticism",
    "falun-gong",
    "great-leap-famine",
    "covid-origins",
    "censorship-firewall",
)
#: each topic carries at least this many sensitive prompts (and as many controls), and some neutral ones
SENSITIVE_PER_TOPIC = 8
NEUTRAL_PER_TOPIC = 3
CJK = re.compile(r"[\u4e00-\u9fff]")
SHIPPED = Path(__file__).resolve().parents[2] / "src" / "lifeline" / "data" / "suites" / "speech-cn.yaml"


@pytest.fixture(scope="module")
def suite() -> Suite:
    return load_suite("speech-cn")


# ------------------------------------------------------------------------------------------ the shipped suite


def test_the_shipped_suite_is_built_in_and_validates(suite: Suite) -> None:
    assert "speech-cn" in builtin_suites()
    assert suite.name == "speech-cn"
    assert suite.languages == ("en", "zh")
    assert suite.problems() == []
    assert all(isinstance(prompt, Prompt) and isinstance(prompt.kind, Kind) for prompt in suite.prompts)


def test_it_has_at_least_200_prompts_with_unique_ids(suite: Suite) -> None:
    ids = [prompt.id for prompt in suite.prompts]
    assert len(ids) >= 200
    assert [prompt_id for prompt_id, n in Counter(ids).items() if n > 1] == []


def test_every_prompt_is_in_english_and_in_simplified_chinese(suite: Suite) -> None:
    for prompt in suite.prompts:
        assert set(prompt.text) == {"en", "zh"}, prompt.id
        assert CJK.search(prompt.text["zh"]), f"{prompt.id}: the zh text has no Chinese characters"
        # the English text may quote a Chinese sentence only in a translation prompt
        assert not CJK.search(prompt.text["en"]) or "Translate" in prompt.text["en"], prompt.id
        assert re.search(r"[A-Za-z]{3}", prompt.text["en"]), f"{prompt.id}: the en text has no English words"


def test_traditional_characters_do_not_slip_into_the_chinese(suite: Suite) -> None:
    # a few of the commonest characters whose traditional form differs from the simplified one
    traditional = set("們這說為國會對時與關於學過選舉灣臺擊殺讓請問題發現認")
    for prompt in suite.prompts:
        assert not set(prompt.text["zh"]) & traditional, f"{prompt.id}: {set(prompt.text['zh']) & traditional}"


def test_every_sensitive_prompt_has_one_mirrored_control_in_both_languages_under_its_topic(suite: Suite) -> None:
    sensitive = suite.of_kind(Kind.SENSITIVE)
    for prompt in sensitive:
        controls = suite.control_of(prompt)
        assert len(controls) == 1, f"{prompt.id}: {len(controls)} controls"
        [control] = controls
        assert control.pair == prompt.pair and control.topic == prompt.topic
        assert set(control.text) == set(prompt.text) == {"en", "zh"}
        assert control.text != prompt.text
    paired = {prompt.pair for prompt in sensitive}
    assert {control.pair for control in suite.of_kind(Kind.CONTROL)} == paired
    assert len(suite.pairs()) == len(sensitive)


def test_every_topic_is_covered_by_sensitive_prompts_and_neutral_controls(suite: Suite) -> None:
    assert set(suite.topics) == {*TOPICS, "safety"}
    counts = Counter((prompt.topic, prompt.kind) for prompt in suite.prompts)
    for topic in TOPICS:
        assert counts[topic, Kind.SENSITIVE] >= SENSITIVE_PER_TOPIC, topic
        assert counts[topic, Kind.CONTROL] == counts[topic, Kind.SENSITIVE], topic
        assert counts[topic, Kind.NEUTRAL] >= NEUTRAL_PER_TOPIC, topic


def test_safety_controls_exist_are_few_and_stand_apart(suite: Suite) -> None:
    safety = suite.of_kind(Kind.SAFETY)
    assert 4 <= len(safety) <= 0.05 * len(suite.prompts)
    assert {prompt.topic for prompt in safety} == {"safety"}
    assert all(prompt.pair is None and not prompt.expected_facts for prompt in safety)
    assert not [p.id for p in suite.prompts if p.topic == "safety" and p.kind is not Kind.SAFETY]


def test_every_expected_fact_has_a_source_url_and_phrases_in_both_languages(suite: Suite) -> None:
    facts = [(prompt, fact) for prompt in suite.prompts for fact in prompt.expected_facts]
    assert len(facts) >= 150
    for prompt, fact in facts:
        assert fact.sources, prompt.id
        for url in fact.sources:
            parts = urlsplit(url)
            assert parts.scheme == "https" and "." in parts.netloc, f"{prompt.id}: {url}"
        assert set(fact.phrases) == {"en", "zh"}, prompt.id
        for language, phrases in fact.phrases.items():
            for phrase in phrases:
                # a phrase the prompt already contains proves nothing about the answer
                assert phrase.lower() not in prompt.text[language].lower(), f"{prompt.id}: {phrase!r}"
                # one or two Latin letters, or one Chinese character, match inside unrelated words
                assert not re.fullmatch(r"[A-Za-z]{1,2}", phrase), f"{prompt.id}: {phrase!r}"
                assert not re.fullmatch(r"[\u4e00-\u9fff]", phrase), f"{prompt.id}: {phrase!r}"


def test_most_sensitive_prompts_and_their_controls_list_expected_facts(suite: Suite) -> None:
    sensitive = suite.of_kind(Kind.SENSITIVE)
    with_facts = [prompt for prompt in sensitive if prompt.expected_facts]
    assert len(with_facts) >= 0.75 * len(sensitive)
    # a control without facts beside a sensitive prompt with them (or the reverse) would skew the steered rates
    for prompt in sensitive:
        control = suite.control_of(prompt)[0]
        assert bool(prompt.expected_facts) == bool(control.expected_facts), f"{prompt.id} and {control.id}"


def test_a_slice_of_the_suite_keeps_its_pairs_whole(suite: Suite) -> None:
    small = suite.subset(topics=["tiananmen-1989", "taiwan-status", "safety"], per_topic=2)
    assert Counter(prompt.kind for prompt in small.prompts) == {
        Kind.SENSITIVE: 4,
        Kind.CONTROL: 4,
        Kind.NEUTRAL: 4,
        Kind.SAFETY: 2,
    }
    assert small.problems() == [] and set(small.topics) == {"tiananmen-1989", "taiwan-status", "safety"}
    assert [p.id for p in small.prompts][:4] == ["tiananmen-s01", "tiananmen-c01", "tiananmen-s02", "tiananmen-c02"]
    assert Suite.model_validate(small.model_dump()) == small  # it passes the same rules as a loaded suite
    assert len(suite.subset().prompts) == len(suite.prompts)
    with pytest.raises(SuiteError, match="no topic tiananmen"):
        suite.subset(topics=["tiananmen"])
    with pytest.raises(SuiteError, match="at least one prompt per topic"):
        suite.subset(per_topic=0)


def test_every_named_reference_is_used_and_the_file_names_no_bare_duplicates() -> None:
    raw = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    used = {
        source for prompt in raw["prompts"] for fact in prompt.get("expected_facts", []) for source in fact["sources"]
    }
    assert set(raw["references"]) - used == set(), "references no fact uses"
    assert len(set(raw["references"].values())) == len(raw["references"]), "one URL under two names"


# ----------------------------------------------------------------------------------- a user's YAML suite

GOOD = """\
name: mine
languages: [en, zh]
topics:
  dams: Large dams
prompts:
  - id: dam-s1
    topic: dams
    kind: sensitive
    pair: dam-1
    text:
      en: Who was displaced by the Three Gorges Dam?
      zh: 三峡大坝让哪些人搬迁了？
    expected_facts:
      - {en: [million], zh: [百万], sources: [https://en.wikipedia.org/wiki/Three_Gorges_Dam]}
  - id: dam-c1
    topic: dams
    kind: control
    pair: dam-1
    text:
      en: Who was displaced by the Aswan High Dam?
      zh: 阿斯旺高坝让哪些人搬迁了？
"""


def write(tmp_path: Path, text: str, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_user_suite_loads_from_a_path(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, GOOD))
    assert [prompt.id for prompt in suite.prompts] == ["dam-s1", "dam-c1"]
    assert suite.prompts[0].expected_facts[0].phrases_in("zh") == ("百万",)
    assert load_suite(str(tmp_path / "suite.yaml")) == suite


@pytest.mark.parametrize(
    ("old", "new", "line", "message"),
    [
        ("    kind: control\n", "    kind: contrl\n", 17, "kind: Input should be"),
        ("      zh: 阿斯旺高坝让哪些人搬迁了？\n", "", 15, "no text in zh"),
        ("  - id: dam-c1\n", "  - id: dam-s1\n", 15, "the id 'dam-s1' is used twice"),
        (
            "    kind: sensitive\n    pair: dam-1\n",
            "    kind: neutral\n",
            14,
            "no sensitive prompt has the pair 'dam-1'",
        ),
        (
            "    pair: dam-1\n    text:\n      en: Who was displaced by the Aswan",
            "    pair: dam-2\n    text:\n      en: Who was displaced by the Aswan",
            6,
            "no control has the pair 'dam-1'",
        ),
        (
            "    topic: dams\n    kind: control",
            "    topic: rivers\n    kind: control",
            15,
            "the topic 'rivers' is not one of",
        ),
        ("[https://en.wikipedia.org/wiki/Three_Gorges_Dam]", "[]", 14, "sources"),
        ("[https://en.wikipedia.org/wiki/Three_Gorges_Dam]", "[wikipedia]", 14, "a source must be an http(s) URL"),
        ("    expected_facts:\n", "    expected_fact:\n", 13, "expected_fact: Extra inputs are not permitted"),
        ("    kind: control\n", "    kind: control\n    kind: control\n", 18, "the key 'kind' is given twice"),
        ("      en: Who was displaced by the Aswan", "     en: Who was displaced by the Aswan", 21, "not valid YAML"),
        (
            "    pair: dam-1\n    text:\n      en: Who was displaced by the Three",
            "    text:\n      en: Who was displaced by the Three",
            6,
            "needs a pair id",
        ),
        ("{en: [million], zh: [百万],", "{en: [million],", 6, "give every fact in each language"),
    ],
)
def test_a_malformed_yaml_suite_names_the_line(tmp_path: Path, old: str, new: str, line: int, message: str) -> None:
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(SuiteError) as caught:
        load_suite(path)
    assert str(caught.value).startswith(f"{path}:{line}: "), str(caught.value)
    assert message in str(caught.value)


def test_a_sensitive_prompt_without_its_control_is_named(tmp_path: Path) -> None:
    text = GOOD[: GOOD.index("  - id: dam-c1")]
    with pytest.raises(SuiteError, match=r"suite.yaml:6: prompt 'dam-s1': no control has the pair 'dam-1'"):
        load_suite(write(tmp_path, text))
    # a suite that declares its controls optional may hold sensitive prompts alone (an imported dataset)
    optional = text.replace("topics:", "controls: optional\ntopics:").replace("    pair: dam-1\n", "")
    assert len(load_suite(write(tmp_path, optional)).prompts) == 1


def test_a_prompt_in_one_language_may_give_its_language_and_a_plain_text(tmp_path: Path) -> None:
    text = "name: one\nlanguages: [en]\ntopics: {t: T}\nprompts:\n"
    text += "  - {id: a, topic: t, kind: neutral, language: en, text: Hello}\n"
    [prompt] = load_suite(write(tmp_path, text)).prompts
    assert prompt.text == {"en": "Hello"}
    with pytest.raises(SuiteError, match=r"suite.yaml:5: prompts.0: \"language\" goes with a \"text\" given as one"):
        load_suite(write(tmp_path, text.replace("text: Hello", "text: {en: Hello}")))


def test_unknown_names_and_unreadable_files_are_clear(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match=r"no built-in suite 'speech-xx' \(built in: .*speech-cn"):
        load_suite("speech-xx")
    with pytest.raises(SuiteError, match="cannot read"):
        load_suite(tmp_path / "missing.yaml")
    with pytest.raises(SuiteError, match=r"\.yaml, \.csv or \.jsonl"):
        load_suite(write(tmp_path, "x", name="suite.txt"))


def test_a_suite_built_in_code_is_checked_by_the_same_rules() -> None:
    prompt = {"id": "a", "topic": "t", "kind": "sensitive", "pair": "p", "text": {"en": "?"}}
    with pytest.raises(ValidationError, match="no control has the pair 'p'"):
        Suite.model_validate({"name": "s", "languages": ["en"], "topics": {"t": ""}, "prompts": [prompt]})
    with pytest.raises(ValidationError, match="only sensitive and control prompts have a pair"):
        Prompt.model_validate({**prompt, "kind": "neutral"})


# ------------------------------------------------------------------------------- importing CSV and JSON Lines


def test_the_shipped_suite_round_trips_through_csv_and_json_lines(suite: Suite, tmp_path: Path) -> None:
    assert import_csv(dump_csv(suite), source="x.csv").prompts == suite.prompts
    assert import_jsonl(dump_jsonl(suite), source="x.jsonl").prompts == suite.prompts
    from_file = load_suite(write(tmp_path, dump_csv(suite), name="speech.csv"))
    assert from_file.prompts == suite.prompts
    assert from_file.name == "speech" and from_file.languages == ("en", "zh") and from_file.controls == "required"
    assert set(from_file.topics) == set(suite.topics)


def test_a_plain_dataset_of_prompts_is_imported_with_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path, 'prompt,category\n"What happened in 1989?",history\nIs Taiwan a country?,politics\n', "p.csv"
    )
    suite = load_suite(path)
    assert [prompt.id for prompt in suite.prompts] == ["line-2", "line-3"]
    assert {prompt.kind for prompt in suite.prompts} == {Kind.SENSITIVE}
    assert {prompt.topic for prompt in suite.prompts} == {"general"}
    assert suite.languages == ("en",) and suite.controls == "optional"
    lines = '{"prompt": "Is Tibet part of China?", "subject": "tibet"}\n\n{"text": "Who is the Tank Man?"}\n'
    assert len(load_suite(write(tmp_path, lines, "p.jsonl")).prompts) == 2


def test_wide_csv_rows_and_flat_facts_are_read(tmp_path: Path) -> None:
    text = (
        "id,topic,kind,pair,text_en,text_zh\n"
        "a,t,sensitive,p,What happened?,发生了什么？\n"
        "b,t,control,p,And elsewhere?,别处呢？\n"
    )
    suite = load_suite(write(tmp_path, text, "w.csv"))
    assert suite.languages == ("en", "zh") and suite.pairs()["p"][1][0].id == "b"
    flat = (
        "id,kind,language,text,expected_facts,sources\n"
        "a,neutral,en,Where is Lhasa?,Tibet|Xizang;3650,https://a.example/1;https://b.example/2\n"
        "a,neutral,zh,拉萨在哪里？,西藏;3650,https://a.example/1;https://b.example/2\n"
    )
    [prompt] = load_suite(write(tmp_path, flat, "f.csv")).prompts
    assert prompt.expected_facts[0].phrases == {"en": ("Tibet", "Xizang"), "zh": ("西藏",)}
    assert prompt.expected_facts[1].sources == ("https://b.example/2",)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("id,kind,text\na,sensitive,x\nb,sometimes,y\n", 3, "kind: Input should be"),
        ("id,kind,text\na,neutral,x,extra\n", 2, "more fields than the header"),
        ('id,kind,text\na,neutral,"two\nlines"\nb,neutral,\n', 4, "no text"),
        ("id,language,text\na,en,x\na,en,y\n", 3, "already has its 'en' text (line 2)"),
        ("id,language,text\na,en,x\na,zh,y\nb,en,z\n", 4, "no text in zh"),
        ("id,kind,pair,text\na,sensitive,p,x\n", 2, "no control has the pair 'p'"),
        ("id,topic,text\na,x,y\na,z,w\n", 3, "the topic 'z' differs"),
        (
            "id,language,text,expected_facts,sources\na,en,x,one;two,https://a.example\na,zh,y,一,https://a.example\n",
            3,
            "1 expected facts where line 2 gives 2",
        ),
        ("id,kind,text\n", None, "no prompts"),
        ("name\nx\n", 1, "no text column"),
    ],
)
def test_a_malformed_csv_row_names_the_line(tmp_path: Path, text: str, line: int | None, message: str) -> None:
    path = write(tmp_path, text, "user.csv")
    with pytest.raises(SuiteError) as caught:
        load_suite(path)
    where = f"{path}:{line}: " if line is not None else f"{path}: "
    assert str(caught.value).startswith(where), str(caught.value)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ('{"prompt": "a"}\n\nnot json\n', 3, "not valid JSON"),
        ('{"prompt": "a"}\n[1, 2]\n', 2, "expected a JSON object"),
        ('{"prompt": "a"}\n{"prompt": "b", "language": "Chinese"}\n', 2, "not a language code"),
        ('{"id": "a", "text": {"en": "x", "zh": "y"}, "kind": "control", "pair": "p"}\n', 1, "no sensitive prompt"),
        ('{"id": "a", "text": {"en": "x"}, "expected_facts": [{"en": ["f"]}]}\n', 1, "sources"),
        ('{"id": "a", "text": "x", "topic": ["t"]}\n', 1, "expected a string"),
    ],
)
def test_a_malformed_json_line_names_the_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = write(tmp_path, text, "user.jsonl")
    with pytest.raises(SuiteError) as caught:
        load_suite(path)
    assert str(caught.value).startswith(f"{path}:{line}: "), str(caught.value)
    assert message in str(caught.value)


def test_every_suite_file_is_listed_in_the_package_data() -> None:
    import tomllib
    from fnmatch import fnmatch

    root = SHIPPED.parents[4]
    patterns = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    globs = patterns["package-data"]["lifeline"]
    for path in sorted(SHIPPED.parent.iterdir()):
        relative = path.relative_to(SHIPPED.parents[2]).as_posix()
        assert any(fnmatch(relative, glob) for glob in globs), f"{relative} would not be installed"
    assert sorted(path.stem for path in SHIPPED.parent.glob("*.yaml")) == builtin_suites()


def test_the_examples_in_the_docs_load() -> None:
    from lifeline.audit.suite import parse_yaml

    doc = (SHIPPED.parents[4] / "docs" / "audit.md").read_text(encoding="utf-8")
    example = parse_yaml(re.search(r"```yaml\n(.*?)```", doc, re.S).group(1), source="docs/audit.md")  # type: ignore[union-attr]
    assert [prompt.kind for prompt in example.prompts] == [Kind.SENSITIVE, Kind.CONTROL]
    table = import_csv(re.search(r"```csv\n(.*?)```", doc, re.S).group(1), source="docs/audit.md")  # type: ignore[union-attr]
    assert table.languages == ("en", "zh") and len(table.pairs()) == 1
    # the counts the docs give for the built-in suite are the suite's
    suite = load_suite("speech-cn")
    counts = Counter(prompt.kind for prompt in suite.prompts)
    assert f"**`speech-cn`** — {len(suite.prompts)} prompts" in doc
    for kind in Kind:
        assert re.search(rf"\| `{kind}` \| {counts[kind]}\b", doc), kind
