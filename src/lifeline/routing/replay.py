"""Replay-verified restart: a broken answer restarted on another target, checked against what was sent.

When a stream breaks after content and no target can continue it from the text already sent, the request
is sent again from the start. Its output is held back until it has reproduced that text: if the
regenerated answer begins with exactly what the client has — compared word by word, so that whitespace
runs do not matter — only what follows is sent, and the client sees one seamless answer. If it differs
(another wording, a tool call, an end too soon), nothing of it is sent. The hold is bounded: at most the
sent text's length plus a margin, and the request's deadline through the provider's own timeouts.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson

from lifeline.providers.base import Chunk

#: characters a regeneration may run beyond the sent text's length before a verdict (whitespace may differ)
MARGIN = 64
#: before a regeneration could have reproduced the sent text, it is compared every this many characters
CHECK_EVERY = 256
_WORD = re.compile(r"\S+")


@dataclass(frozen=True, slots=True)
class Verdict:
    """`matched`: the regeneration reproduced the sent text, and the remainder starts at `at`; otherwise
    `diverged` says whether it differs already (else: more text is needed)."""

    matched: bool = False
    diverged: bool = False
    at: int = 0


NEED_MORE = Verdict()
DIVERGED = Verdict(diverged=True)


def compare(sent: str, regenerated: str, finished: bool) -> Verdict:
    """Whether `regenerated` begins with `sent`, whitespace runs aside. A word the regeneration is still in
    the middle of (it touches the end of the text so far) is not judged until it is complete, unless the
    answer has `finished`."""
    words = sent.split()
    if not words:
        at = _skip_space(regenerated, 0, finished)
        return NEED_MORE if at < 0 else Verdict(matched=True, at=at)
    produced = list(_WORD.finditer(regenerated))
    open_end = not finished  # the last word so far may still grow
    for i, word in enumerate(words):
        if i >= len(produced):
            return DIVERGED if finished else NEED_MORE
        got = produced[i]
        growing = open_end and got.end() == len(regenerated)
        last = i == len(words) - 1
        if last and not sent[-1].isspace():
            # the client's text may end inside a word: the regenerated word need only start with it
            if got.group().startswith(word):
                return Verdict(matched=True, at=got.start() + len(word))
            return NEED_MORE if growing and word.startswith(got.group()) else DIVERGED
        if growing:
            return NEED_MORE if word.startswith(got.group()) else DIVERGED
        if got.group() != word:
            return DIVERGED
    # the client's text ended with whitespace after its last word: the remainder starts at the next word
    at = _skip_space(regenerated, produced[len(words) - 1].end(), finished)
    return NEED_MORE if at < 0 else Verdict(matched=True, at=at)


def _skip_space(text: str, start: int, finished: bool) -> int:
    """The index of the first non-space character from `start`; -1 when there is none yet."""
    at = start
    while at < len(text) and text[at].isspace():
        at += 1
    return at if at < len(text) or finished else -1


def _delta_text(chunk: Chunk) -> tuple[str, bool]:
    """Choice 0's text in a chunk, and whether the chunk starts something that cannot be compared (a tool
    call, another choice)."""
    text, foreign = "", False
    for choice in chunk.data.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            continue
        if delta.get("tool_calls") or delta.get("function_call") or delta.get("refusal"):
            foreign = True
        content = delta.get("content")
        if isinstance(content, str):
            if choice.get("index", 0) == 0:
                text += content
            elif content:
                foreign = True
    return text, foreign


def remainder_chunk(chunk: Chunk, rest: str) -> Chunk:
    """`chunk` (the one that completed the match) carrying only the text after the sent part."""
    data = dict(chunk.data)
    choices = [dict(c) if isinstance(c, dict) else c for c in data.get("choices") or []]
    for choice in choices:
        if isinstance(choice, dict) and choice.get("index", 0) == 0 and isinstance(choice.get("delta"), dict):
            choice["delta"] = {**choice["delta"], "content": rest}
    data["choices"] = choices
    return Chunk(data=data, raw=orjson.dumps(data), content=bool(rest), finish=chunk.finish, usage=chunk.usage)


async def read_replay(stream: AsyncIterator[Chunk], sent: str) -> list[Chunk] | None:
    """Read a restarted answer until it has reproduced `sent`: the chunk to send next (the remainder of
    the matching one; none when nothing follows yet), with `stream` left open for the rest; or None when
    the regeneration differs, with `stream` closed. An upstream failure while reading is raised."""
    regenerated = ""
    bound = len(sent) + MARGIN + len(sent) // 10
    # Comparing is linear in the text: before the regeneration is long enough to have reproduced the sent
    # text (whitespace runs collapsed), it is compared only every CHECK_EVERY characters, to stop early on a
    # divergence without comparing the whole prefix again at every chunk.
    needed, checked = len(" ".join(sent.split())), 0
    try:
        async for chunk in stream:
            text, foreign = _delta_text(chunk)
            regenerated += text
            if foreign:
                break
            if not (text or chunk.finish):
                continue
            if len(regenerated) < needed and len(regenerated) - checked < CHECK_EVERY and not chunk.finish:
                continue
            checked = len(regenerated)
            verdict = compare(sent, regenerated, chunk.finish)
            if verdict.matched:
                rest = regenerated[verdict.at :]
                if rest or chunk.finish or chunk.usage is not None:
                    return [remainder_chunk(chunk, rest)]
                return []
            if verdict.diverged or chunk.finish or len(regenerated) > bound:
                break
    except BaseException:
        await stream.aclose()  # type: ignore[attr-defined]
        raise
    await stream.aclose()  # type: ignore[attr-defined]
    return None


#: characters of a continuation compared with the start of the text sent, to tell a target that ignored the
#: prefix (and began the answer again) from one that continued it
RESTART_PROBE = 24


async def read_continuation(
    stream: AsyncIterator[Chunk], sent: str
) -> tuple[list[Chunk], AsyncIterator[Chunk], bool] | None:
    """Read the start of a continuation from a target whose prefill support is unknown. A server that ignores
    the prefix marker answers afresh: its text begins as `sent` did. Then the answer is checked as a replay
    (`read_replay`). Returns the chunks to send first, the rest of the stream and whether it had restarted;
    None when it restarted and differs (the stream is closed)."""
    held: list[Chunk] = []
    text, probe = "", " ".join(sent.split())[:RESTART_PROBE]
    try:
        async for chunk in stream:
            held.append(chunk)
            piece, foreign = _delta_text(chunk)
            text += piece
            said = " ".join(text.split())
            if foreign or chunk.finish or len(said) >= len(probe) or not probe.startswith(said):
                break
    except BaseException:
        await stream.aclose()  # type: ignore[attr-defined]
        raise
    if not probe or not " ".join(text.split()).startswith(probe):
        return held, stream, False
    rest = _chain(held, stream)
    head = await read_replay(rest, sent)
    return None if head is None else (head, rest, True)


async def _chain(held: list[Chunk], stream: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    """The chunks already read, then the rest of `stream`; closing it closes `stream`."""
    try:
        for chunk in held:
            yield chunk
        async for chunk in stream:
            yield chunk
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
