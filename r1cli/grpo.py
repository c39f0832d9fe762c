"""`r1 grpo`: Group Relative Policy Optimization with rule-based (or model) rewards.

Each step, read top to bottom in `grpo()`: take P prompts, sample G completions each with the
built-in engine (generate), score them with the weighted rewards (score), turn rewards into
group-relative advantages, and update the policy on the clipped objective (train). The three
phases are timed separately in every metrics line.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated

import torch
import typer

from r1cli import checkpoint as ckpt
from r1cli import runs
from r1cli.console import log, progress_bar, warn
from r1cli.errors import UserError
from r1cli.generation import TEMPLATES, HFEngine, SamplingOptions, format_prompt
from r1cli.grpo_loss import LOSS_TYPES, SCALINGS, Normaliser, aggregate, group_advantages, per_token_objective
from r1cli.modeling import load_model, prepare_for_training, resolve_device, resolve_dtype
from r1cli.records import dumps, read_records, sample_record, to_prompt_record, unique_ids
from r1cli.rewards import RewardOptions, Scorer, parse_rewards
from r1cli.sandbox import require_isolation
from r1cli.seeding import derive_seed, python_random, seed_everything
from r1cli.training import (
    MetricsLog,
    already_finished,
    format_status,
    make_optimizer,
    make_scheduler,
    resume,
    training_identity,
)

RESUME_MAY_CHANGE = ("save_every", "keep_checkpoints", "overwrite", "device", "log_samples_every", "batch_size")
STATUS_KEYS = ("reward", "accuracy", "format", "kl", "completion_length", "seconds")


@dataclass
class Rollout:
    """One completion with what training needs."""

    prompt_ids: list[int]
    completion_ids: list[int]
    reward: float | None  # None: no reward applies to it
    truncated: bool


def grpo(
    model: Annotated[str, typer.Argument(help="Policy checkpoint directory (or hub name).")],
    prompts: Annotated[str, typer.Argument(help="Prompt records (JSONL, JSON or Parquet) with gold answers where rewards need them.")],
    out: Annotated[Path, typer.Option("--out", help="Run directory; the final checkpoint is written here.")],
    reward: Annotated[list[str], typer.Option("--reward", help="NAME[=WEIGHT] (repeatable): accuracy, format, tags, language, overlong, repetition, code, rm:PATH, MODULE:FUNCTION.")],
    steps: Annotated[int, typer.Option(help="Steps: each samples fresh rollouts, then updates the policy iterations x minibatches times.", min=1)] = 100,
    prompts_per_step: Annotated[int, typer.Option(help="Prompts (groups) per step (P).", min=1)] = 16,
    num_generations: Annotated[int, typer.Option(help="Completions per prompt (G).", min=2)] = 8,
    temperature: Annotated[float, typer.Option(help="Sampling temperature of the rollouts.")] = 1.0,
    top_p: Annotated[float, typer.Option(help="Nucleus mass of the rollouts; 1 = off.")] = 1.0,
    max_new_tokens: Annotated[int, typer.Option(help="Completion tokens at most.", min=1)] = 512,
    max_prompt_length: Annotated[int, typer.Option(help="Prompt tokens at most (longer prompts keep their end).", min=1)] = 1024,
    template: Annotated[str, typer.Option(help="chat | r1-zero (the R1 paper's template for base models).")] = "chat",
    system: Annotated[str | None, typer.Option(help="System message for --template chat.")] = None,
    loss: Annotated[str, typer.Option(help="grpo (per-completion token mean, DeepSeekMath) | dapo (token sum / the step's tokens; with --minibatches M each update divides by the step's tokens / M, as TRL does) | dr_grpo (sum / (completions x max tokens)).")] = "grpo",
    scale_rewards: Annotated[str, typer.Option(help="Advantage scaling: group (std of the group) | batch | none (Dr. GRPO).")] = "group",
    epsilon: Annotated[float, typer.Option(help="Clip range below (and above unless --epsilon-high).")] = 0.2,
    epsilon_high: Annotated[float | None, typer.Option(help="Clip range above (DAPO clip-higher). [default: --epsilon]")] = None,
    beta: Annotated[float, typer.Option(help="KL weight (k3 estimator); 0 loads no reference model. DeepSeekMath 0.04, R1-Zero 0.001.")] = 0.0,
    ref_update_every: Annotated[int, typer.Option(help="Refresh the reference from the policy every N steps; 0 = never.", min=0)] = 0,
    iterations: Annotated[int, typer.Option(help="Passes over each step's rollouts (mu).", min=1)] = 1,
    minibatches: Annotated[int, typer.Option(help="Optimizer updates per pass (M).", min=1)] = 1,
    skip_uniform_groups: Annotated[bool, typer.Option(help="Drop groups whose rewards are all equal and sample more prompts to refill the step (DAPO).")] = False,
    mask_truncated: Annotated[bool, typer.Option(help="No loss on completions cut at --max-new-tokens (DAPO).")] = False,
    lr: Annotated[float, typer.Option(help="Learning rate (constant after warmup).")] = 1e-6,
    warmup: Annotated[int, typer.Option(help="Warmup optimizer updates.", min=0)] = 0,
    max_grad_norm: Annotated[float, typer.Option(help="Clip the gradient norm to this; 0 = no clipping.")] = 1.0,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.0,
    grad_accum: Annotated[int, typer.Option(help="Micro-batches per optimizer update (memory only: the update is the same).", min=1)] = 1,
    batch_size: Annotated[int, typer.Option(help="Sequences generated together.", min=1)] = 64,
    lora_r: Annotated[int, typer.Option(help="LoRA rank; 0 trains every weight. With LoRA the reference is the adapter-free model.", min=0)] = 0,
    lora_alpha: Annotated[int | None, typer.Option(help="LoRA alpha. [default: 2 x rank]")] = None,
    lora_targets: Annotated[str, typer.Option(help="Comma-separated module names for LoRA, or all-linear.")] = "all-linear",
    merge: Annotated[bool, typer.Option(help="With LoRA, write the merged model as the loadable checkpoint.")] = True,
    gradient_checkpointing: Annotated[bool, typer.Option(help="Recompute activations in the backward pass.")] = False,
    dtype: Annotated[str, typer.Option(help="Compute dtype: auto (bf16 on GPU, fp32 on CPU) | bf16 | fp16 | fp32.")] = "auto",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
    max_length: Annotated[int, typer.Option(help="overlong reward: the length limit in tokens. [default: --max-new-tokens]")] = 0,
    overlong_buffer: Annotated[int, typer.Option(help="overlong reward: the soft-penalty buffer in tokens.")] = 256,
    prompt_key: Annotated[str, typer.Option(help="Field holding the prompt.")] = "prompt",
    answer_key: Annotated[str, typer.Option(help="Field holding the gold answer.")] = "answer",
    seed: Annotated[int, typer.Option(help="Seed of the prompt order and the sampling.")] = 0,
    save_every: Annotated[int, typer.Option(help="Save a resumable checkpoint every N steps; 0 = only at the end.", min=0)] = 50,
    keep_checkpoints: Annotated[int, typer.Option(help="Intermediate checkpoints to keep (newest).", min=1)] = 1,
    log_samples_every: Annotated[int, typer.Option(help="Every N steps, write a few prompts with completions and rewards to OUT/samples.jsonl; 0 = never.", min=0)] = 10,
    overwrite: Annotated[bool, typer.Option(help="Start over even if --out holds a run.")] = False,
) -> None:
    """Train MODEL with GRPO on PROMPTS, rewarded by --reward. Run the same command again to resume."""
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in locals().items()}
    started = time.time()
    _check_options(template, loss, scale_rewards, lora_r, ref_update_every, beta, temperature, top_p, epsilon, epsilon_high)
    epsilon_high = epsilon if epsilon_high is None else epsilon_high
    specs = parse_rewards(reward, RewardOptions(max_length=max_length or max_new_tokens, overlong_buffer=overlong_buffer))
    if any(spec.name == "code" for spec in specs):
        require_isolation("--reward code")
    identity = training_identity(options, models={"model": model}, inputs={"prompts": prompts}, may_change=RESUME_MAY_CHANGE)
    with runs.exclusive(out):
        if already_finished(out, identity, overwrite=overwrite, inputs=[model, prompts]):
            return
        records, repeated = unique_ids([to_prompt_record(r, prompt_key, answer_key) for r in read_records(prompts)])
        if repeated:
            warn(f"{repeated} prompt(s) repeat an earlier id (or prompt) and are used once")
        if len(records) < prompts_per_step:
            raise UserError(f"{prompts}: {len(records)} prompts, fewer than --prompts-per-step {prompts_per_step}")

        target = resolve_device(device)
        compute_dtype = resolve_dtype(dtype, target)
        seed_everything(seed)
        network, tokenizer = load_model(model, dtype=compute_dtype if lora_r else torch.float32)
        network = prepare_for_training(network, model, lora_r, lora_alpha, 0.0, lora_targets, gradient_checkpointing).to(target)
        reference = None
        if beta > 0 and not lora_r:
            reference = load_model(model, dtype=compute_dtype)[0].to(target).eval().requires_grad_(False)
        optimizer = make_optimizer(network, lr, weight_decay)
        scheduler = make_scheduler(optimizer, schedule="constant", warmup=warmup, total_steps=steps * iterations * minibatches, min_lr_ratio=1.0)
        engine = HFEngine(network, tokenizer, batch_size=batch_size)
        scorer = Scorer(specs)
        stream = PromptStream(len(records), seed)
        progress, latest = resume(out, network, optimizer, scheduler, identity)
        start_step = 0
        if progress:
            start_step, stream.consumed = progress["step"], progress["prompts_consumed"]
            if reference is not None and (latest / ckpt.STATE / "reference.safetensors").exists():
                load_reference(reference, latest)
        log(f"grpo: {len(records)} prompts, {steps} steps of {prompts_per_step} prompts x {num_generations} completions, "
            f"loss {loss}, rewards {', '.join(f'{s.name}={s.weight:g}' for s in specs)}, {target}")

        # Tokenized once: generation and training see the same prompt tokens (longer prompts keep their end).
        prompt_ids = [tokenizer(format_prompt(r["prompt"], tokenizer, template, system), add_special_tokens=False)["input_ids"][-max_prompt_length:]
                      for r in records]
        lineage = partial(ckpt.lineage, "grpo", options, parent=ckpt.describe_parent(model), inputs=ckpt.describe_inputs([prompts]),
                          identity=identity.to_json())
        metrics_log = MetricsLog(out / "metrics.jsonl", resume_step=start_step)
        samples_log = out / "samples.jsonl"
        last: dict = {}
        with progress_bar() as bar:
            task = bar.add_task("grpo", total=steps, completed=start_step, status="")
            for step in range(start_step, steps):
                step_started = time.time()
                metrics: dict = {"step": step + 1}

                # 1. generate and 2. score: P groups of G completions (refilled when uniform groups are skipped)
                groups, uniform, timings = [], 0, {"generate": 0.0, "score": 0.0}
                sampling = SamplingOptions(temperature, top_p, 0, max_new_tokens, (), seed)
                for _refill in range(8 if skip_uniform_groups else 1):
                    wanted = prompts_per_step - len(groups)
                    positions = [stream.consumed + offset for offset in range(wanted)]  # each prompt draw's place in the run
                    chosen = [stream.next() for _ in range(wanted)]
                    seeds = [[derive_seed(seed, "rollout", position, k) for k in range(num_generations)] for position in positions]
                    began = time.time()
                    network.eval()
                    generated = engine.generate_ids([prompt_ids[i] for i in chosen], sampling, seeds=seeds)
                    timings["generate"] += time.time() - began
                    began = time.time()
                    samples = [sample_record(records[i], k, c) for i, completions in zip(chosen, generated) for k, c in enumerate(completions)]
                    scores = scorer.score(samples)
                    for g, (index, completions) in enumerate(zip(chosen, generated)):
                        group = slice(g * num_generations, (g + 1) * num_generations)
                        totals = [scorer.total_if_scored(s) for s in scores[group]]
                        scored = [t for t in totals if t is not None]
                        if skip_uniform_groups and (len(scored) < 2 or max(scored) == min(scored)):
                            uniform += 1
                            continue
                        groups.append((index, completions, samples[group], scores[group], totals))
                    timings["score"] += time.time() - began
                    if len(groups) >= prompts_per_step:
                        break
                if not groups:
                    raise UserError("every sampled group had uniform rewards; nothing to learn from (try without --skip-uniform-groups)")

                # 3. advantages and 4. train
                began = time.time()
                rollouts = [
                    Rollout(prompt_ids[index], c.token_ids, total, c.finish_reason == "length")
                    for index, completions, _, _, totals in groups for c, total in zip(completions, totals)
                ]
                # A completion no reward applies to moves nothing: advantage 0, outside its group's mean and std.
                valid_B = torch.tensor([r.reward is not None for r in rollouts])
                rewards_B = torch.tensor([0.0 if r.reward is None else r.reward for r in rollouts])
                advantages_B = group_advantages(rewards_B, num_generations, scale_rewards, valid_B)
                train_metrics = train_on_rollouts(
                    network, reference, optimizer, scheduler, rollouts, advantages_B, tokenizer.pad_token_id, target, compute_dtype,
                    loss=loss, temperature=temperature, epsilon_low=epsilon, epsilon_high=epsilon_high, beta=beta,
                    iterations=iterations, minibatches=minibatches, grad_accum=grad_accum, mask_truncated=mask_truncated,
                    max_new_tokens=max_new_tokens, max_grad_norm=max_grad_norm, lora=bool(lora_r), seed=derive_seed(seed, "minibatch-order", step),
                )
                timings["train"] = time.time() - began
                if reference is not None and ref_update_every and (step + 1) % ref_update_every == 0:
                    reference.load_state_dict(network.state_dict())

                # 5. metrics, samples, checkpoints
                all_scores = [s for *_, scores, _ in groups for s in scores]
                metrics.update(step_metrics(rewards_B[valid_B], all_scores, rollouts, uniform, len(groups) + uniform, timings, train_metrics, specs))
                metrics["seconds"] = round(time.time() - step_started, 2)
                if log_samples_every and (step + 1) % log_samples_every == 0:
                    _log_samples(samples_log, step + 1, groups[:2])
                done = step + 1
                metrics_log.write(metrics)  # before the checkpoint: a run resumed from it must not lack this step's line
                if save_every and done % save_every == 0 and done < steps:
                    progress = {"step": done, "prompts_consumed": stream.consumed, "options": options, "identity": identity.to_json()}
                    ckpt.write_checkpoint(
                        ckpt.checkpoint_dir(out, done),
                        partial(_write_intermediate, network=network, tokenizer=tokenizer, optimizer=optimizer, scheduler=scheduler,
                                progress=progress, save_dtype=compute_dtype, lora_r=lora_r, reference=reference if ref_update_every else None),
                        lineage(step=done, metrics=metrics),
                    )
                    ckpt.prune_checkpoints(out, keep_checkpoints)
                last = metrics
                bar.update(task, completed=done, status=format_status(metrics, STATUS_KEYS))
        metrics_log.close()
        scorer.close()
        final = {**last, "wall_seconds": round(time.time() - started, 1)}
        ckpt.write_checkpoint(out, partial(ckpt.write_final, network=network, tokenizer=tokenizer, save_dtype=compute_dtype,
                                           lora_r=lora_r, merge=merge), lineage(step=steps, metrics=final))
        log(f"wrote {out} (step {steps}: {format_status(final, ('reward', 'accuracy', 'format', 'wall_seconds'))})")


class PromptStream:
    """Prompt indices in a fresh seeded order each epoch; its position is one number (consumed)."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.consumed = size, seed, 0

    def next(self) -> int:
        epoch, offset = divmod(self.consumed, self.size)
        order = list(range(self.size))
        python_random(self.seed, "prompt-order", epoch).shuffle(order)
        self.consumed += 1
        return order[offset]


def train_on_rollouts(network, reference, optimizer, scheduler, rollouts, advantages_B, pad_id, device, compute_dtype, *, loss,
                      temperature, epsilon_low, epsilon_high, beta, iterations, minibatches, grad_accum, mask_truncated,
                      max_new_tokens, max_grad_norm, lora, seed) -> dict:
    """mu passes over the rollouts in M minibatches, one optimizer update each."""
    network.train()
    order_rng = random.Random(seed)
    on_policy = iterations == 1 and minibatches == 1
    old_logprobs = None if on_policy else _logprobs_of(network, rollouts, pad_id, device, compute_dtype, temperature)
    totals = {"kl": [], "clipped_low": [], "clipped_high": [], "entropy": [], "loss": [], "grad_norm": []}
    trainable = [p for p in network.parameters() if p.requires_grad]
    # dapo with M minibatches divides each update by the step's tokens / M, so updates have equal scale.
    step_tokens = sum(len(r.completion_ids) for r in rollouts if not (mask_truncated and r.truncated))
    for _ in range(iterations):
        order = list(range(len(rollouts)))
        if not on_policy:
            order_rng.shuffle(order)
        for minibatch in _split(order, minibatches):
            micro_batches = _split(minibatch, grad_accum)
            batches = [_collate([rollouts[i] for i in micro], pad_id, device, mask_truncated) for micro in micro_batches]
            normaliser = Normaliser.for_step(loss, [b["completion_mask"] for b in batches], max_new_tokens,
                                             step_tokens=step_tokens, minibatches=minibatches)
            step_loss = 0.0
            for micro, batch in zip(micro_batches, batches):
                with torch.autocast(device.type, dtype=compute_dtype, enabled=compute_dtype != torch.float32):
                    logprobs_BT, entropy_BT = _policy_logprobs(network, batch, temperature, with_entropy=True)
                    ref_logprobs_BT = _reference_logprobs(network, reference, batch, temperature, lora) if beta > 0 else None
                old = logprobs_BT.detach() if old_logprobs is None else _padded([old_logprobs[i] for i in micro], logprobs_BT.shape[1])
                per_token, parts = per_token_objective(logprobs_BT, old, advantages_B[micro].to(device), epsilon_low, epsilon_high, ref_logprobs_BT, beta)
                micro_loss = aggregate(per_token, batch["completion_mask"], normaliser)
                micro_loss.backward()
                step_loss += micro_loss.item()
                mask = batch["completion_mask"].bool()
                for name in ("clipped_low", "clipped_high"):
                    totals[name] += parts[name][mask].float().tolist()
                if "kl" in parts:
                    totals["kl"] += parts["kl"].detach()[mask].tolist()
                totals["entropy"] += entropy_BT[mask].tolist()
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm if max_grad_norm > 0 else float("inf"))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            totals["loss"].append(step_loss)
            totals["grad_norm"].append(float(grad_norm))
    return {name: sum(values) / len(values) for name, values in totals.items() if values}


def _collate(rollouts: list[Rollout], pad_id: int, device, mask_truncated: bool) -> dict[str, torch.Tensor]:
    """Prompts left-padded to one width, completions right-padded after them: the completion
    tokens then sit at the same positions in every row."""
    prompt_width = max(len(r.prompt_ids) for r in rollouts)
    completion_width = max(1, max(len(r.completion_ids) for r in rollouts))
    rows, masks, completion_masks = [], [], []
    for r in rollouts:
        left = prompt_width - len(r.prompt_ids)
        right = completion_width - len(r.completion_ids)
        rows.append([pad_id] * left + r.prompt_ids + r.completion_ids + [pad_id] * right)
        masks.append([0] * left + [1] * (len(r.prompt_ids) + len(r.completion_ids)) + [0] * right)
        keep = 0 if (mask_truncated and r.truncated) else 1
        completion_masks.append([keep] * len(r.completion_ids) + [0] * right)
    attention_mask = torch.tensor(masks, device=device)
    return {
        "input_ids": torch.tensor(rows, device=device),
        "attention_mask": attention_mask,
        "position_ids": (attention_mask.cumsum(-1) - 1).clamp(min=0),
        "completion_mask": torch.tensor(completion_masks, device=device, dtype=torch.float32),
        "prompt_width": torch.tensor(prompt_width),
    }


def _policy_logprobs(network, batch, temperature: float, with_entropy: bool = False):
    """Log-probabilities of the completion tokens under logits / temperature (as they were sampled)."""
    prompt_width = int(batch["prompt_width"])
    logits = network(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     position_ids=batch["position_ids"], use_cache=False).logits
    logits = logits[:, prompt_width - 1 : -1].float() / max(temperature, 1e-6)
    logprobs_all = logits.log_softmax(-1)
    tokens = batch["input_ids"][:, prompt_width:]
    logprobs = logprobs_all.gather(-1, tokens[..., None]).squeeze(-1)
    if not with_entropy:
        return logprobs
    with torch.no_grad():
        entropy = -(logprobs_all.exp() * logprobs_all).sum(-1)
    return logprobs, entropy


@torch.no_grad()
def _reference_logprobs(network, reference, batch, temperature: float, lora: bool):
    if lora:  # the reference is the same model with the adapter switched off: no second copy
        with network.disable_adapter():
            return _policy_logprobs(network, batch, temperature)
    return _policy_logprobs(reference, batch, temperature)


@torch.no_grad()
def _logprobs_of(network, rollouts, pad_id, device, compute_dtype, temperature) -> list[torch.Tensor]:
    """pi_old: each rollout's completion log-probabilities under the policy before this step's updates."""
    out = []
    for rollout in rollouts:
        batch = _collate([rollout], pad_id, device, mask_truncated=False)
        with torch.autocast(device.type, dtype=compute_dtype, enabled=compute_dtype != torch.float32):
            out.append(_policy_logprobs(network, batch, temperature)[0, : len(rollout.completion_ids)])
    return out


def _padded(rows: list[torch.Tensor], width: int) -> torch.Tensor:
    return torch.stack([torch.nn.functional.pad(row, (0, width - row.shape[0])) for row in rows])


def _split(items: list[int], parts: int) -> list[list[int]]:
    size = -(-len(items) // parts)
    return [items[i : i + size] for i in range(0, len(items), size)]


def step_metrics(rewards_B, scores, rollouts, uniform, groups_seen, timings, train_metrics, specs) -> dict:
    lengths = [len(r.completion_ids) for r in rollouts]
    metrics = {
        "reward": rewards_B.mean().item() if len(rewards_B) else None,
        "reward_std": rewards_B.std().item() if len(rewards_B) > 1 else 0.0,
        "unscored": sum(r.reward is None for r in rollouts),  # completions no reward applied to
    }
    for spec in specs:
        values = [s[spec.name] for s in scores if s.get(spec.name) is not None]
        if values:
            metrics[f"rewards/{spec.name}"] = sum(values) / len(values)
    for name in ("accuracy", "format"):
        if f"rewards/{name}" in metrics:
            metrics[name] = metrics[f"rewards/{name}"]
    metrics.update({
        "completion_length": sum(lengths) / len(lengths),
        "completion_length_max": max(lengths),
        "truncated": sum(r.truncated for r in rollouts) / len(rollouts),
        "uniform_groups": uniform / groups_seen,
        "completions": len(rollouts),
        **{k: v for k, v in train_metrics.items()},
        "generate_seconds": round(timings["generate"], 2),
        "score_seconds": round(timings["score"], 2),
        "train_seconds": round(timings["train"], 2),
        "generate_tokens_per_s": round(sum(lengths) / max(timings["generate"], 1e-9), 1),
        "train_tokens_per_s": round(sum(len(r.prompt_ids) + len(r.completion_ids) for r in rollouts) / max(timings["train"], 1e-9), 1),
    })
    return metrics


def _log_samples(path: Path, step: int, groups) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        for _, _, samples, scores, totals in groups:
            for sample, score, total in list(zip(samples, scores, totals))[:2]:
                handle.write(dumps({"step": step, "id": sample["id"], "prompt": sample["prompt"], "completion": sample["completion"],
                                    "rewards": score, "reward": total}) + "\n")


def _write_intermediate(directory: Path, *, network, tokenizer, optimizer, scheduler, progress, save_dtype, lora_r, reference):
    ckpt.write_intermediate(directory, network, tokenizer, optimizer, scheduler, progress, save_dtype, lora_r)
    if reference is not None:  # a reference refreshed from the policy cannot be rebuilt from MODEL
        from safetensors.torch import save_file

        weights = {name: parameter.detach().contiguous() for name, parameter in reference.named_parameters()}  # tied weights once
        save_file(weights, directory / ckpt.STATE / "reference.safetensors")


def load_reference(reference, directory: Path) -> None:
    from safetensors.torch import load_file

    reference.load_state_dict(load_file(directory / ckpt.STATE / "reference.safetensors"), strict=False)


def _check_options(template, loss, scale_rewards, lora_r, ref_update_every, beta, temperature, top_p, epsilon, epsilon_high) -> None:
    if not (beta >= 0 and math.isfinite(beta)):
        raise UserError(f"--beta {beta}: must be a finite number >= 0")
    for name, value in (("--epsilon", epsilon), ("--epsilon-high", epsilon_high)):
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise UserError(f"{name} {value}: must be a finite number above 0")
    if not (0 < top_p <= 1):
        raise UserError(f"--top-p {top_p}: must be in (0, 1]")
    if not temperature > 0:
        raise UserError(f"--temperature {temperature}: GRPO samples, so it must be above 0")
    if template not in TEMPLATES:
        raise UserError(f"--template {template!r} is not one of: {', '.join(TEMPLATES)}")
    if loss not in LOSS_TYPES:
        raise UserError(f"--loss {loss!r} is not one of: {', '.join(LOSS_TYPES)}")
    if scale_rewards not in SCALINGS:
        raise UserError(f"--scale-rewards {scale_rewards!r} is not one of: {', '.join(SCALINGS)}")
    if lora_r and ref_update_every:
        raise UserError("--ref-update-every needs full fine-tuning: with LoRA the reference is the adapter-free base")
    if ref_update_every and beta <= 0:
        raise UserError("--ref-update-every needs a reference model: set --beta above 0")

