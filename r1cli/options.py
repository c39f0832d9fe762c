"""Option groups: each option declared once, with one name, one help text and one default, and
reused by every command that takes it.

A group is a dataclass whose fields carry their typer declaration. A command names the groups it
takes as parameters annotated with the group's class; `command()` expands them into the
command-line signature typer reads and packs the parsed values back into the dataclasses, so a
command's body receives `lora: LoraOptions`, not a dozen loose keyword arguments.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import typing
from dataclasses import dataclass
from typing import Annotated

import typer

from r1cli.errors import UserError

# ---------------------------------------------------------------- the groups


@dataclass(frozen=True)
class ComputeOptions:
    """Where and in what precision a command computes."""

    dtype: Annotated[str, typer.Option(help="Compute dtype: auto (bf16 on GPU, fp32 on CPU) | bf16 | fp16 | fp32. Trained weights stay fp32.")] = "auto"
    device: Annotated[str, typer.Option(help="auto (the GPU where there is one) | cpu | cuda | cuda:N.")] = "auto"


@dataclass(frozen=True)
class LoraOptions:
    lora_r: Annotated[int, typer.Option(help="LoRA rank; 0 trains every weight.", min=0)] = 0
    lora_alpha: Annotated[int | None, typer.Option(help="LoRA alpha. [default: 2 x rank]", min=1)] = None
    lora_dropout: Annotated[float, typer.Option(help="LoRA dropout.", min=0.0, max=1.0)] = 0.0
    lora_targets: Annotated[str, typer.Option(help="Comma-separated module names for LoRA, or all-linear.")] = "all-linear"
    merge: Annotated[bool, typer.Option(help="With LoRA, also write the merged model as the loadable checkpoint (the adapter goes to OUT/adapter).")] = True


@dataclass(frozen=True)
class OptimizerOptions:
    """AdamW and its learning-rate schedule."""

    lr: Annotated[float, typer.Option(help="Peak learning rate.", min=0.0)] = 1e-5
    warmup: Annotated[float, typer.Option(help="Warmup: below 1 a fraction of the optimizer steps, else a number of steps.", min=0.0)] = 0.0
    schedule: Annotated[str, typer.Option(help="After warmup: cosine | linear | constant.")] = "constant"
    min_lr_ratio: Annotated[float, typer.Option(help="Final LR as a fraction of the peak (cosine, linear).", min=0.0, max=1.0)] = 0.1
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.", min=0.0)] = 0.0
    max_grad_norm: Annotated[float, typer.Option(help="Clip the gradient norm to this; 0 = no clipping.", min=0.0)] = 1.0
    adam_betas: Annotated[tuple[float, float], typer.Option(help="AdamW's beta1 beta2 (two numbers).")] = (0.9, 0.95)
    adam_epsilon: Annotated[float, typer.Option(help="AdamW's epsilon.", min=0.0)] = 1e-8
    grad_accum: Annotated[int, typer.Option("--grad-accum", "--gradient-accumulation-steps",
                                            help="Micro-batches per optimizer step (memory only: the update is the same). Alias: TRL's name.", min=1)] = 1
    max_tokens_per_batch: Annotated[int | None, typer.Option(help="Padded tokens per micro-batch at most; longer batches are split, length-sorted (memory only: the update is the same). [default: from the model's shape and the free memory]", min=1)] = None
    gradient_checkpointing: Annotated[bool, typer.Option(help="Recompute activations in the backward pass to save memory.")] = False


@dataclass(frozen=True)
class SFTOptimizerOptions(OptimizerOptions):
    """SFT's defaults: the R1 paper's cosine decay to a tenth of the peak, a short warmup."""

    warmup: Annotated[float, typer.Option(help="Warmup: below 1 a fraction of the optimizer steps, else a number of steps.", min=0.0)] = 0.03
    schedule: Annotated[str, typer.Option(help="After warmup: cosine | linear | constant.")] = "cosine"


@dataclass(frozen=True)
class RLOptimizerOptions(OptimizerOptions):
    """RL's defaults: a small constant learning rate (DeepSeekMath's GRPO)."""

    lr: Annotated[float, typer.Option(help="Peak learning rate.", min=0.0)] = 1e-6


@dataclass(frozen=True)
class PromptOptions:
    """How prompt records become the text a model continues."""

    template: Annotated[str, typer.Option(help="auto (chat when the tokenizer has a chat template, else plain) | chat | r1-zero (the R1 paper's template for base models) | plain (the prompt as it is).")] = "auto"
    system: Annotated[str | None, typer.Option(help="System message for the chat template.")] = None
    prompt_key: Annotated[str, typer.Option(help="Field holding the prompt.")] = "prompt"
    answer_key: Annotated[str, typer.Option(help="Field holding the gold answer.")] = "answer"


@dataclass(frozen=True)
class DataOptions:
    """Which part of a dataset each record input that is one is read: a hub dataset (OWNER/NAME),
    a `save_to_disk` directory or a folder of data files. Files are read whole."""

    split: Annotated[str | None, typer.Option(help="Split of each dataset input (a hub dataset OWNER/NAME, a save_to_disk directory, a folder of data files), as datasets spells it: train, test, train[:1000]. [default: its only split]")] = None
    subset: Annotated[str | None, typer.Option("--subset", "--dataset-config", help="Subset (configuration) of each hub dataset input, e.g. main for openai/gsm8k. Alias: TRL's name.")] = None


@dataclass(frozen=True)
class GenerationOptions:
    """How completions are sampled (the R1 paper's evaluation settings by default)."""

    temperature: Annotated[float, typer.Option(help="Sampling temperature; 0 = greedy.", min=0.0)] = 0.6
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass, in (0, 1]; 1 = off.")] = 0.95
    top_k: Annotated[int, typer.Option(help="Sample among the K likeliest tokens; 0 = off.", min=0)] = 0
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", "--max-completion-length", help="Tokens per completion at most. Alias: TRL's name.", min=1)] = 1024
    stop: Annotated[list[str] | None, typer.Option(help="Stop string, kept in the completion (repeatable).")] = None
    engine: Annotated[str, typer.Option(help="auto (fast on a GPU, hf on a CPU) | fast (r1's CUDA-graph engine: Llama, Mistral, Qwen2, Qwen3; others fall back to hf) | hf (transformers forward) | vllm (if installed).")] = "auto"
    generation_batch_size: Annotated[int, typer.Option(help="Sequences generated together: the fast engine's slots, hf's batch (vLLM schedules its own).", min=1)] = 32
    engine_memory: Annotated[float, typer.Option(help="fast engine: the share of free GPU memory its KV cache may take.", min=0.01, max=0.95)] = 0.5

    def check(self) -> None:
        if math.isnan(self.top_p) or not 0 < self.top_p <= 1:
            raise UserError(f"--top-p {self.top_p}: must be in (0, 1]")
        if not math.isfinite(self.temperature):
            raise UserError(f"--temperature {self.temperature}: must be a number >= 0")


@dataclass(frozen=True)
class RolloutOptions(GenerationOptions):
    """GRPO's rollouts: the same options, with the RL stage's defaults (sampling at T = 1)."""

    temperature: Annotated[float, typer.Option(help="Sampling temperature; 0 = greedy.", min=0.0)] = 1.0
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass, in (0, 1]; 1 = off.")] = 1.0
    generation_batch_size: Annotated[int, typer.Option(help="Sequences generated together: the fast engine's slots, hf's batch (vLLM schedules its own).", min=1)] = 64


@dataclass(frozen=True)
class RewardSettings:
    """Parameters of the rewards that take any."""

    overlong_length: Annotated[int | None, typer.Option(help="overlong reward: completions longer than this many tokens get -1. [default: --max-new-tokens]", min=1)] = None
    overlong_buffer: Annotated[int, typer.Option(help="overlong reward: the penalty ramps from 0 to -1 over this many tokens before the limit.", min=1)] = 256


@dataclass(frozen=True)
class RunOptions:
    """A run directory: checkpoints, resumption, starting over."""

    seed: Annotated[int, typer.Option(help="Seed of every random stream (each derived from it and its name).")] = 0
    save_every: Annotated[int, typer.Option(help="Save a resumable checkpoint every N steps; 0 = only at the end.", min=0)] = 100
    keep_checkpoints: Annotated[int, typer.Option(help="Intermediate checkpoints to keep (newest).", min=1)] = 1
    overwrite: Annotated[bool, typer.Option(help="Start over: remove what r1 wrote to --out (nothing else).")] = False
    report_to: Annotated[str, typer.Option(help="Also send each metrics line, with the run's options as config, to: none | tensorboard (OUT/tensorboard) | wandb | trackio (each an optional install). metrics.jsonl is always written.")] = "none"


@dataclass(frozen=True)
class FilterOptions:
    """Rejection sampling: what a kept sample must be."""

    reward: Annotated[list[str] | None, typer.Option("--reward", help="Reward to score with, NAME[=WEIGHT] (repeatable). [default: accuracy]")] = None
    min_score: Annotated[list[str] | None, typer.Option("--min", help="Keep only samples with NAME >= VALUE (repeatable). [default: accuracy=1]")] = None
    require_format: Annotated[bool, typer.Option(help="Keep only <think>…</think> followed by a non-empty response.")] = False
    one_language: Annotated[bool, typer.Option(help="Drop reasoning that mixes languages (any word outside the prompt's script).")] = False
    no_code_blocks: Annotated[bool, typer.Option(help="Drop completions with fenced code blocks.")] = False
    max_paragraph_chars: Annotated[int | None, typer.Option(help="Drop completions with a paragraph longer than this many characters.")] = None
    per_prompt: Annotated[str, typer.Option(help="all | best | N: keep every survivor, the best (highest weighted reward, then shortest), or the N best per prompt.")] = "all"
    dedupe: Annotated[bool, typer.Option(help="Drop exact and near duplicate completions of the same prompt.")] = False
    near_duplicate: Annotated[float, typer.Option(help="With --dedupe: word 5-gram Jaccard similarity at which two completions are near duplicates.", min=0.0, max=1.0)] = 0.9


@dataclass(frozen=True)
class DistillFilterOptions(FilterOptions):
    """Distillation keeps only traces in the think format by default (the student learns the format)."""

    require_format: Annotated[bool, typer.Option(help="Keep only <think>…</think> followed by a non-empty response.")] = True


# ---------------------------------------------------------------- groups into a command line


def groups_of(function) -> dict[str, type]:
    """The parameters of FUNCTION annotated with an option group, by name."""
    hints = typing.get_type_hints(function)
    return {name: hint for name, hint in hints.items() if dataclasses.is_dataclass(hint)}


def command(function):
    """Expand FUNCTION's option-group parameters into plain options for typer, and pack the
    parsed values back into the groups when it is called. The docstring stays the help."""
    groups = groups_of(function)
    own = inspect.signature(function)
    hints = typing.get_type_hints(function, include_extras=True)
    parameters = [p.replace(annotation=hints.get(name, p.annotation)) for name, p in own.parameters.items() if name not in groups]
    for group in groups.values():
        group_hints = typing.get_type_hints(group, include_extras=True)
        for option in dataclasses.fields(group):
            parameters.append(inspect.Parameter(option.name, inspect.Parameter.KEYWORD_ONLY, default=option.default,
                                                annotation=group_hints[option.name]))
    # --config FILE: read before parsing (r1cli/config_files.py); declared here so every command's help shows it.
    from r1cli.config_files import HELP

    parameters.append(inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=Annotated[str | None, typer.Option("--config", help=HELP)]))
    names = [p.name for p in parameters]
    if len(set(names)) < len(names):
        raise TypeError(f"{function.__name__}: an option is declared twice ({sorted(n for n in names if names.count(n) > 1)})")

    signature = own.replace(parameters=sorted(parameters, key=lambda p: p.kind))

    @functools.wraps(function)
    def face(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)  # Python callers (tests, pipelines) pass options by name too
        bound.apply_defaults()
        values = dict(bound.arguments)
        values.pop("config")  # already expanded into the other options
        for name, group in groups.items():
            values[name] = group(**{option.name: values.pop(option.name) for option in dataclasses.fields(group)})
        return function(**values)

    face.__signature__ = signature
    # Resolved annotations: typer reads them with this module's globals, where the command's names are unknown.
    face.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
    del face.__wrapped__  # typer must read the expanded signature, not the original's
    return face


def recorded_options(config) -> dict:
    """Every option of CONFIG (a recipe's config dataclass) by its command-line name, as r1.json
    records it: its own fields (tuples as lists), then the fields of each option group it holds."""
    own, grouped = {}, {}
    for option in dataclasses.fields(config):
        value = getattr(config, option.name)
        if dataclasses.is_dataclass(value):
            grouped.update(dataclasses.asdict(value))
        else:
            own[option.name] = list(value) if isinstance(value, tuple) else value
    return {**own, **grouped}


def as_dict(*groups) -> dict:
    """Every option of GROUPS by name (for r1.json)."""
    merged: dict = {}
    for group in groups:
        merged.update(dataclasses.asdict(group))
    return merged


# ---------------------------------------------------------------- single options several commands take

Seed = Annotated[int, typer.Option(help="Seed of every random stream (each derived from it and its name).")]
SamplesPerPrompt = Annotated[int, typer.Option("--n", help="Completions per prompt.", min=1)]
Overwrite = Annotated[bool, typer.Option(help="Start over: remove what r1 wrote to --out (nothing else).")]
