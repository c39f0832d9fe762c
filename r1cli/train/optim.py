"""AdamW and the learning-rate schedule every training command shares."""

from __future__ import annotations

import math

import torch

from r1cli.errors import UserError

SCHEDULES = ("cosine", "linear", "constant")


def make_optimizer(model, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8) -> torch.optim.AdamW:
    for name, value in (("--lr", lr), ("--weight-decay", weight_decay), ("--adam-epsilon", eps)):
        if not math.isfinite(value) or value < 0:
            raise UserError(f"{name} {value}: must be a finite number >= 0")
    if not all(math.isfinite(b) and 0 <= b < 1 for b in betas):
        raise UserError(f"--adam-betas {' '.join(map(str, betas))}: each must be in [0, 1)")
    trainable = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay, betas=tuple(betas), eps=eps)


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
