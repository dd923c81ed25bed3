"""Cut-off drills: replay prompts through a real gateway while chosen targets are cut off, and report how
much was still served, by whom, how fast, and what broke.

runner.py runs the drill and records each request; summary.py turns the records into numbers; report.py
writes them as Markdown, HTML and JSON; prompts.py reads the prompts. The command is cli/drill.py.
"""

from lifeline.drill.prompts import builtin_prompts, load_prompts
from lifeline.drill.runner import (
    DrillPlan,
    DrillResult,
    PassResult,
    RequestResult,
    check_plan,
    run_drill,
    run_pass,
)
from lifeline.drill.summary import Summary, summarise

__all__ = [
    "DrillPlan",
    "DrillResult",
    "PassResult",
    "RequestResult",
    "Summary",
    "builtin_prompts",
    "check_plan",
    "load_prompts",
    "run_drill",
    "run_pass",
    "summarise",
]
