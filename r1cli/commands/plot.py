"""`r1 plot`: the command line of the training-curves report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from r1cli.options import command
from r1cli.report.plot import PlotJob, draw_curves


@command
def plot(
    metrics: Annotated[list[Path], typer.Argument(help="metrics.jsonl files (of r1 grpo or r1 sft runs), one curve each.")],
    out: Annotated[Path, typer.Option("--out", help="PNG to write.")],
    metric: Annotated[list[str] | None, typer.Option("--metric", help="Metric to plot, one panel each (repeatable). [default: GRPO runs: reward, a panel per reward (rewards/NAME), kl, completion_length; SFT runs: loss, lr, grad_norm, eval_loss where logged]")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="Legend name of each file, in order. [default: the name of its run directory]")] = None,
    smooth: Annotated[int, typer.Option(help="Moving-average window in steps (the raw curve is drawn faintly behind); 1 = off.", min=1)] = 10,
    title: Annotated[str | None, typer.Option(help="Figure title.")] = None,
) -> None:
    """Plot each METRIC per step for every run, one panel per metric, one line per run."""
    draw_curves(PlotJob(metrics, out, metric, label, smooth, title))
