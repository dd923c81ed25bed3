"""`lifeline eval`: send items to candidate targets through a gateway pinned to each, check and judge the
answers against a baseline, and write results.jsonl, results.json, report.md and report.html to `--out`.

Exit status 0 when the eval ran (also when the cost cap stopped it: rerun with the same --out and a higher
cap to continue), 2 when it could not run as asked (a bad item line, an unknown candidate, a bad flag).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from lifeline.cli.common import ConfigOption, read_config
from lifeline.cli.progress import gateway_log, progress_watcher, say_cost_cap


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)


def eval_command(
    candidates: Annotated[
        str, typer.Option("--candidates", help="Targets or chat aliases to evaluate, comma-separated.")
    ],
    config: ConfigOption = None,
    input_file: Annotated[
        Path | None, typer.Option("--input", "-i", help="Items: JSON Lines, one request (and more) a line.")
    ] = None,
    from_captures: Annotated[
        bool, typer.Option("--from-captures", help="Items: the pairs captured in the accounting database.")
    ] = False,
    alias: Annotated[str | None, typer.Option(help="--from-captures: only this alias's pairs.")] = None,
    since: Annotated[str | None, typer.Option(help="--from-captures: captured since (ISO 8601, UTC).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="--from-captures: at most this many pairs.")] = None,
    baseline: Annotated[
        str, typer.Option(help="A target, an alias, or 'captured' (the baseline answers in the items).")
    ] = "captured",
    judge: Annotated[str | None, typer.Option(help="A chat alias judging each pair in both orders.")] = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-C", min=1, help="Requests at a time (default: eval.concurrency).")
    ] = None,
    max_cost: Annotated[
        float | None, typer.Option(min=0, help="USD cap for the results file; stops before a request could pass it.")
    ] = None,
    stream: Annotated[
        bool, typer.Option("--stream/--no-stream", help="Stream the answers (measures TTFT); the judge never.")
    ] = False,
    dry_run: Annotated[bool, typer.Option(help="Print the request count and estimated cost; send nothing.")] = False,
    out: Annotated[
        Path | None, typer.Option(help="Results directory (default ./eval-<time>); reuse to resume.")
    ] = None,
    min_win_or_tie: Annotated[float | None, typer.Option(help="Verdict: lower bound of win-or-tie to reach.")] = None,
    max_breakage: Annotated[float | None, typer.Option(help="Verdict: a check's breakage upper bound allowed.")] = None,
    max_latency_ratio: Annotated[float | None, typer.Option(help="Verdict: p95 latency ratio before a caveat.")] = None,
    max_cost_ratio: Annotated[float | None, typer.Option(help="Verdict: cost ratio before a caveat.")] = None,
    min_sample: Annotated[int | None, typer.Option(help="Warn below this many paired items.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the bootstrap intervals.")] = None,
) -> None:
    """Evaluate candidate models on your own requests against a baseline, and give each a verdict."""
    from pydantic import ValidationError

    from lifeline.config.schema import EvalSettings
    from lifeline.errors import EvalError, EvalInputError
    from lifeline.eval import EvalPlan, ResultsFile, captured_items, estimate, load_items, resolve, run_eval, summarise
    from lifeline.eval.report import write_outputs

    cfg = read_config(config)
    flags: dict[str, Any] = {
        "min_win_or_tie": min_win_or_tie,
        "max_breakage": max_breakage,
        "max_latency_ratio": max_latency_ratio,
        "max_cost_ratio": max_cost_ratio,
        "min_sample": min_sample,
        "seed": seed,
        "concurrency": concurrency,
    }
    try:
        settings = EvalSettings.model_validate(
            cfg.eval.model_dump() | {k: v for k, v in flags.items() if v is not None}
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        _bad(f"--{str(error['loc'][0]).replace('_', '-')}: {error['msg']}")
    if (input_file is None) == (not from_captures):
        _bad("give either --input FILE or --from-captures")
    try:
        if input_file is not None:
            items = load_items(input_file)
        else:
            items = captured_items(cfg.accounting, alias=alias, since=since, limit=limit)
    except EvalInputError as exc:
        _bad(str(exc))
    plan = EvalPlan(
        candidates=tuple(dict.fromkeys(c.strip() for c in candidates.split(",") if c.strip())),
        baseline=baseline,
        judge=judge,
        concurrency=settings.concurrency,
        max_cost=max_cost,
        stream=stream,
    )
    out = out or Path(f"eval-{dt.datetime.now():%Y%m%d-%H%M%S}")
    try:
        lineup = resolve(cfg, plan)
        if dry_run:
            results = ResultsFile(out / "results.jsonl") if (out / "results.jsonl").exists() else None
            done = results.done if results is not None else set()
            guess = estimate(cfg, lineup, items, done, results.unanswered if results is not None else frozenset())
            typer.echo(
                f"dry run: {guess.requests} requests to send ({guess.answers} answers, {guess.judgements} judge "
                f"calls) for {len(items)} items and {len(lineup.candidates)} candidate(s); estimated cost at most "
                f"${guess.cost_usd:.4f} (each prompt's upper bound and its whole max_tokens at the price book's "
                f"price){'; ' + str(len(done)) + ' already in ' + str(out) if done else ''}"
            )
            return
        out.mkdir(parents=True, exist_ok=True)
        results = ResultsFile(out / "results.jsonl")
        typer.echo(
            f"eval: {len(items)} items, candidates {', '.join(c.name for c in lineup.candidates)}, "
            f"baseline {lineup.baseline_name}" + (f", judge {judge}" if judge else ""),
            err=True,
        )
        with gateway_log(out / "gateway.log"):
            run = run_eval(cfg, plan, items, results, watcher=progress_watcher())
    except EvalError as exc:
        _bad(str(exc))
    figures = summarise(run, settings)
    written = write_outputs(figures, out)
    if run.stopped == "cost_cap":
        say_cost_cap(run.spent_usd, max_cost or 0)
    for candidate in figures["candidates"]:
        verdict = candidate["verdict"]
        typer.echo(f"{candidate['name']}: {verdict['status'].replace('_', ' ')}")
        for line in verdict["reasons"]:
            typer.echo(f"  - not ready: {line}")
        for line in verdict["caveats"]:
            typer.echo(f"  - caveat: {line}")
    typer.echo(f"reports: {', '.join(str(p) for p in written.values())}", err=True)


def _bad(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)
