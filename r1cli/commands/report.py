"""`r1 report`: the command line of the HTML report of a pipeline's runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from r1cli.options import command
from r1cli.report.html import ReportJob, write_report


@command
def report(
    run_dirs: Annotated[list[Path], typer.Argument(metavar="RUN_DIR...", help="A pipeline's directory (e.g. runs/demo: every run inside, with its summary.json or eval reports), or run directories.")],
    out: Annotated[Path, typer.Option("--out", help="HTML page to write (self-contained: it loads nothing).")],
    smooth: Annotated[int, typer.Option(help="Moving-average window in steps (the raw curve is drawn faintly behind); 1 = off.", min=1)] = 10,
) -> None:
    """Write one HTML page: the eval table, then each stage run's options, curves and logged samples.

    Runs (directories with r1.json, or unfinished ones with metrics.jsonl) are ordered by lineage,
    parents first; the samples a GRPO run logged (samples.jsonl) are shown by step, in step order.
    """
    write_report(ReportJob(list(run_dirs), out, smooth))
