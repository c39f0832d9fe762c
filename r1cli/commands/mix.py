"""`r1 mix`: the command line of the mixing recipe."""

from __future__ import annotations

from typing import Annotated

import typer

from r1cli.options import DataOptions, Seed, command
from r1cli.recipes.mix import MixJob, run_mix


@command
def mix(
    inputs: Annotated[list[str], typer.Argument(help="Training-record (or prompt-record) inputs as PATH[:WEIGHT] (WEIGHT a share, default 1): files ('-' reads stdin), or datasets (hub OWNER/NAME, save_to_disk directory).")],
    out: Annotated[str, typer.Option("--out", help="Output JSONL; '-' for stdout.")],
    source: DataOptions,
    total: Annotated[int | None, typer.Option(help="Exactly this many records, split by the weights. [default: every record once]", min=1)] = None,
    seed: Seed = 0,
    unique: Annotated[bool, typer.Option(help="Drop records identical to an earlier one (across all inputs).")] = False,
) -> None:
    """Mix training records (or prompt records, for grpo): with --total, sources contribute by weight (largest remainder),
    without replacement while a source suffices and with replacement beyond; without it,
    every record once. The output is shuffled."""
    run_mix(MixJob(inputs, out, total, seed, unique, source))
