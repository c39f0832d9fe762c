"""`r1 sft`: the command line of the SFT recipe."""

from __future__ import annotations

from typing import Annotated

import typer

from r1cli.options import ComputeOptions, DataOptions, LoraOptions, RunOptions, SFTOptimizerOptions, command
from r1cli.recipes.sft import SFTConfig, run_sft


@command
def sft(
    model: Annotated[str, typer.Argument(help="Checkpoint directory (or hub name), or a model config .json to initialise randomly.")],
    data: Annotated[list[str], typer.Argument(help="Training records: JSONL ('-' for stdin), JSON or Parquet files, or datasets (a hub dataset OWNER/NAME, a save_to_disk directory).")],
    out: Annotated[str, typer.Option("--out", help="Run directory; the final checkpoint is written here.")],
    optim: SFTOptimizerOptions,
    lora: LoraOptions,
    compute: ComputeOptions,
    run: RunOptions,
    source: DataOptions,
    epochs: Annotated[float, typer.Option(help="Passes over the data (fractions allowed).", min=0.0)] = 1.0,
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps; overrides --epochs. [default: from --epochs]", min=1)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "--per-device-train-batch-size", help="Rows per training micro-batch. Alias: TRL's name.", min=1)] = 8,
    max_length: Annotated[int, typer.Option(help="Tokens per training example (longer ones are truncated and counted) and per packed row.", min=2)] = 2048,
    packing: Annotated[bool, typer.Option(help="Pack several examples per row, with no attention across them.")] = False,
    template: Annotated[str, typer.Option(help="auto (chat when the tokenizer has a chat template, else plain) | chat | r1-zero (the R1 paper's template for base models) | plain (the prompt as it is).")] = "auto",
    eval_data: Annotated[list[str] | None, typer.Option(help="Records for eval loss at each save and at the end (repeatable).")] = None,
    eval_batch_size: Annotated[int, typer.Option(help="Rows per eval batch.", min=1)] = 16,
    eval_split: Annotated[str | None, typer.Option("--eval-split", "--dataset-test-split", help="Split of each --eval-data input that is a dataset. Alias: TRL's name. [default: --split]")] = None,
) -> None:
    """Fine-tune MODEL on DATA: `messages`, `prompt`+`completion` (strings, or chat messages as TRL's
    conversational records) or `text` records.

    Loss is on assistant / completion tokens only (`text`: every token), EOS appended so the
    model learns to stop. Run the same command again to resume from the last saved step.
    """
    run_sft(SFTConfig(model, tuple(data), str(out), epochs, max_steps, batch_size, max_length, packing, template,
                      tuple(eval_data or ()), eval_batch_size, optim, lora, compute, run, source, eval_split))
