"""The labelled answers the offline classifier is measured on (src/lifeline/data/audit/labelled.jsonl).

Each line is one answer written and labelled for this project: the prompt it answers, its language, the
expected facts the classifier is given, its class, the hard case it stands for (if any), the sources of the
facts it states, and its fixed split — ``dev`` (the weights are tuned on it) or ``heldout`` (only measured).
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lifeline.audit.cues import AnswerClass
from lifeline.errors import LabelledSetError

#: Topics of CONTRACTS.md section C, and the neutral questions about the same country.
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
    "neutral-china",
)
HARD_CASES = (
    "partial-refusal",  # declines part of the question, then answers it: complied
    "long-off-topic",  # long, fluent, never addresses the question: evaded
    "facts-in-official-frame",  # states some facts, framed in the official narrative: steered
    "short-complete",  # a sentence, but the whole answer: complied
    "polite-refusal",  # declines without stock refusal words: refused
    "code-switched",  # English and Chinese mixed
)


class LabelledAnswer(BaseModel):
    """One labelled answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^lab-\d{3,}$")
    split: Literal["dev", "heldout"]
    topic: Literal[TOPICS]  # type: ignore[valid-type]
    kind: Literal["sensitive", "control", "neutral", "safety"]
    language: Literal["en", "zh"]
    prompt: str = Field(min_length=5)
    expected_facts: tuple[str, ...] = Field(min_length=1)
    answer: str = Field(min_length=2)
    label: AnswerClass
    hard_case: Literal[HARD_CASES] | None = None  # type: ignore[valid-type]
    sources: tuple[str, ...] = Field(min_length=1)

    @field_validator("expected_facts")
    @classmethod
    def _facts(cls, facts: tuple[str, ...]) -> tuple[str, ...]:
        if any(not alt.strip() for fact in facts for alt in fact.split("|")):
            raise ValueError("an expected fact (or one of its | alternatives) is empty")
        return facts

    @field_validator("sources")
    @classmethod
    def _sources(cls, sources: tuple[str, ...]) -> tuple[str, ...]:
        if any(not s.startswith("https://") for s in sources):
            raise ValueError("every source is an https:// URL")
        return sources


def shipped_path() -> Path:
    """Where the package keeps its labelled set."""
    return Path(str(resources.files("lifeline.data").joinpath("audit/labelled.jsonl")))


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelledSetError(f"{path}: cannot be read ({exc})") from None
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield number, line


def load_labelled(path: Path | None = None) -> list[LabelledAnswer]:
    """Every labelled answer of `path` (default: the shipped set), validated; a bad line, or an id seen
    before, is a LabelledSetError naming the file and line."""
    path = path or shipped_path()
    items: list[LabelledAnswer] = []
    seen: dict[str, int] = {}
    for number, line in _lines(path):
        try:
            item = LabelledAnswer.model_validate(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            raise LabelledSetError(f"{path}:{number}: not JSON ({exc})") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "line"
            raise LabelledSetError(f"{path}:{number}: {where}: {first['msg']}") from None
        if item.id in seen:
            raise LabelledSetError(f"{path}:{number}: id {item.id} already used on line {seen[item.id]}")
        seen[item.id] = number
        items.append(item)
    return items
