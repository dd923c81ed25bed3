"""`lifeline drill`: rehearse a cut-off against the real targets and report how the gateway kept answering.

The command starts its own gateway on loopback from the config file, cuts the named targets off (an
injected 403, a silent timeout or a broken stream, in front of the real targets), replays prompts through
an alias, and writes report.md, report.html and results.json to `--out`; the Markdown is also printed.
Exit status 0 when the drill ran, whatever share was served; 2 when it could not run as asked.
"""

from __future__ import annotations

import datetime as dt
import enum
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from lifeline.cli.progress import BarProgress, PlainProgress, gateway_log, progress_watcher
from lifeline.providers.faults import STREAM_CUT_AFTER, Fault


class FaultChoice(enum.StrEnum):
    forbidden = "forbidden"
    timeout = "timeout"
    stream_cut = "stream_cut"
    unavailable = "unavailable"


__all__ = ["BarProgress", "PlainProgress", "drill", "progress_watcher", "register"]


def register(app: typer.Typer) -> None:
    app.command("drill")(drill)


def drill(
    config: Annotated[
        Path, typer.Option("--config", "-c", envvar="LIFELINE_CONFIG", help="The gateway's YAML config file.")
    ],
    cut: Annotated[str, typer.Option("--cut", help="Target(s) to cut off, comma-separated: primary,backup.")],
    fault: Annotated[FaultChoice, typer.Option(help="How the cut targets fail.")] = FaultChoice.forbidden,
    after: Annotated[
        int | None,
        typer.Option(min=0, help=f"stream_cut: content chunks let through first (default {STREAM_CUT_AFTER})."),
    ] = None,
    alias: Annotated[str | None, typer.Option(help="The alias to send to (default: the first chat alias).")] = None,
    requests: Annotated[int, typer.Option("--requests", "-n", min=1, help="Requests to send.")] = 20,
    concurrency: Annotated[int, typer.Option("--concurrency", "-C", min=1, help="Requests at a time.")] = 4,
    prompts: Annotated[
        Path | None,
        typer.Option(help='JSON Lines, one {"messages": [...]} or {"prompt": "..."} a line (default: built-in).'),
    ] = None,
    stream: Annotated[bool, typer.Option("--stream/--no-stream", help="Stream the answers (measures TTFT).")] = True,
    max_tokens: Annotated[int, typer.Option(min=1, help="max_tokens of each request.")] = 64,
    out: Annotated[Path | None, typer.Option(help="Where the reports go (default: ./drill-<timestamp>).")] = None,
    baseline: Annotated[bool, typer.Option(help="Send the same traffic without the cut first, to compare.")] = False,
    api_key: Annotated[
        str | None, typer.Option(envvar="LIFELINE_API_KEY", help="A virtual key, when the config turns auth on.")
    ] = None,
) -> None:
    """Rehearse a cut-off: replay prompts while targets are cut off, and report continuity."""
    from lifeline.config import load_config
    from lifeline.drill import DrillPlan, builtin_prompts, load_prompts, run_drill
    from lifeline.drill.report import markdown, write_reports
    from lifeline.drill.runner import check_plan, first_chat_alias
    from lifeline.errors import ConfigError, DrillError, PromptError

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        _bad(str(exc))
    cut_targets = tuple(dict.fromkeys(t.strip() for t in cut.split(",") if t.strip()))
    if after is not None and fault is not FaultChoice.stream_cut:
        _bad("--after applies only to --fault stream_cut")
    chosen = alias or first_chat_alias(cfg)
    if chosen is None:
        _bad(f"{config}: the config has no chat alias to drill")
    try:
        conversations = load_prompts(prompts) if prompts is not None else builtin_prompts()
    except PromptError as exc:
        _bad(str(exc))
    plan = DrillPlan(
        alias=chosen,
        cut=cut_targets,
        fault=Fault(fault.value, STREAM_CUT_AFTER if after is None else after),
        requests=requests,
        concurrency=concurrency,
        stream=stream,
        max_tokens=max_tokens,
        baseline=baseline,
        api_key=api_key,
        config_file=str(config),
        prompts_file=str(prompts) if prompts is not None else None,
    )
    try:
        chain = check_plan(cfg, plan)
    except DrillError as exc:
        _bad(str(exc))
    missed = [t for t in cut_targets if t not in chain]
    if missed:
        typer.echo(
            f"warning: alias {chosen} does not use {', '.join(missed)}; its requests will not meet that cut", err=True
        )
    if cfg.accounting.redis_url is not None:
        typer.echo(
            "note: the drill's gateway leaves Redis out (accounting.redis_url): the circuits its cut opens are not "
            "shared with the replicas serving production",
            err=True,
        )
    out = out or Path(f"drill-{dt.datetime.now():%Y%m%d-%H%M%S}")
    out.mkdir(parents=True, exist_ok=True)
    typer.echo(f"drill: alias {chosen} ({' → '.join(chain)}), cut {', '.join(cut_targets)} ({fault.value})", err=True)
    try:
        with gateway_log(out / "gateway.log"):
            result = run_drill(cfg, plan, conversations, watcher=progress_watcher())
    except DrillError as exc:
        _bad(str(exc))
    written = write_reports(result, out)
    typer.echo(markdown(result))
    typer.echo(
        f"reports: {written.markdown}, {written.html}, {written.results} (gateway log: {out / 'gateway.log'})", err=True
    )


def _bad(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)
