"""`r1 eval`: the command line of the evaluation recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from r1cli.options import (
    ComputeOptions,
    DataOptions,
    GenerationOptions,
    Overwrite,
    PromptOptions,
    RewardSettings,
    SamplesPerPrompt,
    Seed,
    command,
)
from r1cli.recipes.eval import EvalJob, run_eval


@command
def evaluate(
    prompt: PromptOptions,
    generation: GenerationOptions,
    compute: ComputeOptions,
    rewards: RewardSettings,
    source: DataOptions,
    model: Annotated[str | None, typer.Argument(help="Checkpoint to sample from (omit with --samples).")] = None,
    data: Annotated[list[str] | None, typer.Argument(help="Prompt records with gold answers (files or datasets: hub OWNER/NAME, save_to_disk directory); several are reported per dataset too.")] = None,
    out: Annotated[Path, typer.Option("--out", help="The report (JSON).")] = Path("report.json"),
    samples: Annotated[list[str] | None, typer.Option("--samples", help="Score existing sample records instead of sampling (no model is loaded); repeat it for several files (the shards of `r1 sample --shard I/N`, say), read as one.")] = None,
    n: SamplesPerPrompt = 16,
    k: Annotated[str | None, typer.Option("--k", help="Comma-separated k for pass@k and maj@k. [default: 1 and N]")] = None,
    reward: Annotated[list[str] | None, typer.Option("--reward", help="Extra reward to average (repeatable); accuracy, format and language are always on.")] = None,
    by: Annotated[list[str] | None, typer.Option("--by", help="Also report per value of this record field (repeatable).")] = None,
    seed: Seed = 0,
    overwrite: Overwrite = False,
) -> None:
    """Evaluate MODEL on DATA (N samples per prompt), or score --samples from any generator.

    Sampling goes to REPORT.samples.jsonl and resumes like `r1 sample`: a rerun with another
    model, other data or other sampling options is refused rather than reusing those samples.
    pass@1 is the mean over prompts of each prompt's share of correct samples. Under torchrun each
    process samples its share of the prompts; rank 0 scores them and writes the report.
    """
    run_eval(EvalJob(model, tuple(data or ()), out, tuple(samples or ()), n, k, tuple(reward or ()), tuple(by or ()), prompt, generation,
                     compute, rewards, seed, overwrite, source))
