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
    """Linear warmup from 0 to the peak, then cosine or linear decay to MIN_LR_RATIO x peak, or constant.

    Cosine and constant are transformers' schedules (`get_scheduler`'s `cosine_with_min_lr` and
    `constant_with_warmup`) read one step ahead with one more warmup step: our step s trains at
    their step s + 1 of a warmup of WARMUP + 1 steps. Their step 0 has LR 0, an update that
    changes nothing, and their last step stops short of the minimum; ours starts at
    peak / (WARMUP + 1) and ends at the minimum exactly. transformers has no linear decay to a
    floor (`linear` ends at 0; `polynomial` takes an absolute floor and rounds differently), so
    linear is ours. tests/test_optim.py holds every step to the formulas.
    """
    if schedule not in SCHEDULES:
        raise UserError(f"--schedule {schedule!r} is not one of: {', '.join(SCHEDULES)}")
    if not 0 <= min_lr_ratio <= 1:
        raise UserError(f"--min-lr-ratio {min_lr_ratio}: must be in [0, 1]")
    if schedule == "linear":
        def factor(step: int) -> float:
            return linear_factor(step, warmup=warmup, total_steps=total_steps, min_lr_ratio=min_lr_ratio)
    else:
        ahead = transformers_factor("cosine_with_min_lr" if schedule == "cosine" else "constant_with_warmup", warmup + 1, total_steps,
                                    {"min_lr_rate": min_lr_ratio} if schedule == "cosine" else None)

        def factor(step: int) -> float:
            return ahead(step + 1)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def transformers_factor(name: str, warmup: int, total_steps: int, kwargs: dict | None):
    """transformers' LR multiplier per step for schedule NAME, read off a throwaway optimizer (the
    real one keeps its learning rate: get_scheduler sets it to the step-0 value). Imported here:
    transformers.optimization costs seconds of every command's start."""
    from transformers import get_scheduler

    probe = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    return get_scheduler(name, probe, num_warmup_steps=warmup, num_training_steps=total_steps, scheduler_specific_kwargs=kwargs).lr_lambdas[0]


def linear_factor(step: int, *, warmup: int, total_steps: int, min_lr_ratio: float) -> float:
    """Warmup as the other schedules, then a straight line from the peak to MIN_LR_RATIO x peak at the last step."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup - 1))
    return min_lr_ratio + (1 - min_lr_ratio) * (1 - progress)
