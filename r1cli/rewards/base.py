"""What every reward shares: its parameters, and the table built-in rewards enter by name.

A built-in reward is a function of a sample record (a float, or None where it cannot apply)
decorated with `builtin_reward`, in the module of its kind: adding one touches that module only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

Reward = Callable[[dict], "float | None"]


@dataclass
class RewardOptions:
    """Parameters of the rewards that take any; commands expose them as options."""

    max_length: int | None = None  # overlong: completions longer than this many tokens get -1
    overlong_buffer: int = 256  # overlong: the penalty ramps from 0 to -1 over the last this many tokens
    repetition_ngram: int = 3
    code_timeout: float = 10.0  # seconds per program
    code_memory_mb: int = 1024
    answer_timeout: int = 5  # seconds per math-verify parse or comparison


@dataclass(frozen=True)
class BuiltIn:
    function: Callable
    parallel: str  # "inline", "process" (CPU-bound: a process pool), "thread" (waits on a subprocess)
    bind: Callable[[RewardOptions], dict] | None  # the function's parameters, from the options

    def make(self, options: RewardOptions) -> Reward:
        return partial(self.function, **self.bind(options)) if self.bind else self.function


BUILT_IN: dict[str, BuiltIn] = {}


def builtin_reward(*names: str, parallel: str = "inline", bind: Callable[[RewardOptions], dict] | None = None):
    """Enter the decorated reward in the table under NAMES."""

    def enter(function):
        for name in names:
            BUILT_IN[name] = BuiltIn(function, parallel, bind)
        return function

    return enter
