"""`r1 grpo`: the command line of the GRPO recipe."""

from __future__ import annotations

from typing import Annotated

import typer

from r1cli.options import (
    ComputeOptions,
    DataOptions,
    LoraOptions,
    PromptOptions,
    RewardSettings,
    RLOptimizerOptions,
    RolloutOptions,
    RunOptions,
    command,
)
from r1cli.recipes.grpo import GRPOConfig, run_grpo


@command
def grpo(
    model: Annotated[str, typer.Argument(help="Policy checkpoint directory (or hub name).")],
    prompts: Annotated[str, typer.Argument(help="Prompt records (JSONL, JSON, Parquet, or a dataset: hub OWNER/NAME, save_to_disk directory) with gold answers where rewards need them.")],
    out: Annotated[str, typer.Option("--out", help="Run directory; the final checkpoint is written here.")],
    reward: Annotated[list[str], typer.Option("--reward", help="NAME[=WEIGHT] (repeatable): accuracy, format, tags, language, overlong, repetition, code, rm:PATH, MODULE:FUNCTION.")],
    prompt: PromptOptions,
    rollout: RolloutOptions,
    optim: RLOptimizerOptions,
    lora: LoraOptions,
    compute: ComputeOptions,
    run: RunOptions,
    rewards: RewardSettings,
    source: DataOptions,
    steps: Annotated[int, typer.Option(help="Steps: each samples fresh rollouts, then updates the policy iterations x minibatches times.", min=1)] = 100,
    prompts_per_step: Annotated[int, typer.Option(help="Prompts (groups) per step (P).", min=1)] = 16,
    num_generations: Annotated[int, typer.Option(help="Completions per prompt (G).", min=2)] = 8,
    max_prompt_length: Annotated[int, typer.Option(help="Prompt tokens at most (longer prompts keep their end).", min=1)] = 1024,
    loss: Annotated[str, typer.Option("--loss", "--loss-type", help="Alias --loss-type (TRL's name). grpo (per-completion token mean, DeepSeekMath) | dapo (token sum / the step's tokens; with --minibatches M each update divides by the step's tokens / M, as TRL does) | dr_grpo (sum / (completions x max tokens)).")] = "grpo",
    scale_rewards: Annotated[str, typer.Option(help="Advantage scaling: group (std of the group) | batch | none (Dr. GRPO).")] = "group",
    epsilon: Annotated[float, typer.Option(help="Clip range below (and above unless --epsilon-high).")] = 0.2,
    epsilon_high: Annotated[float | None, typer.Option(help="Clip range above (DAPO clip-higher). [default: --epsilon]")] = None,
    beta: Annotated[float, typer.Option(help="KL weight (k3 estimator); 0 loads no reference model. DeepSeekMath 0.04, R1-Zero 0.001.")] = 0.0,
    ref_update_every: Annotated[int, typer.Option(help="Refresh the reference from the policy every N steps; 0 = never.", min=0)] = 0,
    iterations: Annotated[int, typer.Option(help="Passes over each step's rollouts (mu).", min=1)] = 1,
    minibatches: Annotated[int, typer.Option(help="Optimizer updates per pass (M).", min=1)] = 1,
    skip_uniform_groups: Annotated[bool, typer.Option(help="Drop groups whose rewards are all equal and sample more prompts to refill the step (DAPO).")] = False,
    mask_truncated: Annotated[bool, typer.Option(help="No loss on completions cut at --max-new-tokens (DAPO).")] = False,
    log_samples_every: Annotated[int, typer.Option(help="Every N steps, write a few prompts with completions and rewards to OUT/samples.jsonl; 0 = never.", min=0)] = 10,
) -> None:
    """Train MODEL with GRPO on PROMPTS, rewarded by --reward. Run the same command again to resume."""
    run_grpo(GRPOConfig(model, prompts, str(out), tuple(reward), steps, prompts_per_step, num_generations, max_prompt_length, loss,
                        scale_rewards, epsilon, epsilon_high, beta, ref_update_every, iterations, minibatches, skip_uniform_groups,
                        mask_truncated, log_samples_every, prompt, rollout, optim, lora, compute, run, rewards, source))
