"""`lifeline audit`: the speech audit. `--candidates … --suite …` sends each prompt of a suite to each candidate
pinned to its one target, classifies the answers and writes results.jsonl, results.json, report.md and
report.html to `--out` (rerun with the same --out to resume); `--store` records the gaps in the accounting
database for the routing constraint max_censorship_gap. `--self-test` measures the offline classifier on
the held-out half of its labelled answers.

Exit status 0 when the audit ran (also when the cost cap stopped it), 2 when it could not run as asked."""

from __future__ import annotations

import datetime as dt
import enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from lifeline.cli.common import ConfigOption, read_config

if TYPE_CHECKING:
    from lifeline.audit.run import AuditPlan
    from lifeline.audit.suite import Suite
    from lifeline.config.schema import Config

HELP = "Speech audit: what a candidate refuses, evades or steers, compared with mirrored controls."


class Split(enum.StrEnum):
    heldout = "heldout"
    dev = "dev"


def register(app: typer.Typer) -> None:
    # one command, not a group: it has no subcommands, and its help should not promise any
    app.command("audit", help=HELP)(audit)


def audit(
    candidates: Annotated[
        str | None, typer.Option("--candidates", help="Targets or chat aliases to audit, comma-separated.")
    ] = None,
    suite: Annotated[
        str, typer.Option(help="A built-in suite (speech-cn) or a suite file: .yaml, .csv or .jsonl.")
    ] = "speech-cn",
    languages: Annotated[str | None, typer.Option(help="Languages, comma-separated (default: the suite's).")] = None,
    topics: Annotated[str | None, typer.Option(help="Only these topics, comma-separated.")] = None,
    per_topic: Annotated[
        int | None, typer.Option(min=1, help="At most this many prompts of each kind per topic (pairs kept whole).")
    ] = None,
    judge: Annotated[
        str | None, typer.Option(help="A chat alias that classifies the answers instead of the offline classifier.")
    ] = None,
    config: ConfigOption = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-C", min=1, help="Requests at a time (default: eval.concurrency).")
    ] = None,
    max_cost: Annotated[
        float | None, typer.Option(min=0, help="USD cap for the results file, the judge included.")
    ] = None,
    max_tokens: Annotated[int, typer.Option(min=1, help="Completion allowance of each answer.")] = 512,
    dry_run: Annotated[bool, typer.Option(help="Print the request count and estimated cost; send nothing.")] = False,
    out: Annotated[
        Path | None, typer.Option(help="Results directory (default ./audit-<time>); reuse to resume.")
    ] = None,
    store: Annotated[
        bool, typer.Option("--store/--no-store", help="Record the gaps in the accounting database (for routing).")
    ] = False,
    self_test: Annotated[
        bool,
        typer.Option(
            "--self-test", help="Measure the offline classifier on its labelled answers and print the results."
        ),
    ] = False,
    split: Annotated[
        Split, typer.Option(help="With --self-test: the held-out half (published) or the development half.")
    ] = Split.heldout,
) -> None:
    """Run the speech audit, or measure its offline classifier (--self-test)."""
    if self_test:
        _self_test(split)
        return
    if not candidates:
        _bad("nothing to do: pass --candidates to audit (or --self-test to measure the offline classifier)")
    from lifeline.audit.run import AuditPlan
    from lifeline.audit.suite import load_suite
    from lifeline.errors import SuiteError

    cfg = read_config(config)
    try:
        chosen = load_suite(suite)
        if topics is not None or per_topic is not None:
            wanted = [t.strip() for t in topics.split(",") if t.strip()] if topics is not None else None
            chosen = chosen.subset(topics=wanted, per_topic=per_topic)
    except SuiteError as exc:
        _bad(str(exc).splitlines()[0])
    plan = AuditPlan(
        candidates=_names(candidates),
        languages=_names(languages) if languages else chosen.languages,
        judge=judge,
        concurrency=concurrency or cfg.eval.concurrency,
        max_cost=max_cost,
        max_tokens=max_tokens,
    )
    _run(cfg, plan, chosen, out or Path(f"audit-{dt.datetime.now():%Y%m%d-%H%M%S}"), dry_run=dry_run, store=store)


def _run(cfg: Config, plan: AuditPlan, chosen: Suite, out: Path, *, dry_run: bool, store: bool) -> None:
    from lifeline.audit.report import gap_text, summarise, write_outputs
    from lifeline.audit.run import estimate_audit, lineup_of, run_audit
    from lifeline.cli.progress import gateway_log, progress_watcher, say_cost_cap
    from lifeline.errors import AuditError, EvalError
    from lifeline.eval.runner import ResultsFile

    try:
        lineup = lineup_of(cfg, plan, chosen)
        if dry_run:
            exists = (out / "results.jsonl").exists()
            done = ResultsFile(out / "results.jsonl").done if exists else set()
            guess = estimate_audit(cfg, plan, chosen, lineup, done)
            typer.echo(
                f"dry run: {guess.answers + guess.classifications} requests to send ({guess.answers} answers, "
                f"{guess.classifications} judge calls) for {len(chosen.prompts)} prompts in "
                f"{len(plan.languages)} language(s) and {len(lineup.candidates)} candidate(s); estimated cost at "
                f"most ${guess.cost_usd:.4f}" + (f"; {len(done)} already in {out}" if done else "")
            )
            return
        out.mkdir(parents=True, exist_ok=True)
        results = ResultsFile(out / "results.jsonl")
        typer.echo(
            f"audit: suite {chosen.name}, {len(chosen.prompts)} prompts in {', '.join(plan.languages)}, "
            f"candidates {', '.join(c.name for c in lineup.candidates)}",
            err=True,
        )
        with gateway_log(out / "gateway.log"):
            run = run_audit(cfg, plan, chosen, results, watcher=progress_watcher())
    except (AuditError, EvalError) as exc:
        _bad(str(exc))
    figures = summarise(run, cfg)
    written = write_outputs(figures, out)
    if run.stopped == "cost_cap":
        say_cost_cap(run.spent_usd, plan.max_cost or 0)
    for candidate in figures["candidates"]:
        typer.echo(f"{candidate['name']}:")
        for language, gaps in candidate["gaps"].items():
            typer.echo(f"  gap {language}: {gap_text(gaps['overall'])}")
            for topic, gap in gaps["topics"].items():
                typer.echo(f"    {topic}: {gap_text(gap)}")
    if store and run.stopped:
        typer.echo("not stored: the audit is incomplete (stopped at the cost cap); finish it, then --store", err=True)
    elif store:
        _store(cfg, figures)
    typer.echo(f"reports: {', '.join(str(p) for p in written.values())}", err=True)


def _store(cfg: Config, figures: dict[str, Any]) -> None:
    from lifeline.accounting.audits import GapRow, store_audit
    from lifeline.accounting.db import Database
    from lifeline.errors import DatabaseError

    rows = [
        GapRow(c["target"], lang, g["gap"], g["low"], g["high"], g["sensitive"]["n"], g["control"]["n"])
        for c in figures["candidates"]
        for lang, gaps in c["gaps"].items()
        if (g := gaps["overall"])
    ]
    try:
        url = cfg.accounting.database_url.get_secret_value() if cfg.accounting.database_url else None
        db = Database(url=url, data_dir=cfg.accounting.data_dir)
        try:
            store_audit(db, figures["run"]["suite"], rows)
        finally:
            db.close()
    except DatabaseError as exc:
        _bad(f"the audit could not be stored: {exc}")
    typer.echo(f"stored: {len(rows)} gaps of suite {figures['run']['suite']} in the accounting database", err=True)


def _names(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))


def _self_test(split: Split) -> None:
    from lifeline.audit.accuracy import render
    from lifeline.audit.classifier import self_test as run_self_test
    from lifeline.errors import LabelledSetError

    try:
        result = run_self_test(split.value)
    except LabelledSetError as exc:
        _bad(str(exc))
    typer.echo(render(result))


def _bad(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)
