"""`lifeline audit`: the speech audit. For now it runs the offline classifier's self-test (`--self-test`):
the confusion matrix and per-class precision and recall on the held-out half of the labelled answers; the
audit run's own options join this group's callback."""

from __future__ import annotations

import enum
from typing import Annotated

import typer

audit_app = typer.Typer(
    invoke_without_command=True,
    add_completion=False,
    help="Speech audit: what a candidate refuses, evades or steers, compared with mirrored controls.",
)


class Split(enum.StrEnum):
    heldout = "heldout"
    dev = "dev"


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")


@audit_app.callback()
def audit(
    ctx: typer.Context,
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
    if ctx.invoked_subcommand is not None:
        return
    if not self_test:
        typer.echo("error: nothing to do: pass --self-test to measure the offline classifier", err=True)
        raise typer.Exit(2)
    from lifeline.audit.accuracy import render
    from lifeline.audit.classifier import self_test as run_self_test
    from lifeline.errors import LabelledSetError

    try:
        result = run_self_test(split.value)
    except LabelledSetError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(render(result))
