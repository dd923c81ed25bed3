"""Audit suites: the prompts an audit asks, read from YAML, or imported from a user's CSV or JSON Lines file.

A suite is data (docs/audit.md, "The suite format"): a name, its languages, its topics and its prompts. Each
prompt has an id, a topic, a kind (sensitive, control, neutral, safety), a text in every language of the
suite, optionally a pair id (a sensitive prompt and its mirrored control share one) and expected facts (short
phrases a plain answer would mention, with the sources that support them). `load_suite` reads a built-in
suite by name or a file by path; every problem is a `SuiteError` naming the file and line.
"""

from __future__ import annotations

import csv
import enum
import importlib.resources
import io
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from lifeline.audit import rows
from lifeline.errors import SuiteError

#: a language code: `en`, `zh`, `pt-BR` …
_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,119}$")
_BUILTIN_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


class Kind(enum.StrEnum):
    """What a prompt is for in the audit."""

    SENSITIVE = "sensitive"  # a question on a topic a censor cares about
    CONTROL = "control"  # the same kind of question about a comparable event or leader elsewhere
    NEUTRAL = "neutral"  # a plain factual question on the same country, nothing sensitive
    SAFETY = "safety"  # a request every responsible model should refuse


def _language(code: str) -> str:
    if not _LANGUAGE.match(code):
        raise ValueError(f"{code!r} is not a language code (en, zh, pt-BR …)")
    return code


def _phrase_list(value: Any) -> Any:
    """A fact's phrases as written: one phrase or a list; a year written bare (2005) is read as text."""
    items = value if isinstance(value, list) else [value]
    return [str(item) if isinstance(item, int) and not isinstance(item, bool) else item for item in items]


class Fact(BaseModel):
    """One fact a plain answer would mention: per language, phrases any one of which counts, and its sources.

    Written in a suite as ``{en: [June 1989, 4 June], zh: [1989年6月], sources: [https://…]}``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    phrases: dict[str, tuple[str, ...]]
    sources: tuple[str, ...] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _languages_as_keys(cls, value: Any) -> Any:
        if isinstance(value, Mapping) and "phrases" not in value:
            rest = {key: item for key, item in value.items() if key != "sources"}
            return {
                "phrases": {key: _phrase_list(item) for key, item in rest.items()},
                "sources": value.get("sources"),
            }
        return value

    @field_validator("phrases")
    @classmethod
    def _phrases(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        if not value:
            raise ValueError("a fact needs its phrases in at least one language")
        for language, phrases in value.items():
            _language(language)
            if not phrases:
                raise ValueError(f"no phrase for {language!r}")
            for phrase in phrases:
                if not phrase.strip():
                    raise ValueError(f"an empty phrase for {language!r}")
                if rows.FACT_SEPARATOR in phrase or rows.ALTERNATIVE_SEPARATOR in phrase:
                    raise ValueError(f"a phrase cannot hold ';' or '|': {phrase!r}")
        return value

    @field_validator("sources")
    @classmethod
    def _sources(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            parts = urlsplit(url)
            if parts.scheme not in ("https", "http") or not parts.netloc or any(c.isspace() for c in url):
                raise ValueError(f"a source must be an http(s) URL, not {url!r}")
        return value

    def phrases_in(self, language: str) -> tuple[str, ...]:
        return self.phrases.get(language, ())


class Prompt(BaseModel):
    """One question of a suite, in every language of the suite."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    topic: str = Field(min_length=1, max_length=80)
    kind: Kind
    pair: str | None = None
    text: dict[str, str]
    expected_facts: tuple[Fact, ...] = ()
    note: str = ""  # why the prompt is there, for the people who maintain the suite

    @model_validator(mode="before")
    @classmethod
    def _one_language(cls, value: Any) -> Any:
        """`language: en` with `text: "…"` is the short form of `text: {en: "…"}`."""
        if not isinstance(value, Mapping) or "language" not in value:
            return value
        rest = {key: item for key, item in value.items() if key != "language"}
        if not isinstance(value["language"], str) or not isinstance(value.get("text"), str):
            raise ValueError('"language" goes with a "text" given as one string (or give text as {en: …, zh: …})')
        return {**rest, "text": {value["language"]: value["text"]}}

    @field_validator("id", "pair")
    @classmethod
    def _identifier(cls, value: str | None) -> str | None:
        if value is not None and not _ID.match(value):
            raise ValueError(f"{value!r} is not an id (letters, digits and . _ : -, up to 120)")
        return value

    @field_validator("text")
    @classmethod
    def _texts(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("a prompt needs its text in at least one language")
        for language, text in value.items():
            _language(language)
            if not text.strip():
                raise ValueError(f"the {language!r} text is empty")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Prompt:
        if self.pair is not None and self.kind not in (Kind.SENSITIVE, Kind.CONTROL):
            raise ValueError(f"only sensitive and control prompts have a pair, not a {self.kind} prompt")
        if self.kind is Kind.CONTROL and self.pair is None:
            raise ValueError("a control needs the pair id of the sensitive prompt it mirrors")
        for fact in self.expected_facts:
            if set(fact.phrases) != set(self.text):
                raise ValueError(
                    f"an expected fact is given in {sorted(fact.phrases)}, the prompt in {sorted(self.text)}: "
                    "give every fact in each language of the prompt"
                )
        return self

    def text_in(self, language: str) -> str:
        return self.text[language]


class Suite(BaseModel):
    """A named set of prompts; `problems()` lists what breaks the rules across prompts (pairs, ids, topics)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=80)
    description: str = ""
    version: int = 1
    languages: tuple[str, ...] = Field(min_length=1)
    topics: dict[str, str]
    #: "required": every sensitive prompt has a pair id and a control with it; "optional": a sensitive
    #: prompt may stand alone (an imported dataset without controls; its gap cannot be measured)
    controls: Literal["required", "optional"] = "required"
    #: named source URLs, so that a fact may list `wiki-kent-state` instead of repeating the URL
    references: dict[str, str] = {}
    prompts: tuple[Prompt, ...] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _resolve_references(cls, value: Any) -> Any:
        if not isinstance(value, Mapping) or not isinstance(value.get("references"), Mapping):
            return value
        names = value["references"]
        prompts = value.get("prompts")
        if not isinstance(prompts, list):
            return value
        resolved = []
        for prompt in prompts:
            facts = prompt.get("expected_facts") if isinstance(prompt, Mapping) else None
            if isinstance(facts, list):
                facts = [
                    {**fact, "sources": [names.get(s, s) if isinstance(s, str) else s for s in fact["sources"]]}
                    if isinstance(fact, Mapping) and isinstance(fact.get("sources"), list)
                    else fact
                    for fact in facts
                ]
                prompt = {**prompt, "expected_facts": facts}
            resolved.append(prompt)
        return {**value, "prompts": resolved}

    @field_validator("references")
    @classmethod
    def _references(cls, value: dict[str, str]) -> dict[str, str]:
        Fact._sources(tuple(value.values()))
        return value

    @field_validator("languages")
    @classmethod
    def _languages(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for code in value:
            _language(code)
        if len(set(value)) != len(value):
            raise ValueError("a language is listed twice")
        return value

    @model_validator(mode="after")
    def _rules(self, info: ValidationInfo) -> Suite:
        if isinstance(info.context, dict) and info.context.get("defer_rules"):
            return self  # the loader checks the rules itself, to name the line of the prompt at fault
        for index, message in self.problems():
            raise ValueError(f"prompt {self.prompts[index].id!r}: {message}")
        return self

    def problems(self) -> list[tuple[int, str]]:
        """(index of the prompt, what is wrong) for every rule across prompts this suite breaks."""
        found: list[tuple[int, str]] = []
        seen: dict[str, int] = {}
        sensitive: dict[str, int] = {}
        controls: dict[str, list[int]] = {}
        for index, prompt in enumerate(self.prompts):
            if prompt.id in seen:
                found.append((index, f"the id {prompt.id!r} is used twice"))
            seen.setdefault(prompt.id, index)
            if prompt.topic not in self.topics:
                found.append((index, f"the topic {prompt.topic!r} is not one of the suite's topics"))
            missing = [code for code in self.languages if code not in prompt.text]
            extra = [code for code in prompt.text if code not in self.languages]
            if missing:
                found.append((index, f"no text in {', '.join(missing)}: give every prompt each suite language"))
            if extra:
                found.append((index, f"a text in {', '.join(extra)}, which is not a language of the suite"))
            if prompt.kind is Kind.SENSITIVE:
                if prompt.pair is None:
                    if self.controls == "required":
                        found.append((index, "a sensitive prompt needs a pair id shared with its control"))
                elif prompt.pair in sensitive:
                    found.append((index, f"the pair {prompt.pair!r} already has its sensitive prompt"))
                else:
                    sensitive[prompt.pair] = index
            elif prompt.kind is Kind.CONTROL and prompt.pair is not None:
                controls.setdefault(prompt.pair, []).append(index)
        for pair, index in sensitive.items():
            if pair not in controls:
                found.append((index, f"no control has the pair {pair!r}"))
        for pair, indexes in controls.items():
            if pair not in sensitive:
                found.extend((i, f"no sensitive prompt has the pair {pair!r}") for i in indexes)
                continue
            for i in indexes:
                if self.prompts[i].topic != self.prompts[sensitive[pair]].topic:
                    found.append(
                        (
                            i,
                            f"a control is counted under its sensitive prompt's topic, "
                            f"{self.prompts[sensitive[pair]].topic!r}",
                        )
                    )
        return sorted(found, key=lambda problem: problem[0])

    def subset(self, *, topics: Collection[str] | None = None, per_topic: int | None = None) -> Suite:
        """A smaller suite that keeps the rules: the given topics, and of each kind in each topic the first
        `per_topic` prompts (a sensitive prompt with its controls, so that every pair stays whole)."""
        unknown = set(topics or ()) - set(self.topics)
        if unknown:
            raise SuiteError(
                f"suite {self.name}: no topic {', '.join(sorted(unknown))} (it has {', '.join(self.topics)})"
            )
        if per_topic is not None and per_topic < 1:
            raise SuiteError(f"suite {self.name}: keep at least one prompt per topic, not {per_topic}")
        kept_pairs: set[str] = set()
        counts: dict[tuple[str, Kind], int] = {}
        chosen: list[Prompt] = []
        for prompt in self.prompts:
            if topics is not None and prompt.topic not in topics:
                continue
            if prompt.kind is Kind.CONTROL:
                if prompt.pair in kept_pairs:
                    chosen.append(prompt)
                continue
            seen = counts.get((prompt.topic, prompt.kind), 0)
            if per_topic is not None and seen >= per_topic:
                continue
            counts[prompt.topic, prompt.kind] = seen + 1
            chosen.append(prompt)
            if prompt.pair is not None:
                kept_pairs.add(prompt.pair)
        used = {prompt.topic for prompt in chosen}
        return self.model_copy(
            update={"topics": {t: d for t, d in self.topics.items() if t in used}, "prompts": tuple(chosen)}
        )

    def of_kind(self, *kinds: Kind) -> list[Prompt]:
        return [prompt for prompt in self.prompts if prompt.kind in kinds]

    def control_of(self, prompt: Prompt) -> list[Prompt]:
        """The mirrored controls of a sensitive prompt (usually one)."""
        if prompt.kind is not Kind.SENSITIVE or prompt.pair is None:
            return []
        return [other for other in self.prompts if other.kind is Kind.CONTROL and other.pair == prompt.pair]

    def pairs(self) -> dict[str, tuple[Prompt, list[Prompt]]]:
        """Each pair id → (its sensitive prompt, its controls)."""
        return {
            prompt.pair: (prompt, self.control_of(prompt))
            for prompt in self.prompts
            if prompt.kind is Kind.SENSITIVE and prompt.pair is not None
        }


# ---------------------------------------------------------------------------------------------------- loading


def builtin_suites() -> list[str]:
    """The names of the suites shipped in the package."""
    folder = importlib.resources.files("lifeline.data").joinpath("suites")
    return sorted(item.name.removesuffix(".yaml") for item in folder.iterdir() if item.name.endswith(".yaml"))


def load_suite(name_or_path: str | Path) -> Suite:
    """A built-in suite by name (`speech-cn`) or a suite file: YAML, CSV or JSON Lines (by its suffix)."""
    if isinstance(name_or_path, Path) or not _BUILTIN_NAME.match(name_or_path):
        return _load_file(Path(name_or_path))  # a built-in name has no suffix and no slash
    resource = importlib.resources.files("lifeline.data").joinpath("suites", f"{name_or_path}.yaml")
    if not resource.is_file():
        raise SuiteError(
            f"no built-in suite {name_or_path!r} (built in: {', '.join(builtin_suites())}); "
            "give a path to a .yaml, .csv or .jsonl file for your own"
        )
    return parse_yaml(resource.read_text(encoding="utf-8"), source=f"built-in suite {name_or_path}")


def _load_file(path: Path) -> Suite:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SuiteError(f"{path}: not UTF-8 text") from None
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return parse_yaml(text, source=str(path))
    if suffix == ".csv":
        return import_csv(text, source=str(path), name=path.stem)
    if suffix == ".jsonl":
        return import_jsonl(text, source=str(path), name=path.stem)
    raise SuiteError(f"{path}: a suite is a .yaml, .csv or .jsonl file")


def parse_yaml(text: str, *, source: str) -> Suite:
    """A suite written in the YAML format; errors name `source` and the line."""
    try:
        # composed once (by libyaml when present), so that errors can name the line of any node
        root = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        data = yaml.SafeLoader("").construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f":{mark.line + 1}" if mark is not None else ""
        raise SuiteError(f"{source}{at}: not valid YAML ({exc.problem or exc.context})") from None
    except yaml.YAMLError as exc:
        raise SuiteError(f"{source}: not valid YAML ({exc})") from None
    if root is None or not isinstance(data, dict):
        raise SuiteError(f"{source}:1: expected a mapping with name, languages, topics and prompts")
    duplicate = _duplicate_key(root)
    if duplicate is not None:
        key, number = duplicate
        raise SuiteError(f"{source}:{number}: the key {key!r} is given twice")
    try:
        suite = Suite.model_validate(data, context={"defer_rules": True})
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(error["loc"])
        raise SuiteError(f"{source}:{_line_of(root, loc)}: {_where(loc)}{_message(error)}") from None
    for index, message in suite.problems():
        raise SuiteError(
            f"{source}:{_line_of(root, ('prompts', index))}: prompt {suite.prompts[index].id!r}: {message}"
        )
    return suite


def _message(error: Any) -> str:
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def _where(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) + ": " if loc else ""


def _line_of(node: yaml.Node, loc: Sequence[Any]) -> int:
    """The line (1-based) of the deepest node of the YAML tree on the path `loc` (a pydantic error location)."""
    line = node.start_mark.line + 1
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    child = value
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            child = node.value[part]
        if child is None:
            break
        if isinstance(node, yaml.SequenceNode):
            line = child.start_mark.line + 1
        else:  # the line of the key: a nested mapping or list starts on the line after it
            line = next(k for k, v in node.value if v is child).start_mark.line + 1
        node = child
    return line


def _duplicate_key(node: yaml.Node) -> tuple[str, int] | None:
    """The first key given twice in one mapping anywhere in the tree (PyYAML would keep the last silently)."""
    if isinstance(node, yaml.MappingNode):
        keys: set[str] = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in keys:
                    return key.value, key.start_mark.line + 1
                keys.add(key.value)
            found = _duplicate_key(value)
            if found is not None:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            found = _duplicate_key(item)
            if found is not None:
                return found
    return None


# ---------------------------------------------------------------------------------------------- importing


def import_csv(text: str, *, source: str, name: str = "imported", language: str = "en") -> Suite:
    """A suite from CSV with a header row (docs/audit.md, "Importing a CSV or JSON Lines file")."""
    return _suite_from_drafts(
        rows.drafts(rows.read_csv(text, source=source), source=source, language=language), source=source, name=name
    )


def import_jsonl(text: str, *, source: str, name: str = "imported", language: str = "en") -> Suite:
    """A suite from JSON Lines: one prompt (or one language of a prompt) per line."""
    return _suite_from_drafts(
        rows.drafts(rows.read_jsonl(text, source=source), source=source, language=language), source=source, name=name
    )


def _suite_from_drafts(drafts: list[tuple[int, dict[str, Any]]], *, source: str, name: str) -> Suite:
    prompts: list[Prompt] = []
    for line, data in drafts:
        try:
            prompts.append(Prompt.model_validate(data))
        except ValidationError as exc:
            error = exc.errors()[0]
            raise SuiteError(f"{source}:{line}: {_where(tuple(error['loc']))}{_message(error)}") from None
    languages: list[str] = []
    for prompt in prompts:
        languages.extend(code for code in prompt.text if code not in languages)
    paired = any(prompt.pair is not None for prompt in prompts)
    try:
        suite = Suite.model_validate(
            {
                "name": name,
                "languages": languages,
                "topics": {prompt.topic: prompt.topic for prompt in prompts},
                "controls": "required" if paired else "optional",
                "prompts": prompts,
            },
            context={"defer_rules": True},
        )
    except ValidationError as exc:
        raise SuiteError(f"{source}: {_message(exc.errors()[0])}") from None
    for index, message in suite.problems():
        raise SuiteError(f"{source}:{drafts[index][0]}: prompt {suite.prompts[index].id!r}: {message}")
    return suite


# ---------------------------------------------------------------------------------------------- writing


def _flat_rows(suite: Suite) -> Iterator[dict[str, str]]:
    for prompt in suite.prompts:
        for code, text in prompt.text.items():
            yield {
                "id": prompt.id,
                "topic": prompt.topic,
                "kind": str(prompt.kind),
                "pair": prompt.pair or "",
                "language": code,
                "text": text,
                "expected_facts": rows.FACT_SEPARATOR.join(
                    rows.ALTERNATIVE_SEPARATOR.join(fact.phrases_in(code)) for fact in prompt.expected_facts
                ),
                "sources": rows.FACT_SEPARATOR.join(" ".join(fact.sources) for fact in prompt.expected_facts),
                "note": prompt.note,
            }


def dump_csv(suite: Suite) -> str:
    """The suite as CSV, one row per prompt and language (what `import_csv` reads back)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=rows.COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(_flat_rows(suite))
    return out.getvalue()


def dump_jsonl(suite: Suite) -> str:
    """The suite as JSON Lines, one prompt per line in the YAML form (what `import_jsonl` reads back)."""
    lines = []
    for prompt in suite.prompts:
        item = prompt.model_dump(mode="json", exclude_defaults=True)
        item["kind"] = str(prompt.kind)
        item["topic"] = prompt.topic
        if prompt.expected_facts:
            item["expected_facts"] = [{**fact.phrases, "sources": list(fact.sources)} for fact in prompt.expected_facts]
        lines.append(orjson.dumps(item).decode())
    return "\n".join(lines) + "\n"
