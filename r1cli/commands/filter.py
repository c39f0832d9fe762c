"""`r1 filter`: the command line of the rejection-sampling recipe."""

from __future__ import annotations

from typing import Annotated

import typer

from r1cli.options import DataOptions, FilterOptions, RewardSettings, command
from r1cli.recipes.filter import FilterJob, run_filter


@command
def filter_samples(
    samples: Annotated[str, typer.Argument(help="Sample records (JSONL, '-' for stdin, JSON, Parquet, or a dataset); only `prompt` and `completion` are required.")],
    out: Annotated[str, typer.Option("--out", help="Training records (`messages`), JSONL; '-' for stdout.")],
    rules: FilterOptions,
    rewards: RewardSettings,
    source: DataOptions,
) -> None:
    """Keep the samples that pass every threshold and readability rule; write them as
    `messages` records (the prompt as the user turn, the whole completion as the assistant turn),
    each keeping its id, rewards and other fields. Counts per rule go to stderr and FILE.summary.json."""
    run_filter(FilterJob(samples, out, rules, rewards, source))
