"""`r1 distill`: the command line of the distillation recipe."""

from __future__ import annotations

from typing import Annotated

import typer

from r1cli.options import (
    ComputeOptions,
    DataOptions,
    DistillFilterOptions,
    GenerationOptions,
    LoraOptions,
    PromptOptions,
    RunOptions,
    SamplesPerPrompt,
    SFTOptimizerOptions,
    command,
)
from r1cli.recipes.distill import DistillConfig, run_distill


@command
def distill(
    teacher: Annotated[str, typer.Argument(help="Teacher checkpoint: writes the traces (and, with --kd-weight, gives the KL target).")],
    student: Annotated[str, typer.Argument(help="Student checkpoint (or a model config .json to initialise randomly).")],
    out: Annotated[str, typer.Option("--out", help="Run directory: traces.jsonl, kept.jsonl, then the student checkpoint.")],
    prompt: PromptOptions,
    generation: GenerationOptions,
    rules: DistillFilterOptions,
    optim: SFTOptimizerOptions,
    lora: LoraOptions,
    compute: ComputeOptions,
    run: RunOptions,
    source: DataOptions,
    prompts: Annotated[str | None, typer.Argument(help="Prompt records with gold answers (JSONL, JSON, Parquet, or a dataset: hub OWNER/NAME, save_to_disk directory). [not used with --traces]")] = None,
    n: SamplesPerPrompt = 4,
    traces: Annotated[str | None, typer.Option(help="Existing sample records (from any generator): skip sampling and distil from these.")] = None,
    kd_weight: Annotated[float, typer.Option(help="Weight of a token-level KL(teacher || student) term added to the SFT loss; 0 = plain SFT. Needs a shared tokenizer.", min=0.0)] = 0.0,
    epochs: Annotated[float, typer.Option(help="Passes over the data (fractions allowed).", min=0.0)] = 2.0,
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps; overrides --epochs. [default: from --epochs]", min=1)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "--per-device-train-batch-size", help="Rows per training micro-batch. Alias: TRL's name.", min=1)] = 8,
    max_length: Annotated[int, typer.Option(help="Tokens per training example (longer ones are truncated and counted) and per packed row.", min=2)] = 2048,
    packing: Annotated[bool, typer.Option(help="Pack several examples per row, with no attention across them.")] = False,
) -> None:
    """Sample N traces per prompt from TEACHER, keep the correct, well-formatted ones, and fine-tune
    STUDENT on them. Run the same command again to resume at the stage that did not finish.
    Under torchrun the processes share the sampling, rank 0 filters, and the SFT is sharded."""
    run_distill(DistillConfig(teacher, student, str(out), prompts, traces, n, kd_weight, epochs, max_steps, batch_size, max_length,
                              packing, prompt, generation, rules, optim, lora, compute, run, source))
