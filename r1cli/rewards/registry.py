"""The reward registry shared by `grpo`, `filter` and `eval`: `--reward NAME[=WEIGHT]`.

A reward scores one sample record (DESIGN.md) and returns a float, or None where it cannot
apply (no gold answer, no reasoning to judge). Built in: accuracy, format, tags, language,
overlong (alias length), repetition, code, rm:PATH and MODULE:FUNCTION.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass

from r1cli.errors import UserError
from r1cli.rewards.base import BUILT_IN, Reward, RewardOptions

# The modules of built-in rewards, imported for what they enter in BUILT_IN, in the order the help lists them.
REWARD_MODULES = ("r1cli.rewards.math", "r1cli.rewards.builtin", "r1cli.rewards.code")
for _module in REWARD_MODULES:
    importlib.import_module(_module)
VALID_NAMES = ", ".join(BUILT_IN) + ", rm:PATH, MODULE:FUNCTION"


def reward_options(settings, max_new_tokens: int | None = None) -> RewardOptions:
    """RewardOptions from the command line's RewardSettings; the overlong limit defaults to the
    completion budget where the command has one."""
    return RewardOptions(max_length=settings.overlong_length or max_new_tokens, overlong_buffer=settings.overlong_buffer)


@dataclass
class RewardSpec:
    name: str
    weight: float
    function: Reward
    parallel: str = "inline"  # "process": CPU-bound, spread over processes; "thread": waits on subprocesses


# ---------------------------------------------------------------- the registry


def parse_reward(spec: str, options: RewardOptions | None = None) -> RewardSpec:
    """NAME[=WEIGHT] as a RewardSpec; an unknown name lists the valid ones."""
    options = options or RewardOptions()
    name, _, weight_text = spec.partition("=") if not spec.startswith("rm:") else _split_rm(spec)
    try:
        weight = float(weight_text) if weight_text else 1.0
    except ValueError:
        raise UserError(f"--reward {spec!r}: weight {weight_text!r} is not a number") from None
    if not math.isfinite(weight):
        raise UserError(f"--reward {spec!r}: the weight must be a finite number")
    if name in BUILT_IN:
        entry = BUILT_IN[name]
        return RewardSpec(name, weight, entry.make(options), entry.parallel)
    if name.startswith("rm:"):
        from r1cli.rewards.model import RewardModel

        return RewardSpec(name, weight, RewardModel(name[3:]), "batch")
    if ":" in name:
        return RewardSpec(name, weight, _import_function(name))
    raise UserError(f"unknown reward {name!r}; valid: {VALID_NAMES}")


def _split_rm(spec: str) -> tuple[str, str, str]:
    """rm:PATH[=WEIGHT], where PATH itself may not contain '='."""
    name, separator, weight = spec.rpartition("=")
    return (name, separator, weight) if separator else (spec, "", "")


def _import_function(name: str) -> Reward:
    module_name, _, function_name = name.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise UserError(f"--reward {name}: cannot import {function_name} from {module_name} ({error})") from None
    if not callable(function):
        raise UserError(f"--reward {name}: {function_name} is not callable")
    return function


def parse_rewards(specs: list[str], options: RewardOptions | None = None) -> list[RewardSpec]:
    parsed = [parse_reward(spec, options) for spec in specs]
    names = [spec.name for spec in parsed]
    if len(set(names)) < len(names):
        raise UserError(f"--reward: a reward is named twice ({', '.join(names)})")
    return parsed


# ---------------------------------------------------------------- scoring


def _die_with_parent(parent: int) -> None:
    """A scoring worker ends when the r1 process that started it does, even by SIGKILL (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the line above ran
            os._exit(0)


class Scorer:
    """Scores records with every reward, using the cores: math-verify in a process pool,
    code in threads (each waits on its own sandboxed process), reward models in batches."""

    def __init__(self, specs: list[RewardSpec], workers: int | None = None):
        self.specs = specs
        self.workers = workers or os.cpu_count() or 1
        self._processes: ProcessPoolExecutor | None = None

    def score(self, records: list[dict]) -> list[dict[str, float | None]]:
        scores: list[dict[str, float | None]] = [{} for _ in records]
        for spec in self.specs:
            for row, value in enumerate(self._apply(spec, records)):
                if value is not None:
                    value = float(value)
                scores[row][spec.name] = value
        return scores

    def total(self, scores: dict[str, float | None]) -> float:
        """The weighted sum; a reward that does not apply (None) adds nothing."""
        return sum(spec.weight * scores[spec.name] for spec in self.specs if scores.get(spec.name) is not None)

    def total_if_scored(self, scores: dict[str, float | None]) -> float | None:
        """The weighted sum, or None when no reward applies to the record at all (GRPO gives such
        a completion no advantage rather than a reward of 0)."""
        if all(scores.get(spec.name) is None for spec in self.specs):
            return None
        return self.total(scores)

    def _apply(self, spec: RewardSpec, records: list[dict]) -> list:
        if spec.parallel == "batch":
            return spec.function.score_batch(records)
        if spec.parallel == "process" and len(records) > 8 and self.workers > 1:
            if self._processes is None:
                self._processes = ProcessPoolExecutor(max_workers=self.workers, initializer=_die_with_parent, initargs=(os.getpid(),))
            return list(self._processes.map(spec.function, records, chunksize=max(1, len(records) // (4 * self.workers))))
        if spec.parallel == "thread" and len(records) > 1:
            # The samples of one prompt are checked one after another, so that a wrong one cannot
            # copy, through some channel of the machine, what a right sibling computes at the same time.
            by_prompt: dict[str, list[int]] = {}
            for index, record in enumerate(records):
                by_prompt.setdefault(str(record.get("id", record.get("prompt", ""))), []).append(index)
            values: list = [None] * len(records)

            def check(indices: list[int]) -> None:
                for index in indices:
                    values[index] = spec.function(records[index])

            with ThreadPoolExecutor(max_workers=self.workers) as threads:
                list(threads.map(check, by_prompt.values()))
            return values
        return [spec.function(record) for record in records]

    def close(self) -> None:
        if self._processes is not None:
            self._processes.shutdown()
            self._processes = None
