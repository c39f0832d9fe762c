"""The SFT recipe: supervised fine-tuning (and pre-training from a config) on training records.

Read `run_sft` top to bottom: claim the run directory, build the model, rows and optimizer
(`prepare`), then one optimizer step per iteration (`train_step`), a metrics line, and a
checkpoint every `--save-every` steps. With a teacher (`r1 distill --kd-weight`) each step adds
the teacher's token-level KL to the cross-entropy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from r1cli.console import format_status, log, progress_bar, warn
from r1cli.data import outputs as runs
from r1cli.data.records import read_all
from r1cli.data.sft_rows import IGNORE, Row, StepPlan, collate, encode_records, to_rows, trained_text
from r1cli.data.templates import resolve_template
from r1cli.errors import UserError
from r1cli.modeling import (
    count_parameters,
    dtype_name,
    load_model,
    prepare_for_training,
    resolve_device,
    resolve_dtype,
)
from r1cli.options import (
    ComputeOptions,
    DataOptions,
    LoraOptions,
    OptimizerOptions,
    RunOptions,
    SFTOptimizerOptions,
    recorded_options,
)
from r1cli.report.card import think_format_reason, think_share
from r1cli.seeding import seed_everything
from r1cli.train import checkpoint as ckpt
from r1cli.train import distributed
from r1cli.train.batching import token_budget, within_budget
from r1cli.train.logprobs import (
    chunked_token_scores,
    decoder_hidden,
    output_head,
    score_tokens,
    scores_from_logits,
)
from r1cli.train.metrics_log import MetricsLog, NoMetricsLog, peak_memory
from r1cli.train.optim import make_optimizer, make_scheduler, warmup_steps
from r1cli.train.resume import already_finished, fixed_length, resume, training_identity
from r1cli.train.teacher import Teacher
from r1cli.train.tracking import check_report_to

# Options that may change between a run and its resumption without changing what it computes.
RESUME_MAY_CHANGE = ("save_every", "keep_checkpoints", "overwrite", "device", "eval_data", "eval_batch_size", "eval_split",
                     "max_tokens_per_batch", "report_to")
STATUS_KEYS = ("loss", "lr", "grad_norm", "tokens_per_s")


@dataclass(frozen=True)
class SFTConfig:
    model: str
    data: tuple[str, ...]
    out: str
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 8
    max_length: int = 2048
    packing: bool = False
    template: str = "auto"
    eval_data: tuple[str, ...] = ()
    eval_batch_size: int = 16
    optim: OptimizerOptions = SFTOptimizerOptions()
    lora: LoraOptions = LoraOptions()
    compute: ComputeOptions = ComputeOptions()
    run: RunOptions = RunOptions()
    source: DataOptions = DataOptions()  # the split and subset of DATA's dataset inputs
    eval_split: str | None = None  # of EVAL_DATA's (default: source.split)

    def options(self) -> dict:
        """Every option by its command-line name, as r1.json records it."""
        return {**recorded_options(self), "eval_data": list(self.eval_data) or None}

    def eval_source(self) -> DataOptions:
        return replace(self.source, split=self.eval_split or self.source.split)


@dataclass
class SFTState:
    """What the loop works with, built once by `prepare`."""

    network: torch.nn.Module
    tokenizer: object
    rows: list[Row]
    eval_rows: list[Row]
    plan: StepPlan
    total_steps: int
    optimizer: torch.optim.Optimizer
    scheduler: object
    start_step: int
    device: torch.device
    dtype: torch.dtype
    truncated: int
    think_format: str | None  # why the data teaches the think format (the checkpoint's sampling defaults), or None
    max_tokens_per_batch: int  # padded tokens per micro-batch at most
    world: distributed.World = distributed.World()  # this process's share of the run (one process: all of it)


@dataclass
class StepStats:
    loss: float  # mean cross-entropy per labelled token of the step
    kd_kl: float  # mean teacher KL per labelled token (0 without a teacher)
    grad_norm: float
    tokens: int


def run_sft(config: SFTConfig, *, command: str = "sft", teacher: Teacher | None = None, recorded: dict | None = None) -> None:
    """Train CONFIG's model on its data into its run directory, resuming where a run stopped.
    RECORDED is what r1.json records as the options (the calling command's, e.g. distill's)."""
    out = Path(config.out)
    if config.max_steps is None and not config.epochs > 0:
        raise UserError(f"--epochs {config.epochs}: must be above 0 (or give --max-steps)")
    check_report_to(config.run.report_to)
    options = config.options()
    models = {"model": config.model, **({"teacher": teacher.path} if teacher else {})}
    identity = training_identity(options, models=models, inputs={f"data[{i}]": path for i, path in enumerate(config.data)},
                                 may_change=RESUME_MAY_CHANGE, source=config.source)
    world = distributed.world()
    with world.main_only(runs.exclusive(out)):  # rank 0 holds the lock and writes; the others wait for it
        finished = world.is_main and already_finished(
            out, identity, overwrite=config.run.overwrite, inputs=[*models.values(), *config.data, *config.eval_data],
            length=fixed_length(("max_steps", "epochs"), config.optim.schedule, config.optim.warmup,
                                f"r1 sft {out} {' '.join(config.data)} --out NEW_DIR ..."))
        if world.agree(finished):
            return
        started = time.time()
        state = prepare(config, out, identity, teacher)
        writer = ckpt.RunWriter(out, command, recorded or options, identity.to_json(), ckpt.describe_parent(config.model),
                                ckpt.describe_inputs(config.data, config.source) + ckpt.describe_inputs(config.eval_data, config.eval_source()),
                                state.dtype, state.think_format, world)
        metrics_log = (MetricsLog(out / "metrics.jsonl", resume_step=state.start_step, report_to=config.run.report_to, options=recorded or options)
                       if world.is_main else NoMetricsLog())
        line: dict = {}
        with progress_bar() as bar:
            task = bar.add_task("sft", total=state.total_steps, completed=state.start_step, status="")
            for step in range(state.start_step, state.total_steps):
                # One optimizer step over this step's rows, then its metrics line.
                began = time.time()
                lr = state.scheduler.get_last_lr()[0]
                stats = train_step(state, step, config.optim.max_grad_norm, teacher)
                state.scheduler.step()
                done = step + 1
                line = {"step": done, "epoch": round(done / state.plan.steps_per_epoch, 4), "loss": stats.loss,
                        **({"kd_kl": stats.kd_kl} if teacher else {}), "lr": lr, "grad_norm": stats.grad_norm,
                        "tokens_per_s": round(stats.tokens / (time.time() - began), 1), "truncated_examples": state.truncated,
                        "seconds": round(time.time() - began, 3), **peak_memory(state.device)}
                # A checkpoint every --save-every steps (with the eval loss), its metrics line first:
                # a run resumed from it must not lack this step's line.
                saving = config.run.save_every and done % config.run.save_every == 0 and done < state.total_steps
                if saving and state.eval_rows:
                    line["eval_loss"] = evaluate_loss(state, config.eval_batch_size)
                metrics_log.write(line)
                if saving:
                    writer.save(done, state.network, state.tokenizer, state.optimizer, state.scheduler, line, keep=config.run.keep_checkpoints)
                bar.update(task, completed=done, status=format_status(line, STATUS_KEYS))
        metrics_log.close()
        # The final checkpoint in OUT itself, with the eval loss and the wall time.
        final = {**line, "wall_seconds": round(time.time() - started, 1)}
        if state.eval_rows:
            final["eval_loss"] = evaluate_loss(state, config.eval_batch_size)
        writer.finish(state.total_steps, state.network, state.tokenizer, final, merge=config.lora.merge)
        log(f"wrote {out} (step {state.total_steps}: {format_status(final, ('loss', 'eval_loss', 'wall_seconds'))})")


def prepare(config: SFTConfig, out: Path, identity, teacher: Teacher | None) -> SFTState:
    """The model (LoRA-wrapped, checkpointed), the token rows, the step plan and the optimizer,
    restored from the newest checkpoint of OUT when there is one."""
    world = distributed.world()
    device = distributed.device_for(world, resolve_device(config.compute.device))
    dtype = resolve_dtype(config.compute.dtype, device)
    if world.distributed and (config.lora.lora_r or teacher):
        raise UserError(f"{'--lora-r' if config.lora.lora_r else 'a teacher'} under torchrun: not supported yet (run it as one process)")
    seed_everything(config.run.seed)
    # Full fine-tuning keeps fp32 master weights (autocast computes in DTYPE); LoRA keeps the base in DTYPE.
    network, tokenizer = load_model(config.model, dtype=dtype if config.lora.lora_r else torch.float32, seed=config.run.seed)
    template = resolve_template(config.template, tokenizer)
    rows, truncated, share = load_rows(config.data, tokenizer, template=template, max_length=config.max_length, packing=config.packing,
                                       source=config.source)
    eval_rows = load_rows(config.eval_data, tokenizer, template=template, max_length=config.max_length, packing=False,
                          source=config.eval_source())[0] if config.eval_data else []
    plan = StepPlan(len(rows), config.batch_size, config.optim.grad_accum, config.run.seed)
    total_steps = plan.total_steps(config.epochs, config.max_steps)
    network = prepare_for_training(network, config.model, config.lora, config.optim.gradient_checkpointing).to(device)
    if world.distributed:
        network = distributed.shard_model(network, dtype)
    optimizer = make_optimizer(network, config.optim.lr, config.optim.weight_decay, config.optim.adam_betas, config.optim.adam_epsilon)
    scheduler = make_scheduler(optimizer, schedule=config.optim.schedule, warmup=warmup_steps(config.optim.warmup, total_steps),
                               total_steps=total_steps, min_lr_ratio=config.optim.min_lr_ratio)
    progress, _ = resume(out, network, optimizer, scheduler, identity)
    trainable = sum(p.numel() for p in network.parameters() if p.requires_grad)
    log(f"sft: {len(rows)} rows ({len(config.data)} file(s), template {template}{', packed' if config.packing else ''}), "
        f"{total_steps} steps of {plan.rows_per_step} rows, {count_parameters(network):,} parameters "
        f"({trainable:,} trained), {device} {dtype_name(dtype)}")
    if truncated:
        warn(f"{truncated} example(s) longer than --max-length {config.max_length} were truncated")
    if teacher:
        teacher.prepare(tokenizer, config.model, device, dtype)
    budget = token_budget(config.optim.max_tokens_per_batch, network, device, dtype, config.optim.gradient_checkpointing)
    return SFTState(network, tokenizer, rows, eval_rows, plan, total_steps, optimizer, scheduler,
                    progress["step"] if progress else 0, device, dtype, truncated, think_format_reason(template=template, think_share=share),
                    budget, world)


def load_rows(paths, tokenizer, *, template: str, max_length: int, packing: bool,
              source: DataOptions | None = None) -> tuple[list[Row], int, float]:
    """The token rows of the records in PATHS (SOURCE: the split and subset of dataset inputs), how
    many examples were truncated, and the share of records whose trained text closes a think block."""
    records = read_all(paths, source)
    examples = encode_records(records, tokenizer, template=template, max_length=max_length)
    rows = to_rows(examples, max_length=max_length, packing=packing)
    if not rows:
        raise UserError(f"{', '.join(map(str, paths))}: no example has a token to train on")
    return rows, sum(e.truncated for e in examples), think_share([trained_text(record) for record in records])


def token_loss_sum(network, batch: dict[str, torch.Tensor], teacher: Teacher | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Summed next-token cross-entropy over the labelled tokens of BATCH, and (with TEACHER) the
    summed KL from the teacher's next-token distribution at the same tokens (else None). Scored
    from hidden states through the head in chunks (`r1cli.train.logprobs`): no full logits."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    next_labels_BL = F.pad(batch["labels"][:, 1:], (0, 1), value=IGNORE)  # position p predicts the label at p + 1
    scored_BL = next_labels_BL != IGNORE
    targets_N = next_labels_BL[scored_BL]
    head = output_head(network)
    if teacher is None:
        return -score_tokens(network, inputs, scored_BL, targets_N).logprobs_N.sum(), None
    if head is None or teacher.head is None:  # an architecture without a plain head: full logits, once
        logits_NV = network(**inputs, use_cache=False).logits[scored_BL]
        loss = -scores_from_logits(logits_NV, targets_N).logprobs_N.sum()
        return loss, teacher.kl_sum_from_logits(logits_NV, inputs, scored_BL)
    hidden_NH = decoder_hidden(network, inputs)[scored_BL]
    loss = -chunked_token_scores(hidden_NH, head, targets_N).logprobs_N.sum()
    return loss, teacher.kl_sum(hidden_NH, head, inputs, scored_BL)


def train_step(state: SFTState, step: int, max_grad_norm: float, teacher: Teacher | None = None) -> StepStats:
    """One optimizer step over STEP's micro-batches: the loss is the mean over every labelled
    token of the step, so splitting the same rows into more micro-batches gives the same update."""
    state.network.train()
    world = state.world
    shares = rank_micro_batches(state, step)  # every rank's, so each knows the step's token count and pass count
    label_total = sum(row.label_count for share in shares for rows in share for row in rows)
    batches, passes = shares[world.rank], max(len(share) for share in shares)
    loss_total = torch.zeros((), dtype=torch.float64, device=state.device)
    kl_total = torch.zeros_like(loss_total)
    tokens = 0
    for index in range(passes):
        # A rank with fewer micro-batches than another runs zero-weight passes: the collectives
        # of every forward and backward pass must match across the ranks.
        real = index < len(batches)
        rows = batches[index] if real else [state.rows[0]]
        distributed.gradient_sync(state.network, index == passes - 1)  # one reduction a step, after its last pass
        batch = collate(rows, state.tokenizer.pad_token_id, state.device)
        with torch.autocast(state.device.type, dtype=state.dtype, enabled=state.dtype != torch.float32):
            loss_sum, kl_sum = distributed.in_root_forward(state.network, token_loss_sum, state.network, batch, teacher)
        objective = loss_sum if kl_sum is None else loss_sum + teacher.weight * kl_sum
        (objective / label_total if real else objective * 0.0).backward()
        if real:
            loss_total += loss_sum.detach().double()  # summed on the device: one read per step, below
            if kl_sum is not None:
                kl_total += kl_sum.detach().double()
            tokens += sum(len(row.input_ids) for row in rows)
    trainable = [p for p in state.network.parameters() if p.requires_grad]
    grad_norm = distributed.full_value(torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm if max_grad_norm > 0 else float("inf")))
    state.optimizer.step()
    state.optimizer.zero_grad(set_to_none=True)
    totals = world.sum(torch.stack([loss_total, kl_total, torch.tensor(float(tokens), dtype=torch.float64, device=state.device)]))
    loss_sum, kl_sum, norm, tokens = torch.cat([totals[:2], grad_norm.double().reshape(1).to(totals.device), totals[2:]]).tolist()
    return StepStats(loss_sum / label_total, kl_sum / label_total, norm, int(tokens))


def rank_micro_batches(state: SFTState, step: int) -> list[list[list[Row]]]:
    """Per rank, STEP's micro-batches of rows: each accumulation micro-batch of the global batch
    dealt round-robin to the ranks, each share split to the token budget (one process: all of it)."""
    size = state.world.world_size
    widest = lambda group: len(group) * max(len(state.rows[i].input_ids) for i in group)  # noqa: E731
    length = lambda i: len(state.rows[i].input_ids)  # noqa: E731
    return [[[state.rows[i] for i in batch] for indices in state.plan.micro_batches(step)
             for batch in within_budget(indices[rank::size], widest, length, state.max_tokens_per_batch)]
            for rank in range(size)]


@torch.no_grad()
def evaluate_loss(state: SFTState, batch_size: int) -> float:
    """Mean cross-entropy per labelled token over the eval rows."""
    state.network.eval()
    loss_total, label_total = 0.0, 0
    for start in range(0, len(state.eval_rows), batch_size):
        chunk = state.eval_rows[start : start + batch_size]
        with torch.autocast(state.device.type, dtype=state.dtype, enabled=state.dtype != torch.float32):
            batch = collate(chunk, state.tokenizer.pad_token_id, state.device)
            loss_total += distributed.in_root_forward(state.network, token_loss_sum, state.network, batch)[0].item()
        label_total += sum(row.label_count for row in chunk)
    return loss_total / label_total
