"""`r1 sample`: the command line of the sampling recipe."""

from __future__ import annotations

from typing import Annotated

import typer

from r1cli.options import (
    ComputeOptions,
    DataOptions,
    GenerationOptions,
    Overwrite,
    PromptOptions,
    SamplesPerPrompt,
    Seed,
    command,
)
from r1cli.recipes.sample import SampleJob, run_sample


@command
def sample(
    model: Annotated[str, typer.Argument(help="Checkpoint directory (or hub name).")],
    prompts: Annotated[str, typer.Argument(help="Prompt records: JSONL ('-' for stdin), JSON, Parquet, or a dataset (hub OWNER/NAME, save_to_disk directory).")],
    out: Annotated[str, typer.Option("--out", help="Sample records (JSONL); '-' for stdout.")],
    prompt: PromptOptions,
    generation: GenerationOptions,
    compute: ComputeOptions,
    source: DataOptions,
    n: SamplesPerPrompt = 1,
    shard: Annotated[str, typer.Option(help="I/N: take every N-th prompt starting at the I-th (0-based).")] = "0/1",
    seed: Seed = 0,
    overwrite: Overwrite = False,
) -> None:
    """Sample N completions per prompt and write one sample record per completion.

    Writing to a file is resumable: run the command again and only the (id, sample) pairs still
    missing are generated, each from its own seeded stream, so the result equals an
    uninterrupted run's; a larger --n adds samples. The file appears once complete
    (FILE.partial until then), and FILE.r1.json records the model, prompts and options: a rerun
    with another model, other prompts or other sampling options is refused, not mixed in.
    Under torchrun each process samples its share of the prompts into FILE.parts/, and rank 0
    merges them into FILE in prompt order: the file one process writes.
    """
    run_sample(SampleJob(model, prompts, out, n, prompt, generation, compute, shard, seed, overwrite, source))
