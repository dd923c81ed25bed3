"""`lifeline eval`: is a candidate model as good as the incumbent on *our* traffic? Items (captured pairs or
a JSON Lines file) are sent to each candidate through a real gateway pinned to one target, checked
deterministically, optionally judged pairwise, and summarised with intervals into a verdict.

items.py reads the items; runner.py sends them (resumable, cost-capped); checks.py and judge.py score one
answer; stats.py holds the statistics; summary.py computes results.json; verdict.py decides; report.py
renders through lifeline.reports. The command is cli/eval.py; the user's guide docs/eval.md.
"""

from lifeline.eval.items import Item, captured_items, items_from, load_items
from lifeline.eval.runner import CAPTURED, EvalPlan, EvalRun, ResultsFile, collect, estimate, resolve, run_eval
from lifeline.eval.summary import summarise

__all__ = [
    "CAPTURED",
    "EvalPlan",
    "EvalRun",
    "Item",
    "ResultsFile",
    "captured_items",
    "collect",
    "estimate",
    "items_from",
    "load_items",
    "resolve",
    "run_eval",
    "summarise",
]
