"""A stand-in for the part of Weights & Biases' Python API (wandb 0.2x) that r1's `--report-to
wandb` uses: `wandb.init(...)` returning a run with `log(data, step=)` and `finish()`.

Tests load it in place of `wandb` for one test at a time (monkeypatched into sys.modules); it is
not on sys.path. It keeps wandb's names and keyword arguments, rejects what wandb would (an
unknown init argument or `resume` value, a step below one already logged is dropped with a
warning as wandb drops it), and records every call in CALLS. WANDB_MODE is read as wandb reads it.
"""

from __future__ import annotations

import copy
import os
from typing import Any

__version__ = "0.22.0"
CALLS: list[dict[str, Any]] = []
INIT_ARGUMENTS = {"project", "entity", "name", "id", "dir", "config", "resume", "mode", "tags", "group", "job_type", "notes",
                  "reinit", "settings"}
RESUME = (None, True, False, "allow", "must", "never", "auto")


class Run:
    def __init__(self, **kwargs):
        self.id, self.name, self.config = kwargs.get("id"), kwargs.get("name"), copy.deepcopy(kwargs.get("config") or {})
        self.last_step = -1
        self.finished = False

    def log(self, data: dict, step: int | None = None, commit: bool | None = None) -> None:
        if self.finished:
            raise RuntimeError("You must call wandb.init() before wandb.log()")
        if not isinstance(data, dict) or not all(isinstance(key, str) for key in data):
            raise TypeError("wandb.log must be passed a dictionary with string keys")
        if step is not None and step < self.last_step:
            CALLS.append({"call": "dropped", "step": step})  # wandb: "Tried to log to step N that is less than the current step"
            return
        self.last_step = step if step is not None else self.last_step + 1
        CALLS.append({"call": "log", "id": self.id, "step": step, "data": copy.deepcopy(data)})

    def finish(self, exit_code: int | None = None) -> None:
        self.finished = True
        CALLS.append({"call": "finish", "id": self.id})


def init(**kwargs) -> Run:
    unknown = set(kwargs) - INIT_ARGUMENTS
    if unknown:
        raise TypeError(f"init() got an unexpected keyword argument {sorted(unknown)[0]!r}")
    if kwargs.get("resume") not in RESUME:
        raise ValueError(f"resume must be one of {RESUME}")
    CALLS.append({"call": "init", "mode": kwargs.get("mode") or os.environ.get("WANDB_MODE", "online"), **copy.deepcopy(kwargs)})
    return Run(**kwargs)
