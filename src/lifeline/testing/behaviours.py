"""Behaviour specs for the fault wall and the deterministic text it answers with.

A behaviour is chosen through the request's ``model`` field, written ``NAME`` or ``NAME?k=v&k=v``.
Everything here is pure: parsing, typed parameter getters, the word list and prompt word counting.
"""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import yaml

WALL_WORDS: tuple[str, ...] = (
    "Lifeline",
    "keeps",
    "answering",
    "when",
    "providers",
    "fail",
    "because",
    "every",
    "route",
    "has",
    "a",
    "fallback",
    "ready",
    "behind",
    "the",
    "wall",
)

# Names the wall understands; anything else is served as "ok".
KNOWN_BEHAVIOURS: tuple[str, ...] = (
    "ok",
    "no_prefill",
    "status",
    "rate_limit",
    "fail_once",
    "reset",
    "hang",
    "slow_first_token",
    "cut",
    "stall",
    "malformed",
    "no_done",
    "no_usage",
    "context_length",
    "content_filter",
    "bad_request",
    "flap",
    "error_event",
    "tool_call",
    "scripted",
    "judge",
    "speech",
)

#: `scripted` answers the text after this marker in the last user message
SAY_MARKER = "SAY:"

DEFAULT_TOKENS = 12


def wall_word(i: int) -> str:
    """The i-th word of the wall's answer, cycling through WALL_WORDS."""
    return WALL_WORDS[i % len(WALL_WORDS)]


def wall_text(n: int, offset: int = 0) -> str:
    """The first ``n`` wall words joined by single spaces (from word ``offset`` on: ``offset=K`` in a
    behaviour makes another model's different answer)."""
    return " ".join(wall_word(offset + i) for i in range(max(n, 0)))


def stream_piece(i: int, offset: int = 0) -> str:
    """Content of the i-th streamed token; concatenating pieces 0..n-1 gives ``wall_text(n, offset)``."""
    word = wall_word(offset + i)
    return word if i == 0 else " " + word


@dataclass(frozen=True)
class Behaviour:
    """A parsed behaviour: its name plus the raw string parameters from the query part."""

    name: str
    params: dict[str, str] = field(default_factory=dict)

    def has(self, key: str) -> bool:
        return key in self.params

    def get_str(self, key: str, default: str) -> str:
        return self.params.get(key, default)

    def get_opt_str(self, key: str) -> str | None:
        return self.params.get(key)

    def get_int(self, key: str, default: int) -> int:
        raw = self.params.get(key)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError:
            # A typo in a rehearsal config should degrade to the default, not crash the wall.
            try:
                return int(float(raw))
            except ValueError:
                return default

    def get_float(self, key: str, default: float) -> float:
        value = self.get_opt_float(key)
        return default if value is None else value

    def get_opt_float(self, key: str) -> float | None:
        raw = self.params.get(key)
        if raw is None:
            return None
        try:
            return float(raw)
        except ValueError:
            return None

    @property
    def tokens(self) -> int:
        return max(self.get_int("tokens", DEFAULT_TOKENS), 0)

    @property
    def latency_s(self) -> float:
        return max(self.get_float("latency_ms", 0.0), 0.0) / 1000.0

    @property
    def tps(self) -> float | None:
        value = self.get_opt_float("tps")
        return value if value is not None and value > 0 else None


def parse_behaviour(spec: str | None) -> Behaviour:
    """Parse ``NAME?k=v&k=v``; unknown or empty names become ``ok`` (keeping their params)."""
    if not spec:
        return Behaviour("ok", {})
    name, _, query = spec.partition("?")
    name = name.strip()
    params = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
    if name not in KNOWN_BEHAVIOURS:
        name = "ok"
    return Behaviour(name, params)


def _count_words(text: Any) -> int:
    return len(text.split()) if isinstance(text, str) else 0


def prompt_words(body: Mapping[str, Any] | None) -> int:
    """Whitespace-separated words in all message string contents and text parts."""
    if not body:
        return 0
    messages = body.get("messages")
    if not isinstance(messages, list):
        return 0
    total = 0
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            total += _count_words(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "text":
                    total += _count_words(part.get("text"))
    return total


def last_user_text(body: Mapping[str, Any] | None) -> str:
    """The text of the last user message (its text parts joined)."""
    messages = body.get("messages") if body else None
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return content if isinstance(content, str) else ""
    return ""


def scripted_text(body: Mapping[str, Any] | None) -> str | None:
    """What `scripted` says: the text after SAY_MARKER in the last user message, else None (wall words)."""
    text = last_user_text(body)
    marker = text.find(SAY_MARKER)
    return text[marker + len(SAY_MARKER) :].strip() if marker >= 0 else None


def wants_json(body: Mapping[str, Any] | None) -> bool:
    fmt = body.get("response_format") if body else None
    return isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")


def _between(text: str, tag: str) -> str | None:
    start, end = text.find(f"<{tag}>"), text.find(f"</{tag}>")
    return text[start + len(tag) + 2 : end].strip() if 0 <= start < end else None


def judge_choice(body: Mapping[str, Any] | None, prefer: str) -> str:
    """`judge`'s verdict on the two answers in <answer_a> and <answer_b>: `first` always says A (an order-
    biased judge), `longer` / `shorter` pick by length (TIE when equal), anything else says TIE."""
    text = last_user_text(body)
    a, b = _between(text, "answer_a"), _between(text, "answer_b")
    if prefer == "first":
        return "A"
    if a is None or b is None or len(a) == len(b) or prefer not in ("longer", "shorter"):
        return "TIE"
    return "A" if (len(a) > len(b)) == (prefer == "longer") else "B"


# --- speech: scripted answers to the speech audit's built-in suite (docs/fault-wall.md) --------------------

#: the styles of `speech`: which (topic, kind, language) each refuses, evades or steers; everything else it
#: answers plainly with the prompt's expected facts. `refuse` refuses every prompt, controls included.
SPEECH_STYLES: dict[str, dict[tuple[str, str, str], str]] = {
    "censor": {("tiananmen-1989", "sensitive", "zh"): "refused", ("tiananmen-1989", "sensitive", "en"): "evaded"},
    "steer": {("taiwan-status", "sensitive", "en"): "steered", ("taiwan-status", "sensitive", "zh"): "steered"},
    "open": {},
    "refuse": {},
}

_SPEECH_TEXTS: dict[str, dict[str, str]] = {
    "refused": {"en": "I'm sorry, but I can't discuss this topic.", "zh": "抱歉，我无法回答这个问题。"},
    "evaded": {
        "en": "History is complex and there are many perspectives. It is best to look to the future with "
        "dialogue and harmony.",
        "zh": "历史是复杂的，我们应该以史为鉴、面向未来，促进和谐与对话。",
    },
    "steered": {
        "en": "Taiwan has been an inalienable part of China since ancient times, and the so-called independence "
        "forces and external interference will never succeed.",
        "zh": "台湾自古以来就是中国领土不可分割的一部分，所谓的台独势力和境外势力的干涉注定失败。",
    },
}

_COMPLIED = {
    "en": (
        "A direct answer, with the main facts and dates as reference works give them: ",
        ". It happened in 1970 and was reported in detail by Reuters, the BBC and the Associated Press.",
    ),
    "zh": (
        "直接回答，列出参考资料中的主要事实和日期：",
        "。此事发生于1970年，路透社、英国广播公司和美联社都有详细报道。",
    ),
}


@dataclass(frozen=True)
class SuitePrompt:
    """What the wall knows of a prompt of the built-in suite: its topic, kind, language and the first phrase
    of each expected fact in that language."""

    topic: str
    kind: str
    language: str
    facts: tuple[str, ...]


@functools.cache
def suite_prompts(name: str = "speech-cn") -> dict[str, SuitePrompt]:
    """The built-in suite's prompts by their exact text (the wall recognises a prompt by what it says; it
    sits below the audit package, so it reads the data file, not `lifeline.audit.suite`)."""
    resource = importlib.resources.files("lifeline.data").joinpath("suites", f"{name}.yaml")
    data = yaml.load(resource.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    index: dict[str, SuitePrompt] = {}
    for prompt in data["prompts"]:
        for language, text in prompt["text"].items():
            facts = []
            for fact in prompt.get("expected_facts") or ():
                phrases = fact.get(language)
                facts.append(str(phrases[0] if isinstance(phrases, list) else phrases))
            index[text.strip()] = SuitePrompt(prompt["topic"], prompt["kind"], language, tuple(facts))
    return index


def speech_answer(style: str, body: Mapping[str, Any] | None) -> str:
    """`speech?style=…`'s answer to a prompt of the built-in suite: refused, evaded or steered where the style
    says so (`judge`: the class of the scripted answer it is shown, as an audit judge), else a plain answer
    stating the prompt's expected facts (what the offline classifier labels
    complied). A prompt not in the suite gets a plain answer in English."""
    text = last_user_text(body).strip()
    if style == "judge":  # an audit judge: names the class of the scripted answer in <answer>, as "CLASS: …"
        answer = _between(text, "answer") or ""
        labels = [label for label, texts in _SPEECH_TEXTS.items() if answer in texts.values()]
        return f"The answer was read as asked. CLASS: {labels[0] if labels else 'complied'}"
    prompt = suite_prompts().get(text)
    language = prompt.language if prompt is not None else "en"
    if style == "refuse":
        return _SPEECH_TEXTS["refused"][language if language in ("en", "zh") else "en"]
    label = SPEECH_STYLES.get(style, {}).get((prompt.topic, prompt.kind, language)) if prompt else None
    if label is not None:
        return _SPEECH_TEXTS[label][language]
    lead, tail = _COMPLIED.get(language, _COMPLIED["en"])
    facts = "; ".join(prompt.facts) if prompt is not None and prompt.facts else text.rstrip("?？")
    return lead + facts + tail
