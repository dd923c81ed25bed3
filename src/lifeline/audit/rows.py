"""Reading a user's CSV or JSON Lines suite into prompt drafts: one dict per prompt, with the line it starts on.

The rows of a file are flat (`id, topic, kind, pair, language, text, expected_facts, sources, note`, or a
`text_<language>` column per language) or, in JSON Lines, may carry a prompt in the YAML form (`text` as a
mapping of languages, `expected_facts` as a list of objects). Rows sharing an id are one prompt in several
languages. Validation of the drafts is the suite model's (suite.py); this module only gathers them, and every
problem it finds is a `SuiteError` naming the file and line.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson

from lifeline.errors import SuiteError

#: separators of the flat form: facts by ";", a fact's alternative phrases by "|" (phrases cannot hold them)
FACT_SEPARATOR = ";"
ALTERNATIVE_SEPARATOR = "|"
#: the columns of the flat form, in the order a CSV export writes them
COLUMNS = ("id", "topic", "kind", "pair", "language", "text", "expected_facts", "sources", "note")
#: what a prompt without them in the file is
DEFAULTS = {"topic": "general", "kind": "sensitive"}

Row = tuple[int, dict[str, Any]]


def read_csv(text: str, *, source: str) -> list[Row]:
    """The non-empty rows of a CSV file with a header row, each with the line it starts on."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames:
        raise SuiteError(f"{source}:1: no header row (expected columns such as id, topic, kind, text)")
    columns = [column.strip() for column in reader.fieldnames]
    if not any(column in ("text", "prompt") or column.startswith("text_") for column in columns):
        raise SuiteError(f"{source}:1: no text column (text, prompt or text_<language>)")
    rows: list[tuple[int, dict[str, Any]]] = []
    start = reader.line_num + 1
    try:
        for row in reader:
            if None in row:
                raise SuiteError(f"{source}:{start}: more fields than the header has columns")
            cleaned = {key.strip(): (value or "").strip() for key, value in row.items() if key is not None}
            if any(cleaned.values()):
                rows.append((start, cleaned))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise SuiteError(f"{source}:{reader.line_num}: not valid CSV ({exc})") from None
    return rows


def read_jsonl(text: str, *, source: str) -> list[Row]:
    """The objects of a JSON Lines file, each with its line; blank lines are skipped."""
    rows: list[tuple[int, dict[str, Any]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise SuiteError(f"{source}:{number}: not valid JSON ({exc})") from None
        if not isinstance(item, dict):
            raise SuiteError(f"{source}:{number}: expected a JSON object")
        rows.append((number, item))
    return rows


def drafts(rows: list[Row], *, source: str, language: str) -> list[tuple[int, dict[str, Any]]]:
    """Each prompt as the data of a `Prompt`, with the line of its first row, in file order."""
    if not rows:
        raise SuiteError(f"{source}: no prompts")
    gathered: dict[str, _Draft] = {}
    for line, row in rows:
        try:
            _add_row(gathered, line, row, language)
        except (ValueError, TypeError) as exc:
            raise SuiteError(f"{source}:{line}: {exc}") from None
    found = []
    for prompt_id, draft in gathered.items():
        data = {**DEFAULTS, **draft.fields, "id": prompt_id, "text": draft.text}
        if draft.facts:
            data["expected_facts"] = draft.facts
        found.append((draft.line, data))
    return found


class _Draft:
    """One prompt gathered from the rows (one per language, or one with every language) that share its id."""

    def __init__(self, line: int) -> None:
        self.line = line
        self.fields: dict[str, Any] = {}
        self.text: dict[str, str] = {}
        self.facts: list[dict[str, Any]] = []


def _add_row(drafts: dict[str, _Draft], line: int, row: dict[str, Any], default_language: str) -> None:
    prompt_id = _string(row.get("id")) or f"line-{line}"
    draft = drafts.get(prompt_id)
    if draft is None:
        draft = drafts[prompt_id] = _Draft(line)
    for key in ("topic", "kind", "pair", "note"):
        value = _string(row.get(key))
        if not value:
            continue
        if draft.fields.get(key, value) != value:
            raise ValueError(f"the {key} {value!r} differs from {draft.fields[key]!r} on line {draft.line}")
        draft.fields[key] = value
    texts = _texts(row, default_language)
    for code in texts:
        if code in draft.text:
            raise ValueError(f"the prompt {prompt_id!r} already has its {code!r} text (line {draft.line})")
    draft.text.update(texts)
    facts = _facts(row, list(texts))
    if facts:
        if not draft.facts:
            draft.facts = facts
        elif len(facts) != len(draft.facts):
            raise ValueError(f"{len(facts)} expected facts where line {draft.line} gives {len(draft.facts)}")
        else:
            for known, new in zip(draft.facts, facts, strict=True):
                known.update({key: value for key, value in new.items() if key != "sources"})
                known["sources"] = list(dict.fromkeys([*known["sources"], *new["sources"]]))


def _string(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value).strip()
    raise ValueError(f"expected a string, not {type(value).__name__}")


def _texts(row: dict[str, Any], default_language: str) -> dict[str, str]:
    texts: dict[str, str] = {}
    body = row.get("text", row.get("prompt"))
    if isinstance(body, dict):  # the YAML form: {"en": …, "zh": …}
        for code, value in body.items():
            texts[str(code)] = _string(value) or ""
    elif body is not None and _string(body):
        texts[_string(row.get("language")) or default_language] = _string(body) or ""
    for key, value in row.items():
        if key.startswith("text_") and _string(value):
            texts[key.removeprefix("text_")] = _string(value) or ""
    if not texts:
        raise ValueError("no text (give text, prompt or text_<language>)")
    return texts


def _facts(row: dict[str, Any], languages: list[str]) -> list[dict[str, Any]]:
    value = row.get("expected_facts")
    if value is None or value == "" or value == []:
        return []
    if isinstance(value, list):  # the YAML form: a list of {language: [phrases], sources: [urls]}
        if not all(isinstance(item, dict) for item in value):
            raise ValueError("expected_facts must be a list of objects or a ';'-separated string")
        return [dict(item) for item in value]
    if not isinstance(value, str):
        raise ValueError("expected_facts must be a list of objects or a ';'-separated string")
    if len(languages) != 1:
        raise ValueError("flat expected_facts belong to a row of one language (give its language column)")
    facts = [fact.strip() for fact in value.split(FACT_SEPARATOR)]
    urls = _string(row.get("sources")) or ""
    groups = [group.split() for group in urls.split(FACT_SEPARATOR)]
    if len(groups) == 1:
        groups = groups * len(facts)
    if len(groups) != len(facts):
        raise ValueError(f"{len(facts)} expected facts but {len(groups)} groups of sources")
    return [
        {languages[0]: [part.strip() for part in fact.split(ALTERNATIVE_SEPARATOR)], "sources": group}
        for fact, group in zip(facts, groups, strict=True)
    ]
