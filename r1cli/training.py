"""Pieces every training command shares: optimizer, LR schedule, metrics log, progress, resume checks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from r1cli import checkpoint as ckpt
from r1cli import runs
from r1cli.console import log
from r1cli.errors import UserError
from r1cli.records import dumps, input_sha256

SCHEDULES = ("cosine", "linear", "constant")


def make_optimizer(model, lr: float, weight_decay: float) -> torch.optim.AdamW:
    for name, value in (("--lr", lr), ("--weight-decay", weight_decay)):
        if not math.isfinite(value) or value < 0:
            raise UserError(f"{name} {value}: must be a finite number >= 0")
    trainable = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95), eps=1e-8)


def warmup_steps(warmup: float, total_steps: int) -> int:
    """--warmup below 1 is a fraction of the run; from 1 up, a number of steps."""
    if not math.isfinite(warmup) or warmup < 0:
        raise UserError(f"--warmup {warmup}: must be a finite number >= 0")
    return int(round(warmup * total_steps)) if warmup < 1 else int(warmup)


def make_scheduler(optimizer, *, schedule: str, warmup: int, total_steps: int, min_lr_ratio: float):
    """Linear warmup from 0 to the peak, then cosine or linear decay to MIN_LR_RATIO x peak, or constant."""
    if schedule not in SCHEDULES:
        raise UserError(f"--schedule {schedule!r} is not one of: {', '.join(SCHEDULES)}")
    if not 0 <= min_lr_ratio <= 1:
        raise UserError(f"--min-lr-ratio {min_lr_ratio}: must be in [0, 1]")

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup - 1))
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1 - progress
        return min_lr_ratio + (1 - min_lr_ratio) * shape

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class MetricsLog:
    """Append-only `metrics.jsonl`, one line per step; on resume, lines past the resumed step go."""

    def __init__(self, path: Path, resume_step: int = 0):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line).get("step", 0) <= resume_step:
                        kept.append(line)
                except json.JSONDecodeError:
                    break  # a line cut by a kill: everything after it is from the lost steps
        path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        self.handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, metrics: dict) -> None:
        try:
            self.handle.write(dumps(metrics) + "\n")
            self.handle.flush()
        except OSError as error:  # a full disk: say which file
            error.filename = error.filename or str(self.path)
            raise

    def close(self) -> None:
        self.handle.close()


# Options naming files: what they hold is compared (by content), not how they are spelled.
PATH_OPTIONS = ("model", "data", "prompts", "out", "eval_data", "teacher", "student", "traces")


def training_identity(options: dict, *, models: dict[str, str], inputs: dict[str, str], may_change: tuple[str, ...]) -> runs.Identity:
    """What a training run's result depends on: its models' contents, its inputs' bytes, and the
    options other than paths and those that may change between a run and its resumption."""
    return runs.Identity(
        models={role: runs.model_fingerprint(model) for role, model in models.items()},
        inputs={role: input_sha256(path) for role, path in inputs.items()},
        options={k: v for k, v in options.items() if k not in may_change and k not in PATH_OPTIONS},
    )


def refuse_other_run(out: Path, saved: dict | None, identity: runs.Identity) -> None:
    if saved is None:
        raise UserError(f"{out} holds a run of an older r1 that did not record what it depends on: use --overwrite or another --out")
    runs.refuse_other_identity(str(out), identity, runs.Identity.from_json(saved), "use --overwrite to start over, or another --out")


def already_finished(out: Path, identity: runs.Identity, *, overwrite: bool, inputs: list[str]) -> bool:
    """Check OUT may hold this run (the caller holds its lock); start over with --overwrite
    (removing only what r1 wrote), or report a finished run with the same identity as done."""
    runs.check_run_directory(out, inputs, overwrite=overwrite)
    if overwrite:
        runs.clear_run_directory(out)
    if not ckpt.is_complete(out):
        return False
    refuse_other_run(out, ckpt.read_lineage(out).get("identity"), identity)
    log(f"{out} is already complete; nothing to do")
    return True


def format_status(metrics: dict, keys: tuple[str, ...]) -> str:
    parts = []
    for key in keys:
        value = metrics.get(key)
        if isinstance(value, float):
            parts.append(f"{key} {value:.0f}" if abs(value) >= 1000 else f"{key} {value:.4g}")
        elif value is not None:
            parts.append(f"{key} {value}")
    return "  ".join(parts)


def resume(out: Path, network, optimizer, scheduler, identity: runs.Identity) -> tuple[dict | None, Path | None]:
    """Restore the newest intermediate checkpoint of OUT, if any: (its progress, its directory)."""
    latest = ckpt.latest_checkpoint(out)
    if latest is None:
        return None, None
    refuse_other_run(out, ckpt.read_json_file(latest / ckpt.STATE / "progress.json").get("identity"), identity)
    progress = ckpt.load_training_state(latest, network, optimizer, scheduler)
    log(f"resuming from {latest} (step {progress['step']})")
    return progress, latest
