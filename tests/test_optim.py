"""The learning-rate schedules: transformers' cosine and constant, read one step ahead, equal our
formula at every step (bit for bit where the demo trains); linear, which transformers lacks, is ours."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import get_scheduler

from r1cli.train.optim import make_scheduler, warmup_steps


def hand_factor(step: int, *, schedule: str, warmup: int, total_steps: int, min_lr_ratio: float) -> float:
    """The schedule as a formula: warmup (s + 1) / (w + 1), then cosine or linear from the peak at
    step w to MIN_LR_RATIO at the last step, or constant."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup - 1))
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1 - progress
    return min_lr_ratio + (1 - min_lr_ratio) * shape


def learning_rates(schedule: str, *, lr: float, warmup: int, total_steps: int, min_lr_ratio: float = 0.1) -> list[float]:
    """The LR each optimizer step of a run trains at, as the recipes log it (before the step)."""
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=lr)
    scheduler = make_scheduler(optimizer, schedule=schedule, warmup=warmup, total_steps=total_steps, min_lr_ratio=min_lr_ratio)
    return stepped_rates(optimizer, scheduler, total_steps)


def stepped_rates(optimizer, scheduler, steps: int) -> list[float]:
    """The LR before each of STEPS optimizer steps."""
    rates = []
    for _ in range(steps):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
@pytest.mark.parametrize(("warmup", "total_steps", "min_lr_ratio"),
                         [(0, 1, 0.1), (0, 2, 0.0), (1, 1, 0.1), (3, 4, 0.1), (5, 5, 0.5), (10, 5, 0.1), (0, 37, 0.0),
                          (6, 57, 0.1), (4, 100, 1.0), (25, 333, 0.25)])
def test_every_step_follows_the_formula(schedule, warmup, total_steps, min_lr_ratio):
    lr = 3e-4
    got = learning_rates(schedule, lr=lr, warmup=warmup, total_steps=total_steps, min_lr_ratio=min_lr_ratio)
    want = [lr * hand_factor(s, schedule=schedule, warmup=warmup, total_steps=total_steps, min_lr_ratio=min_lr_ratio)
            for s in range(total_steps)]
    assert got == pytest.approx(want, rel=1e-12, abs=0)
    assert got[0] == pytest.approx(lr / (warmup + 1), rel=1e-12)  # the first update is not one at LR 0
    if schedule != "constant" and total_steps > warmup + 1:
        assert got[-1] == pytest.approx(lr * min_lr_ratio, rel=1e-12)  # the minimum, reached at the last step


# The demo's training runs (pipelines/*.mk): the toy bases, cold start (300 records, batches of
# 16, 3 epochs), the second SFT (2,400 records, 2 epochs), distillation (2,834 kept traces, 2
# epochs) and the three GRPO stages. `make demo` reproduces its table to the last digit, so
# these must be the very floats the hand-written schedule gave.
DEMO_RUNS = [("cosine", 3e-3, 20, 540), ("cosine", 6e-3, 20, 270), ("cosine", 1e-3, warmup_steps(0.1, 57), 57),
             ("cosine", 1e-3, warmup_steps(0.1, 300), 300), ("cosine", 2e-3, warmup_steps(0.1, 356), 356),
             ("constant", 2e-4, 0, 150), ("constant", 2e-4, 0, 60), ("constant", 2e-4, 0, 40)]


@pytest.mark.parametrize(("schedule", "lr", "warmup", "total_steps"), DEMO_RUNS)
def test_the_demo_trains_at_bit_identical_rates(schedule, lr, warmup, total_steps):
    got = learning_rates(schedule, lr=lr, warmup=warmup, total_steps=total_steps)
    want = [lr * hand_factor(s, schedule=schedule, warmup=warmup, total_steps=total_steps, min_lr_ratio=0.1) for s in range(total_steps)]
    assert got == want


def test_cosine_and_constant_are_bit_identical_to_the_formula_over_a_sweep():
    for schedule in ("cosine", "constant"):
        for total_steps in range(1, 400, 7):
            for warmup in (0, 1, 20, warmup_steps(0.03, total_steps), warmup_steps(0.1, total_steps)):
                scheduler = make_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), schedule=schedule,
                                           warmup=warmup, total_steps=total_steps, min_lr_ratio=0.1)
                factor = scheduler.lr_lambdas[0]
                assert [factor(s) for s in range(total_steps)] == [
                    hand_factor(s, schedule=schedule, warmup=warmup, total_steps=total_steps, min_lr_ratio=0.1) for s in range(total_steps)]


def transformers_rates(name: str, *, warmup: int, total_steps: int, **kwargs) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps, scheduler_specific_kwargs=kwargs)
    return stepped_rates(optimizer, scheduler, total_steps)


def test_ours_differ_from_transformers_plain_schedules_on_purpose():
    # transformers' own cosine: its first step trains at LR 0 (an update that changes nothing) and
    # its last stops above the minimum; ours is the same curve read one step ahead.
    theirs = transformers_rates("cosine_with_min_lr", warmup=4, total_steps=20, min_lr_rate=0.1)
    ours = learning_rates("cosine", lr=1.0, warmup=4, total_steps=20)
    assert theirs[0] == 0 and ours[0] == pytest.approx(1 / 5)
    assert theirs[-1] > 0.1 + 1e-3 and ours[-1] == pytest.approx(0.1)
    assert ours[:-1] == pytest.approx(transformers_rates("cosine_with_min_lr", warmup=5, total_steps=20, min_lr_rate=0.1)[1:], rel=1e-12)
    # transformers' linear decays to 0, whatever the floor: --min-lr-ratio would mean nothing.
    assert transformers_rates("linear", warmup=0, total_steps=20)[-1] == pytest.approx(1 / 20)
    assert learning_rates("linear", lr=1.0, warmup=0, total_steps=20, min_lr_ratio=0.3)[-1] == pytest.approx(0.3)


def test_a_resumed_schedule_continues_where_it_stopped():
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)
    scheduler = make_scheduler(optimizer, schedule="cosine", warmup=3, total_steps=12, min_lr_ratio=0.1)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()
    assert state["lr_lambdas"] == [None]  # a closure: nothing but numbers in the saved state (loaded weights_only)
    fresh_optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)
    fresh_optimizer.load_state_dict(optimizer.state_dict())
    fresh = make_scheduler(fresh_optimizer, schedule="cosine", warmup=3, total_steps=12, min_lr_ratio=0.1)
    fresh.load_state_dict(state)
    assert fresh.get_last_lr() == scheduler.get_last_lr() == [1e-3 * hand_factor(5, schedule="cosine", warmup=3, total_steps=12, min_lr_ratio=0.1)]
