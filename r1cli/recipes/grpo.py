"""The GRPO recipe: Group Relative Policy Optimization with rule-based (or model) rewards.

Read `run_grpo`'s loop top to bottom: each step samples and scores P groups of G completions
(`collect_groups`), turns rewards into group-relative advantages, updates the policy on the
clipped objective (`update_policy`), hands the new weights to the rollout engine, then writes
the step's metrics line and, every `--save-every` steps, a checkpoint.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from r1cli.console import format_status, log, progress_bar, warn
from r1cli.data import outputs as runs
from r1cli.data.records import dumps, read_records, to_prompt_record, unique_ids
from r1cli.data.templates import TEMPLATES, format_prompt
from r1cli.engines.base import EngineSettings, SamplingOptions, engine_class, engine_names
from r1cli.errors import UserError
from r1cli.modeling import load_model, prepare_for_training, resolve_device, resolve_dtype
from r1cli.options import (
    ComputeOptions,
    DataOptions,
    LoraOptions,
    PromptOptions,
    RewardSettings,
    RLOptimizerOptions,
    RolloutOptions,
    RunOptions,
    recorded_options,
)
from r1cli.report.card import think_format_reason
from r1cli.rewards.registry import RewardSpec, Scorer, parse_rewards, reward_options
from r1cli.rewards.sandbox import require_isolation
from r1cli.rl.loss import LOSS_TYPES, SCALINGS
from r1cli.rl.policy import Policy, UpdateSettings, UpdateStats, update_policy
from r1cli.rl.rollouts import PromptSet, PromptStream, RolloutBatch, StepRollouts, collect_groups, gather_step
from r1cli.seeding import derive_seed, seed_everything
from r1cli.train import checkpoint as ckpt
from r1cli.train import distributed
from r1cli.train.batching import token_budget
from r1cli.train.metrics_log import MetricsLog, NoMetricsLog, peak_memory
from r1cli.train.optim import make_optimizer, make_scheduler, warmup_steps
from r1cli.train.resume import Length, already_finished, fixed_length, resume, training_identity
from r1cli.train.tracking import check_report_to

RESUME_MAY_CHANGE = ("save_every", "keep_checkpoints", "overwrite", "device", "log_samples_every", "generation_batch_size",
                     "engine_memory", "max_tokens_per_batch", "report_to")
STATUS_KEYS = ("reward", "accuracy", "format", "kl", "completion_length", "seconds")
REFERENCE_STATE = "reference"  # state/reference.safetensors: a reference refreshed from the policy


@dataclass(frozen=True)
class GRPOConfig:
    model: str
    prompts: str
    out: str
    reward: tuple[str, ...]
    steps: int = 100
    prompts_per_step: int = 16
    num_generations: int = 8
    max_prompt_length: int = 1024
    loss: str = "grpo"
    scale_rewards: str = "group"
    epsilon: float = 0.2
    epsilon_high: float | None = None
    beta: float = 0.0
    ref_update_every: int = 0
    iterations: int = 1
    minibatches: int = 1
    skip_uniform_groups: bool = False
    mask_truncated: bool = False
    log_samples_every: int = 10
    prompt: PromptOptions = PromptOptions()
    rollout: RolloutOptions = RolloutOptions()
    optim: RLOptimizerOptions = RLOptimizerOptions()
    lora: LoraOptions = LoraOptions()
    compute: ComputeOptions = ComputeOptions()
    run: RunOptions = RunOptions()
    rewards: RewardSettings = RewardSettings()
    source: DataOptions = DataOptions()

    def options(self) -> dict:
        """Every option by its command-line name, as r1.json records it."""
        return recorded_options(self)

    def extendable(self) -> bool:
        """Whether a finished run may be continued to more --steps: a constant LR after a warmup counted
        in steps, so that the total shapes none of the steps (r1cli/train/resume.py)."""
        return self.optim.schedule == "constant" and not 0 < self.optim.warmup < 1

    def length(self) -> Length:
        if self.extendable():
            return Length(("steps",), self.steps)
        return fixed_length(("steps",), self.optim.schedule, self.optim.warmup, f"r1 grpo {self.out} {self.prompts} --out NEW_DIR ...")

    def check(self) -> None:
        if not (self.beta >= 0 and math.isfinite(self.beta)):
            raise UserError(f"--beta {self.beta}: must be a finite number >= 0")
        for name, value in (("--epsilon", self.epsilon), ("--epsilon-high", self.epsilon_high)):
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise UserError(f"{name} {value}: must be a finite number above 0")
        self.rollout.check()
        check_report_to(self.run.report_to)
        if not self.rollout.temperature > 0:
            raise UserError(f"--temperature {self.rollout.temperature}: GRPO samples, so it must be above 0")
        for name, value, valid in (("--template", self.prompt.template, TEMPLATES), ("--loss", self.loss, LOSS_TYPES),
                                   ("--scale-rewards", self.scale_rewards, SCALINGS), ("--engine", self.rollout.engine, engine_names())):
            if value not in valid:
                raise UserError(f"{name} {value!r} is not one of: {', '.join(valid)}")
        if self.lora.lora_r and self.ref_update_every:
            raise UserError("--ref-update-every needs full fine-tuning: with LoRA the reference is the adapter-free base")
        if self.ref_update_every and self.beta <= 0:
            raise UserError("--ref-update-every needs a reference model: set --beta above 0")

    def sampling(self) -> SamplingOptions:
        r = self.rollout
        return SamplingOptions(r.temperature, r.top_p, r.top_k, r.max_new_tokens, tuple(r.stop or ()), self.run.seed)

    def update_settings(self, step: int, max_tokens_per_batch: int | None = None) -> UpdateSettings:
        return UpdateSettings(self.loss, self.rollout.temperature, self.epsilon, self.epsilon if self.epsilon_high is None else self.epsilon_high,
                              self.beta, self.iterations, self.minibatches, self.optim.grad_accum, self.mask_truncated,
                              self.rollout.max_new_tokens, self.optim.max_grad_norm, derive_seed(self.run.seed, "minibatch-order", step),
                              max_tokens_per_batch)


def run_grpo(config: GRPOConfig) -> None:
    """Train CONFIG's policy with GRPO into its run directory, resuming where a run stopped. Under
    torchrun each rank samples its share of every step's prompts and trains the sharded policy on it."""
    config.check()
    out = Path(config.out)
    specs = parse_rewards(list(config.reward), reward_options(config.rewards, config.rollout.max_new_tokens))
    if any(spec.name == "code" for spec in specs):
        require_isolation("--reward code")
    options = config.options()
    identity = training_identity(options, models={"model": config.model}, inputs={"prompts": config.prompts},
                                 may_change=RESUME_MAY_CHANGE + (("steps",) if config.extendable() else ()), source=config.source)
    world = distributed.world()
    with world.main_only(runs.exclusive(out)):  # rank 0 holds the lock and writes; the others wait for it
        finished = world.is_main and already_finished(out, identity, overwrite=config.run.overwrite, inputs=[config.model, config.prompts],
                                                      length=config.length())
        if world.agree(finished):
            return
        started = time.time()
        run = start_run(config, out, identity, specs, options)
        policy = run.setup.policy
        line: dict = {}
        with progress_bar() as bar:
            task = bar.add_task("grpo", total=config.steps, completed=run.setup.start_step, status="")
            for step in range(run.setup.start_step, config.steps):
                began = time.time()
                # 1. Sample P groups of G completions and score them (under torchrun each rank its share
                #    of the step's prompts), then every rank's rewards and lengths in one process's order.
                batch = collect_groups(run.engine, run.scorer, run.prompts, run.setup.stream, run.sampling,
                                       prompts_per_step=config.prompts_per_step, num_generations=config.num_generations,
                                       skip_uniform_groups=config.skip_uniform_groups, world=world)
                sampled = gather_step(batch, world)
                # 2. Group-relative advantages, and one policy update per minibatch.
                trained = time.time()
                advantages_B = sampled.advantages(config.num_generations, config.scale_rewards)
                stats = update_policy(policy, sampled.rollouts, advantages_B, config.update_settings(step, run.budget))
                refresh_seconds = refresh(run.engine, policy, config, step)
                train_seconds = time.time() - trained
                # 3. The metrics line, a few logged samples (rank 0's), and every --save-every steps a
                #    checkpoint (the line first: a run resumed from the checkpoint must not lack it).
                done = step + 1
                line = {"step": done, **step_metrics(sampled, stats, specs, train_seconds), "refresh_seconds": round(refresh_seconds, 3),
                        "seconds": round(time.time() - began, 2), **peak_memory(policy.device)}
                if world.is_main and config.log_samples_every and done % config.log_samples_every == 0:
                    log_samples(out / "samples.jsonl", done, batch)
                run.metrics_log.write(line)
                if saves_at(config, done):
                    extra = {REFERENCE_STATE: reference_weights(policy.reference)} if config.ref_update_every else None
                    run.writer.save(done, policy.network, run.setup.tokenizer, policy.optimizer, policy.scheduler, line,
                                    keep=config.run.keep_checkpoints, progress={"prompts_consumed": run.setup.stream.consumed}, extra_state=extra)
                bar.update(task, completed=done, status=format_status(line, STATUS_KEYS))
        for resource in (run.metrics_log, run.scorer, run.engine):
            resource.close()
        final = {**line, "wall_seconds": round(time.time() - started, 1)}
        run.writer.finish(config.steps, policy.network, run.setup.tokenizer, final, merge=config.lora.merge)
        log(f"wrote {out} (step {config.steps}: {format_status(final, ('reward', 'accuracy', 'format', 'wall_seconds'))})")


@dataclass
class GRPORun:
    """What the loop works with, built once by `start_run`."""

    setup: GRPOSetup
    prompts: PromptSet
    engine: object
    budget: int  # padded tokens per training micro-batch at most
    scorer: Scorer
    sampling: SamplingOptions
    writer: ckpt.RunWriter
    metrics_log: MetricsLog | NoMetricsLog


def start_run(config: GRPOConfig, out: Path, identity, specs: list[RewardSpec], options: dict) -> GRPORun:
    """The prompts, the policy (restored where a run stopped), its rollout engine and micro-batch
    budget, the scorer, and the run's writer and metrics log (rank 0 alone writes either)."""
    world = distributed.world()
    records = load_prompts(config)
    setup = prepare(config, out, identity, len(records))
    policy = setup.policy
    prompts = tokenize_prompts(records, setup.tokenizer, config)
    engine = make_rollout_engine(config, policy, setup.tokenizer)
    # After the engine has taken its memory: what is left bounds the training micro-batches.
    budget = token_budget(config.optim.max_tokens_per_batch, policy.network, policy.device, policy.dtype, config.optim.gradient_checkpointing)
    writer = ckpt.RunWriter(out, "grpo", options, identity.to_json(), ckpt.describe_parent(config.model),
                            ckpt.describe_inputs([config.prompts], config.source), policy.dtype,
                            think_format_reason(template=config.prompt.template, rewards=config.reward), world)
    log_plan(config, len(prompts.records), specs, policy, budget)
    metrics_log = (MetricsLog(out / "metrics.jsonl", resume_step=setup.start_step, report_to=config.run.report_to, options=options)
                   if world.is_main else NoMetricsLog())
    return GRPORun(setup, prompts, engine, budget, Scorer(specs), config.sampling(), writer, metrics_log)


def log_plan(config: GRPOConfig, n_prompts: int, specs, policy: Policy, budget: int) -> None:
    log(f"grpo: {n_prompts} prompts, {config.steps} steps of {config.prompts_per_step} prompts x {config.num_generations} "
        f"completions, loss {config.loss}, rewards {', '.join(f'{s.name}={s.weight:g}' for s in specs)}, {policy.device}, "
        f"micro-batches of at most {budget:,} tokens")


def saves_at(config: GRPOConfig, done: int) -> bool:
    """A resumable checkpoint every --save-every steps; at the last step only where the run may be
    extended (it continues from there; otherwise the final checkpoint is all a finished run needs)."""
    if not config.run.save_every:
        return False
    return done % config.run.save_every == 0 if done < config.steps else config.extendable()


def refresh(engine, policy: Policy, config: GRPOConfig, step: int) -> float:
    """Hand the updated weights to the engine (its copy, if it keeps one, is current for the next
    step's rollouts) and, every --ref-update-every steps, to the reference. Returns the engine's seconds."""
    started = time.time()
    engine.refresh_weights(policy.network)
    seconds = time.time() - started
    if policy.reference is not None and config.ref_update_every and (step + 1) % config.ref_update_every == 0:
        policy.reference.load_state_dict(policy.network.state_dict())
    return seconds


def load_prompts(config: GRPOConfig) -> list:
    records, repeated = unique_ids([to_prompt_record(r, config.prompt.prompt_key, config.prompt.answer_key) for r in read_records(config.prompts, config.source)])
    if repeated:
        warn(f"{repeated} prompt(s) repeat an earlier id (or prompt) and are used once")
    if len(records) < config.prompts_per_step:
        raise UserError(f"{config.prompts}: {len(records)} prompts, fewer than --prompts-per-step {config.prompts_per_step}")
    return records


@dataclass
class GRPOSetup:
    """What `prepare` builds: the policy and its tokenizer, where the run starts, its prompt order."""

    policy: Policy
    tokenizer: object
    start_step: int
    stream: PromptStream


def prepare(config: GRPOConfig, out: Path, identity, n_prompts: int) -> GRPOSetup:
    """The policy (fp32 masters, LoRA-wrapped, checkpointed), its reference, optimizer and schedule,
    and the prompt stream, restored from the newest checkpoint of OUT when there is one."""
    world = distributed.world()
    if world.distributed and (config.lora.lora_r or config.rollout.engine == "vllm"):
        raise UserError(f"{'--lora-r' if config.lora.lora_r else '--engine vllm'} under torchrun: not supported yet (run it as one process)")
    device = distributed.device_for(world, resolve_device(config.compute.device))
    dtype = resolve_dtype(config.compute.dtype, device)
    seed_everything(config.run.seed)
    network, tokenizer = load_model(config.model, dtype=dtype if config.lora.lora_r else torch.float32)
    network = prepare_for_training(network, config.model, config.lora, config.optim.gradient_checkpointing).to(device)
    reference = None
    if config.beta > 0 and not config.lora.lora_r:
        reference = load_model(config.model, dtype=dtype)[0].to(device).eval().requires_grad_(False)
    if world.distributed:  # the reference is sharded alike: refreshing it from the policy copies shard to shard
        network = distributed.shard_model(network, dtype)
        reference = distributed.shard_model(reference, dtype) if reference is not None else None
    updates = config.steps * config.iterations * config.minibatches
    optimizer = make_optimizer(network, config.optim.lr, config.optim.weight_decay, config.optim.adam_betas, config.optim.adam_epsilon)
    scheduler = make_scheduler(optimizer, schedule=config.optim.schedule, warmup=warmup_steps(config.optim.warmup, updates),
                               total_steps=updates, min_lr_ratio=config.optim.min_lr_ratio)
    stream = PromptStream(n_prompts, config.run.seed)
    progress, latest = resume(out, network, optimizer, scheduler, identity)
    start_step = progress["step"] if progress else 0
    if start_step > config.steps:
        raise UserError(f"{out}: its newest checkpoint is at step {start_step}, past --steps {config.steps}: use --overwrite or another --out")
    if progress:
        stream.consumed = progress["prompts_consumed"]
        saved_reference = latest / ckpt.STATE / f"{REFERENCE_STATE}.safetensors"
        if reference is not None and saved_reference.exists():
            from safetensors.torch import load_file

            distributed.load_whole_state(reference, load_file(saved_reference))
    return GRPOSetup(Policy(network, reference, optimizer, scheduler, device, dtype, tokenizer.pad_token_id, world), tokenizer, start_step,
                     stream)


def make_rollout_engine(config: GRPOConfig, policy: Policy, tokenizer):
    """The engine that samples the rollouts (given the policy's weights where it keeps its own copy)."""
    settings = EngineSettings(config.compute.dtype, config.compute.device, config.rollout.generation_batch_size, config.run.seed,
                              config.rollout.engine_memory)
    return engine_class(config.rollout.engine).for_policy(policy.network, tokenizer, config.model, settings)


def tokenize_prompts(records: list, tokenizer, config: GRPOConfig) -> PromptSet:
    """Each prompt's tokens, once: generation and training see the same ones (longer prompts keep their end)."""
    return PromptSet(records, [
        tokenizer(format_prompt(r["prompt"], tokenizer, config.prompt.template, config.prompt.system),
                  add_special_tokens=False)["input_ids"][-config.max_prompt_length:]
        for r in records
    ])


def reference_weights(reference) -> dict:
    """A refreshed reference cannot be rebuilt from MODEL: its weights (tied ones once) go with the
    checkpoint. A sharded one's are gathered whole (a collective), for rank 0 to write."""
    if not distributed.is_sharded(reference):
        return {name: parameter.detach().contiguous() for name, parameter in reference.named_parameters()}
    whole = distributed.full_state_dict(reference)  # rank 0's; empty elsewhere
    return {name: whole[name].contiguous() for name, _ in reference.named_parameters() if name in whole}


def step_metrics(step: StepRollouts, stats: UpdateStats, specs: list[RewardSpec], train_seconds: float) -> dict:
    """The step's metrics over every rank's rollouts (STEP holds their numbers in one process's order)."""
    rollouts = step.numbers
    rewards = [r.reward for r in rollouts if r.reward is not None]
    rewards_B = torch.tensor(rewards)
    lengths = [r.completion_length for r in rollouts]
    metrics = {
        "reward": rewards_B.mean().item() if rewards else None,
        "reward_std": rewards_B.std().item() if len(rewards) > 1 else 0.0,
        "unscored": len(rollouts) - len(rewards),  # completions no reward applied to
    }
    for spec in specs:
        values = [r.scores[spec.name] for r in rollouts if r.scores.get(spec.name) is not None]
        if values:
            metrics[f"rewards/{spec.name}"] = sum(values) / len(values)
    for name in ("accuracy", "format"):
        if f"rewards/{name}" in metrics:
            metrics[name] = metrics[f"rewards/{name}"]
    metrics.update({
        "completion_length": sum(lengths) / len(lengths),
        "completion_length_max": max(lengths),
        "truncated": sum(r.truncated for r in rollouts) / len(rollouts),
        "uniform_groups": step.uniform_groups / (step.groups + step.uniform_groups),
        "completions": len(rollouts),
        **stats.as_metrics(),
        "generate_seconds": round(step.generate_seconds, 2),
        "score_seconds": round(step.score_seconds, 2),
        "train_seconds": round(train_seconds, 2),
        "generate_tokens_per_s": round(sum(lengths) / max(step.generate_seconds, 1e-9), 1),
        "train_tokens_per_s": round(sum(r.prompt_length + r.completion_length for r in rollouts) / max(train_seconds, 1e-9), 1),
    })
    return metrics


def log_samples(path: Path, step: int, batch: RolloutBatch) -> None:
    """Two completions of each of the first two groups of BATCH (under torchrun rank 0's), with their
    rewards, to OUT/samples.jsonl."""
    with open(path, "a", encoding="utf-8") as handle:
        for group in batch.groups[:2]:
            for rollout in group.rollouts[:2]:
                sample = rollout.sample
                handle.write(dumps({"step": step, "id": sample["id"], "prompt": sample["prompt"], "completion": sample["completion"],
                                    "rewards": rollout.scores, "reward": rollout.reward}) + "\n")
