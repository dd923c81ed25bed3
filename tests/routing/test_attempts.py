"""The typed attempt log: its counts, its wording in error messages, and the ledger's form of it (which
must stay what the ledger has always stored); and that no module matches an outcome by its wording."""

from __future__ import annotations

import ast
from pathlib import Path

import orjson
import pytest

import lifeline
from lifeline import errors
from lifeline.attempts import Attempt, AttemptLog, Outcome, SkipReason


def a_log() -> AttemptLog:
    return AttemptLog(
        [
            Attempt("a", Outcome.UNAVAILABLE, 503, 0.123456),
            Attempt.skipped("b", SkipReason.CIRCUIT_OPEN),
            Attempt.skipped("c", SkipReason.CONTEXT_WINDOW, "4096 < ~5000 tokens needed"),
            Attempt("d", Outcome.OK, 200, 0.5),
        ]
    )


def test_tries_count_only_the_targets_sent_the_request() -> None:
    log = a_log()
    assert (len(log), log.tries) == (4, 2)
    assert log.tried_targets == {"a", "d"}
    assert log.last == Attempt("d", Outcome.OK, 200, 0.5)
    assert AttemptLog().tries == 0 and AttemptLog().last is None


def test_failed_counts_the_tries_that_were_not_a_plain_answer() -> None:
    assert a_log().failed == 1
    hedged = AttemptLog([Attempt("slow", Outcome.HEDGE_LOST), Attempt("fast", Outcome.OK, 200)])
    continued = AttemptLog([Attempt("a", Outcome.OK, 200), Attempt("b", Outcome.CONTINUED, 200)])
    skipped_only = AttemptLog([Attempt.skipped("a", SkipReason.DRAINED), Attempt("b", Outcome.OK, 200)])
    assert (hedged.failed, continued.failed, skipped_only.failed) == (1, 1, 0)


def test_the_summary_words_each_attempt_for_error_messages() -> None:
    assert a_log().summary == (
        "a: unavailable (503); b: skipped: circuit open; "
        "c: skipped: context window 4096 < ~5000 tokens needed; d: ok (200)"
    )
    assert AttemptLog().summary == "none"


def test_all_busy_only_when_every_try_found_its_target_busy() -> None:
    busy = AttemptLog(
        [
            Attempt("a", Outcome.RATE_LIMITED, 429),
            Attempt.skipped("b", SkipReason.RATE_LIMITED),
            Attempt("c", Outcome.POOL_FULL),
            Attempt("d", Outcome.OVERLOADED, 503),
        ]
    )
    assert busy.all_busy
    assert not AttemptLog([*busy, Attempt("e", Outcome.UNAVAILABLE, 503)]).all_busy
    assert not AttemptLog([Attempt.skipped("a", SkipReason.RATE_LIMITED)]).all_busy  # nothing was tried


def test_the_ledger_form_is_what_the_ledger_has_always_stored() -> None:
    assert a_log().as_ledger() == [
        {"target": "a", "outcome": "unavailable", "status": 503, "latency": 0.1235},
        {"target": "b", "outcome": "skipped: circuit open", "status": None, "latency": 0.0},
        {
            "target": "c",
            "outcome": "skipped: context window 4096 < ~5000 tokens needed",
            "status": None,
            "latency": 0.0,
        },
        {"target": "d", "outcome": "ok", "status": 200, "latency": 0.5},
    ]


def test_every_outcome_and_skip_reason_survives_the_ledger_round_trip() -> None:
    tried = [o for o in Outcome if o is not Outcome.SKIPPED]
    attempts = [Attempt(f"t{i}", o, 200 if o.answered else None, 0.25) for i, o in enumerate(tried)]
    attempts += [Attempt.skipped(f"s{i}", r) for i, r in enumerate(SkipReason)]
    attempts.append(Attempt.skipped("x", SkipReason.CONTEXT_WINDOW, "10 < ~50 tokens needed"))
    log = AttemptLog(attempts)
    stored = orjson.loads(orjson.dumps(log.as_ledger()))
    assert AttemptLog.from_ledger(stored) == log
    # "context window too small" is its own reason, not "context window" with a detail
    too_small = Attempt.from_ledger({"target": "b", "outcome": "skipped: context window too small"})
    assert (too_small.skip, too_small.detail) == (SkipReason.CONTEXT_TOO_SMALL, "")


def test_with_fallbacks_each_attempt_says_its_alias_through_the_ledger_round_trip() -> None:
    log = a_log()
    assert not log.aliased
    log.for_alias("chat")
    log.for_alias("backup", start=3)
    assert log.aliased
    assert [row.get("alias") for row in log.as_ledger()] == ["chat", "chat", "chat", "backup"]
    stored = orjson.loads(orjson.dumps(log.as_ledger()))
    assert [a.alias for a in AttemptLog.from_ledger(stored)] == [a.alias for a in log]
    assert AttemptLog.from_ledger(stored).as_ledger() == stored
    assert log.ended(Outcome.BROKEN).as_ledger()[-1]["alias"] == "backup"


def test_a_relayed_stream_that_ended_badly_says_so_on_its_answering_attempt() -> None:
    log = AttemptLog([Attempt("a", Outcome.UNAVAILABLE, 503), Attempt("b", Outcome.OK, 200, 0.1)])
    assert log.ended(Outcome.OK) is log
    broken = log.ended(Outcome.BROKEN)
    assert [a.outcome for a in broken] == [Outcome.UNAVAILABLE, Outcome.BROKEN]
    assert broken.last == Attempt("b", Outcome.BROKEN, 200, 0.1)
    assert log.last is not None and log.last.outcome is Outcome.OK  # the router's own log is unchanged
    assert log.ended(Outcome.CLIENT_CLOSED).as_ledger()[-1]["outcome"] == "client_closed"


def test_an_attempt_has_a_skip_reason_exactly_when_it_was_skipped() -> None:
    with pytest.raises(ValueError):
        Attempt("a", Outcome.SKIPPED)
    with pytest.raises(ValueError):
        Attempt("a", Outcome.OK, skip=SkipReason.DRAINED)


def test_every_upstream_error_carries_its_own_outcome() -> None:
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.UpstreamError)]
    assert len(classes) > 10
    assert all(isinstance(c.outcome, Outcome) for c in classes)
    assert len({c.outcome for c in classes}) == len(classes)  # one outcome per class: the log tells them apart


# --- no outcome or skip reason is matched by its wording -----------------------------------------------

SOURCE = Path(lifeline.__file__).parent
#: a drill result's own outcome ("answered", "incomplete", "error") is not an attempt's
OTHER_VOCABULARIES = {"drill/runner.py", "drill/report.py", "drill/summary.py", "cli/drill.py", "cli/progress.py"}
#: words that also mean something else: the operator's override of a target is called "drained" too
#: (routing/health.py, the admin API), and llama-cpp-python's over-long prompt error says "context window"
SHARED_WORDS = {SkipReason.DRAINED.value, SkipReason.CONTEXT_WINDOW.value}


def modules() -> list[tuple[str, ast.Module]]:
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        name = path.relative_to(SOURCE).as_posix()
        if name != "attempts.py":
            found.append((name, ast.parse(path.read_text(), filename=name)))
    return found


def strings(node: ast.AST) -> list[str]:
    """The string constants in an expression (a tuple or set of them counts too)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return [s for e in node.elts for s in strings(e)]
    return []


def test_no_module_words_or_matches_a_skip_by_its_wording() -> None:
    reasons = {r.value for r in SkipReason} - SHARED_WORDS
    found = []
    for name, tree in modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
                if text.startswith("skipped:") or text.strip() == "skipped" or text in reasons:
                    found.append(f"{name}:{node.lineno}: {text!r}")
    assert found == []


def test_no_module_compares_an_outcome_with_a_word() -> None:
    found = []
    for name, tree in modules():
        if name in OTHER_VOCABULARIES:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            sides = [node.left, *node.comparators]
            named = any(isinstance(s, ast.Attribute) and s.attr in ("outcome", "skip") for s in sides)
            if named and any(strings(s) for s in sides):
                found.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            words = [s for a in node.args for s in strings(a)]
            on_outcome = "outcome" in ast.unparse(node.func.value) or any(w.startswith("skipped") for w in words)
            if node.func.attr == "startswith" and on_outcome:
                found.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    assert found == []
