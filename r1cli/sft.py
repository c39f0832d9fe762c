"""`r1 sft`: supervised fine-tuning (and pre-training from a config) on training records."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated

import torch
import torch.nn.functional as F
import typer

from r1cli import checkpoint as ckpt
from r1cli import runs
from r1cli.console import log, progress_bar, warn
from r1cli.errors import UserError
from r1cli.modeling import (
    count_parameters,
    dtype_name,
    load_model,
    prepare_for_training,
    resolve_device,
    resolve_dtype,
)
from r1cli.records import read_all
from r1cli.seeding import seed_everything
from r1cli.sft_data import IGNORE, Row, StepPlan, collate, encode_records, resolve_template, to_rows
from r1cli.teacher import Teacher
from r1cli.training import (
    MetricsLog,
    already_finished,
    format_status,
    make_optimizer,
    make_scheduler,
    resume,
    training_identity,
    warmup_steps,
)

# Options that may change between a run and its resumption without changing what it computes.
RESUME_MAY_CHANGE = ("save_every", "keep_checkpoints", "overwrite", "device", "eval_data", "eval_batch_size")


def sft(
    model: Annotated[str, typer.Argument(help="Checkpoint directory (or hub name), or a model config .json to initialise randomly.")],
    data: Annotated[list[str], typer.Argument(help="Training records: JSONL ('-' for stdin), JSON or Parquet files.")],
    out: Annotated[Path, typer.Option("--out", help="Run directory; the final checkpoint is written here.")],
    epochs: Annotated[float, typer.Option(help="Passes over the data (fractions allowed).", min=0.0)] = 1.0,
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps; overrides --epochs. [default: from --epochs]", min=1)] = None,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 1e-5,
    warmup: Annotated[float, typer.Option(help="Warmup: below 1 a fraction of the steps, else a step count.")] = 0.03,
    schedule: Annotated[str, typer.Option(help="After warmup: cosine | linear | constant.")] = "cosine",
    min_lr_ratio: Annotated[float, typer.Option(help="Final LR as a fraction of the peak (cosine, linear).")] = 0.1,
    batch_size: Annotated[int, typer.Option(help="Rows per micro-batch.", min=1)] = 8,
    grad_accum: Annotated[int, typer.Option(help="Micro-batches per optimizer step.", min=1)] = 1,
    max_length: Annotated[int, typer.Option(help="Tokens per example (longer ones are truncated and counted) and per packed row.", min=2)] = 2048,
    packing: Annotated[bool, typer.Option(help="Pack several examples per row, with no attention across them.")] = False,
    template: Annotated[str, typer.Option(help="auto | chat | plain: chat uses the tokenizer's chat template; auto picks chat when there is one.")] = "auto",
    lora_r: Annotated[int, typer.Option(help="LoRA rank; 0 trains every weight.", min=0)] = 0,
    lora_alpha: Annotated[int | None, typer.Option(help="LoRA alpha. [default: 2 x rank]")] = None,
    lora_dropout: Annotated[float, typer.Option(help="LoRA dropout.")] = 0.0,
    lora_targets: Annotated[str, typer.Option(help="Comma-separated module names for LoRA, or all-linear.")] = "all-linear",
    merge: Annotated[bool, typer.Option(help="With LoRA, also write the merged model as the loadable checkpoint.")] = True,
    gradient_checkpointing: Annotated[bool, typer.Option(help="Recompute activations in the backward pass to save memory.")] = False,
    dtype: Annotated[str, typer.Option(help="Compute dtype: auto (bf16 on GPU, fp32 on CPU) | bf16 | fp16 | fp32. Trained weights stay fp32.")] = "auto",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.0,
    max_grad_norm: Annotated[float, typer.Option(help="Clip the gradient norm to this; 0 = no clipping.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed for initialisation, data order and sampling.")] = 0,
    eval_data: Annotated[list[str] | None, typer.Option(help="Records for eval loss at each save and at the end (repeatable).")] = None,
    eval_batch_size: Annotated[int, typer.Option(help="Rows per eval batch.", min=1)] = 16,
    save_every: Annotated[int, typer.Option(help="Save a resumable checkpoint every N steps; 0 = only at the end.", min=0)] = 100,
    keep_checkpoints: Annotated[int, typer.Option(help="Intermediate checkpoints to keep (newest).", min=1)] = 1,
    overwrite: Annotated[bool, typer.Option(help="Start over even if --out holds a run.")] = False,
) -> None:
    """Fine-tune MODEL on DATA: `messages`, `prompt`+`completion` or `text` records.

    Loss is on assistant / completion tokens only (`text`: every token), EOS appended so the
    model learns to stop. Run the same command again to resume from the last saved step.
    """
    train({k: (str(v) if isinstance(v, Path) else v) for k, v in locals().items()})


def train(options: dict, *, command: str = "sft", teacher: Teacher | None = None) -> None:
    """Run SFT with OPTIONS (the parameters of `sft`, as recorded in r1.json); with TEACHER, add
    its token-level KL term (`r1 distill --kd-weight`)."""
    run = SimpleNamespace(**options)
    out = Path(run.out)
    if run.max_steps is None and not run.epochs > 0:
        raise UserError(f"--epochs {run.epochs}: must be above 0 (or give --max-steps)")
    models = {"model": run.model, **({"teacher": teacher.path} if teacher else {})}
    identity = training_identity(options, models=models, inputs={f"data[{i}]": path for i, path in enumerate(run.data)},
                                 may_change=RESUME_MAY_CHANGE)
    with runs.exclusive(out):
        if already_finished(out, identity, overwrite=run.overwrite, inputs=[*models.values(), *run.data, *(run.eval_data or [])]):
            return
        _train(run, out, options, identity, command, teacher)


def _train(run: SimpleNamespace, out: Path, options: dict, identity, command: str, teacher: Teacher | None) -> None:
    started = time.time()
    target = resolve_device(run.device)
    compute_dtype = resolve_dtype(run.dtype, target)
    seed_everything(run.seed)
    network, tokenizer = load_model(run.model, dtype=compute_dtype if run.lora_r else torch.float32, seed=run.seed)
    run.template = resolve_template(run.template, tokenizer)

    rows, truncated = _load_rows(run.data, tokenizer, template=run.template, max_length=run.max_length, packing=run.packing)
    eval_rows = _load_rows(run.eval_data, tokenizer, template=run.template, max_length=run.max_length, packing=False)[0] if run.eval_data else []
    plan = StepPlan(len(rows), run.batch_size, run.grad_accum, run.seed)
    total_steps = plan.total_steps(run.epochs, run.max_steps)

    network = prepare_for_training(network, run.model, run.lora_r, run.lora_alpha, run.lora_dropout, run.lora_targets, run.gradient_checkpointing).to(target)
    optimizer = make_optimizer(network, run.lr, run.weight_decay)
    scheduler = make_scheduler(
        optimizer, schedule=run.schedule, warmup=warmup_steps(run.warmup, total_steps), total_steps=total_steps, min_lr_ratio=run.min_lr_ratio
    )
    progress, _ = resume(out, network, optimizer, scheduler, identity)
    start_step = progress["step"] if progress else 0

    trainable = sum(p.numel() for p in network.parameters() if p.requires_grad)
    log(
        f"sft: {len(rows)} rows ({len(run.data)} file(s), template {run.template}{', packed' if run.packing else ''}), "
        f"{total_steps} steps of {plan.rows_per_step} rows, {count_parameters(network):,} parameters "
        f"({trainable:,} trained), {target} {dtype_name(compute_dtype)}"
    )
    if truncated:
        warn(f"{truncated} example(s) longer than --max-length {run.max_length} were truncated")

    if teacher:
        teacher.prepare(tokenizer, run.model, target, compute_dtype)
    lineage = _lineage_writer(command, options, run.model, run.data, run.eval_data, truncated, identity)
    metrics_log = MetricsLog(out / "metrics.jsonl", resume_step=start_step)
    last: dict = {}
    with progress_bar() as bar:
        task = bar.add_task("sft", total=total_steps, completed=start_step, status="")
        for step in range(start_step, total_steps):
            step_started = time.time()
            batches = [[rows[i] for i in indices] for indices in plan.micro_batches(step)]
            loss, kd_kl, grad_norm, tokens = _train_step(
                network, optimizer, batches, tokenizer.pad_token_id, target, compute_dtype, run.max_grad_norm, teacher
            )
            last = {
                "step": step + 1,
                "epoch": round((step + 1) / plan.steps_per_epoch, 4),
                "loss": loss,
                **({"kd_kl": kd_kl} if teacher else {}),
                "lr": scheduler.get_last_lr()[0],
                "grad_norm": grad_norm,
                "tokens_per_s": round(tokens / (time.time() - step_started), 1),
            }
            scheduler.step()
            done = step + 1
            saving = run.save_every and done % run.save_every == 0 and done < total_steps
            if saving and eval_rows:
                last["eval_loss"] = evaluate_loss(network, eval_rows, tokenizer.pad_token_id, target, compute_dtype, run.eval_batch_size)
            metrics_log.write(last)  # before the checkpoint: a run resumed from it must not lack this step's line
            if saving:
                directory = ckpt.checkpoint_dir(out, done)
                ckpt.write_checkpoint(
                    directory,
                    partial(ckpt.write_intermediate, network=network, tokenizer=tokenizer, optimizer=optimizer, scheduler=scheduler,
                            progress={"step": done, "options": options, "identity": identity.to_json()}, save_dtype=compute_dtype, lora_r=run.lora_r),
                    lineage(done, last),
                )
                ckpt.prune_checkpoints(out, run.keep_checkpoints)
            bar.update(task, completed=done, status=format_status(last, ("loss", "lr", "grad_norm", "tokens_per_s")))
    metrics_log.close()

    final = dict(last)
    if eval_rows:
        final["eval_loss"] = evaluate_loss(network, eval_rows, tokenizer.pad_token_id, target, compute_dtype, run.eval_batch_size)
    final["wall_seconds"] = round(time.time() - started, 1)
    ckpt.write_checkpoint(
        out, partial(ckpt.write_final, network=network, tokenizer=tokenizer, save_dtype=compute_dtype, lora_r=run.lora_r, merge=run.merge), lineage(total_steps, final)
    )
    log(f"wrote {out} (step {total_steps}: {format_status(final, ('loss', 'eval_loss', 'wall_seconds'))})")


def _load_rows(paths, tokenizer, *, template: str, max_length: int, packing: bool) -> tuple[list[Row], int]:
    examples = encode_records(read_all(paths), tokenizer, template=template, max_length=max_length)
    rows = to_rows(examples, max_length=max_length, packing=packing)
    if not rows:
        raise UserError(f"{', '.join(map(str, paths))}: no example has a token to train on")
    return rows, sum(e.truncated for e in examples)


def token_loss_sum(network, batch: dict[str, torch.Tensor], teacher: Teacher | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Summed next-token cross-entropy over the labelled tokens of BATCH, and (with TEACHER) the
    summed KL from the teacher's next-token distribution at the same tokens (else None)."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = network(**inputs, use_cache=False).logits
    labels = batch["labels"][:, 1:]
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE, reduction="sum")
    if teacher is None:
        return loss, None
    return loss, teacher.kl_sum(logits[:, :-1], inputs, labels != IGNORE)


def _train_step(network, optimizer, batches: list[list[Row]], pad_id, device, compute_dtype, max_grad_norm, teacher=None):
    """One optimizer step over micro-BATCHES: loss is the mean over every labelled token of the
    step, so splitting the same rows into more micro-batches gives the same update."""
    network.train()
    label_total = sum(row.label_count for rows in batches for row in rows)
    loss_total, kl_total, tokens = 0.0, 0.0, 0
    for rows in batches:
        batch = collate(rows, pad_id, device)
        with torch.autocast(device.type, dtype=compute_dtype, enabled=compute_dtype != torch.float32):
            loss_sum, kl_sum = token_loss_sum(network, batch, teacher)
        objective = loss_sum if kl_sum is None else loss_sum + teacher.weight * kl_sum
        (objective / label_total).backward()
        loss_total += loss_sum.item()
        kl_total += 0.0 if kl_sum is None else kl_sum.item()
        tokens += sum(len(row.input_ids) for row in rows)
    trainable = [p for p in network.parameters() if p.requires_grad]
    grad_norm = torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm if max_grad_norm > 0 else float("inf"))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_total / label_total, kl_total / label_total, float(grad_norm), tokens


@torch.no_grad()
def evaluate_loss(network, rows: list[Row], pad_id, device, compute_dtype, batch_size: int) -> float:
    """Mean cross-entropy per labelled token over ROWS."""
    network.eval()
    loss_total, label_total = 0.0, 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        with torch.autocast(device.type, dtype=compute_dtype, enabled=compute_dtype != torch.float32):
            loss_total += token_loss_sum(network, collate(chunk, pad_id, device))[0].item()
        label_total += sum(row.label_count for row in chunk)
    return loss_total / label_total


def _lineage_writer(command: str, options: dict, model: str, data, eval_data, truncated: int, identity):
    parent = ckpt.describe_parent(model)
    inputs = ckpt.describe_inputs([*data, *(eval_data or [])])

    def lineage(step: int, metrics: dict) -> dict:
        return ckpt.lineage(command, options, parent=parent, inputs=inputs, step=step, metrics={**metrics, "truncated_examples": truncated},
                            identity=identity.to_json())

    return lineage
