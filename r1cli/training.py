"""Pieces every training command shares: optimizer, LR schedule, metrics log, progress, resume checks."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from r1cli import checkpoint as ckpt
from r1cli.console import console, log
from r1cli.errors import UserError
from r1cli.records import dumps

SCHEDULES = ("cosine", "linear", "constant")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(model, lr: float, weight_decay: float) -> torch.optim.AdamW:
    trainable = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95), eps=1e-8)


def warmup_steps(warmup: float, total_steps: int) -> int:
    """--warmup below 1 is a fraction of the run; from 1 up, a number of steps."""
    if warmup < 0:
        raise UserError(f"--warmup must be >= 0, got {warmup}")
    return int(round(warmup * total_steps)) if warmup < 1 else int(warmup)


def make_scheduler(optimizer, *, schedule: str, warmup: int, total_steps: int, min_lr_ratio: float):
    """Linear warmup from 0 to the peak, then cosine or linear decay to MIN_LR_RATIO x peak, or constant."""
    if schedule not in SCHEDULES:
        raise UserError(f"--schedule {schedule!r} is not one of: {', '.join(SCHEDULES)}")

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
        self.handle.write(dumps(metrics) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        transient=False,
    )


def check_resumable(saved: dict, current: dict, out: Path, ignore: tuple[str, ...]) -> None:
    """Refuse to resume a run with options that change what it computes."""
    changed = [k for k in sorted(set(saved) | set(current)) if k not in ignore and saved.get(k) != current.get(k)]
    if changed:
        first = changed[0]
        raise UserError(
            f"{out} holds a run with other options ({first}: {saved.get(first)!r} there, "
            f"{current.get(first)!r} now; {len(changed)} differ): use another --out, or --overwrite"
        )


def format_status(metrics: dict, keys: tuple[str, ...]) -> str:
    parts = []
    for key in keys:
        value = metrics.get(key)
        if isinstance(value, float):
            parts.append(f"{key} {value:.0f}" if abs(value) >= 1000 else f"{key} {value:.4g}")
        elif value is not None:
            parts.append(f"{key} {value}")
    return "  ".join(parts)


def already_finished(out: Path, options: dict, *, overwrite: bool, may_change: tuple[str, ...]) -> bool:
    """Start over (--overwrite), or report a finished run with the same options as done."""
    if overwrite and out.exists():
        shutil.rmtree(out)
    if not ckpt.is_complete(out):
        return False
    check_resumable(ckpt.read_lineage(out)["options"], options, out, may_change)
    log(f"{out} is already complete; nothing to do")
    return True


def resume(out: Path, network, optimizer, scheduler, options: dict, *, may_change: tuple[str, ...]) -> tuple[dict | None, Path | None]:
    """Restore the newest intermediate checkpoint of OUT, if any: (its progress, its directory)."""
    latest = ckpt.latest_checkpoint(out)
    if latest is None:
        return None, None
    progress = ckpt.load_training_state(latest, network, optimizer, scheduler)
    check_resumable(progress["options"], options, out, may_change)
    log(f"resuming from {latest} (step {progress['step']})")
    return progress, latest
