"""Reading items: the contract's format, and a bad line named by file and line."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from lifeline.errors import EvalInputError
from lifeline.eval.items import items_from, load_items

GOOD = {
    "id": "cap_1",
    "request": {"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
    "alias": "chat",
    "reference": {"answer": "42", "match": "numeric", "tolerance": 0.5},
    "checks": ["json", "length"],
    "baseline": {
        "target": "openai",
        "response": {"choices": []},
        "latency_ms": 812.0,
        "ttft_ms": None,
        "cost_usd": 0.00012,
        "error": None,
    },
    "future_key": "ignored",
}


def write(tmp_path: Path, *lines: object) -> Path:
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(line if isinstance(line, str) else orjson.dumps(line).decode() for line in lines))
    return path


def test_a_good_file_is_read_with_every_field(tmp_path: Path) -> None:
    [item] = load_items(write(tmp_path, GOOD, ""))
    assert item.id == "cap_1" and item.alias == "chat"
    assert item.reference is not None and item.reference.match == "numeric" and item.reference.tolerance == 0.5
    assert item.checks == ("json", "length")
    assert item.baseline is not None and item.baseline.latency_ms == 812.0 and item.baseline.target == "openai"


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("{not json", "not a JSON object"),
        ("[1, 2]", "not a JSON object"),
        ({"request": GOOD["request"]}, "'id'"),
        ({"id": "x", "request": {"messages": []}}, "'request'"),
        ({"id": "x", "request": GOOD["request"], "reference": {"answer": "1", "match": "fuzzy"}}, "'match'"),
        ({"id": "x", "request": GOOD["request"], "checks": ["vibes"]}, "unknown check"),
        ({"id": "x", "request": GOOD["request"], "baseline": {"latency_ms": "fast"}}, "latency_ms"),
        (GOOD, "appears twice"),
    ],
)
def test_a_bad_line_is_named_by_file_and_line(tmp_path: Path, bad: object, says: str) -> None:
    path = write(tmp_path, GOOD, "", bad)
    with pytest.raises(EvalInputError) as caught:
        load_items(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:3: ")
    assert says in message
    assert "\n" not in message


def test_an_empty_or_missing_file(tmp_path: Path) -> None:
    with pytest.raises(EvalInputError, match="no items"):
        load_items(write(tmp_path, ""))
    with pytest.raises(EvalInputError, match="cannot be read"):
        load_items(tmp_path / "absent.jsonl")


def test_dicts_from_the_capture_store_are_read_alike() -> None:
    [item] = items_from(iter([GOOD]), "captured pairs")
    assert item.id == "cap_1"
    with pytest.raises(EvalInputError, match="captured pairs #1"):
        items_from([{"id": 1}], "captured pairs")
