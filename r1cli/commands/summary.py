"""`r1 summary`: the command line of the eval-summary report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from r1cli.options import command
from r1cli.report.summary import SummaryJob, write_summary


@command
def summary(
    reports: Annotated[list[str], typer.Argument(help="NAME=REPORT.json (from `r1 eval --out`), one row each, in order.")],
    out: Annotated[Path, typer.Option("--out", help="Summary JSON: {wall_seconds, checkpoints: {NAME: overall block}}.")],
    markdown: Annotated[Path | None, typer.Option(help="Also write the table as Markdown to this file.")] = None,
    since: Annotated[float | None, typer.Option(help="Start of the run (Unix seconds): records wall_seconds = now - SINCE. [default: no wall_seconds]")] = None,
) -> None:
    """Collect each REPORT's overall block under its NAME; print and optionally write the table."""
    write_summary(SummaryJob(reports, out, markdown, since))
