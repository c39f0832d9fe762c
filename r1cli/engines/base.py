"""The Engine interface every generator implements, and what crosses it.

`sample`, `eval`, `distill` and `grpo` generate through it alone; `make_engine` picks one by
name (`--engine`). An engine returns, for each prompt, one completion per requested seed, with
the log-probability of each sampled token under the temperature-scaled distribution.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from r1cli.errors import UserError


@dataclass
class SamplingOptions:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 512
    stop: tuple[str, ...] = ()
    seed: int = 0


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    logprobs: list[float] = field(repr=False)
    finish_reason: str  # "stop" (EOS or a stop string) or "length"


class Engine(Protocol):
    def generate_ids(self, prompts: list[list[int]], options: SamplingOptions, n: int = 1,
                     seeds: list[list[int]] | None = None) -> list[list[Completion]]:
        """For each tokenized prompt, one completion per seed in SEEDS[i] (default: N, seeded
        from options.seed, the prompt's index and the completion's)."""

    def refresh_weights(self, model) -> None:
        """Generate with MODEL's current weights from now on (after each optimizer step)."""

    def close(self) -> None:
        """Free what the engine holds (a GPU copy of the weights, a cache)."""


@dataclass(frozen=True)
class EngineSettings:
    """How an engine is built: the compute placement and how many sequences go together."""

    dtype: str = "auto"
    device: str = "auto"
    batch_size: int = 32
    seed: int = 0
    memory_share: float = 0.5  # of free GPU memory, the most an engine's KV cache may take


# name -> the engine's class; each engine module enters itself with `@engine("name")`.
_ENGINES: dict[str, type] = {}
_discovered: list[bool] = []


def engine(name: str):
    """Enter the decorated class as engine NAME. It provides `load(model, settings) -> (engine,
    tokenizer)` (generate from a checkpoint) and `for_policy(network, tokenizer, model, settings)`
    (generate with a model being trained, refreshed after each optimizer step)."""

    def enter(cls):
        _ENGINES[name] = cls
        return cls

    return enter


def engine_names() -> tuple[str, ...]:
    """Every engine in this package: a module of r1cli.engines that enters one is all it takes."""
    if not _discovered:
        import importlib
        import pkgutil

        import r1cli.engines

        for module in sorted(pkgutil.iter_modules(r1cli.engines.__path__), key=lambda m: m.name):
            importlib.import_module(f"r1cli.engines.{module.name}")
        _discovered.append(True)
    return tuple(sorted(_ENGINES))


def engine_class(name: str) -> type:
    names = engine_names()
    if name not in _ENGINES:
        raise UserError(f"--engine {name!r} is not one of: {', '.join(names)}")
    return _ENGINES[name]


def engine_name(instance) -> str:
    """The name INSTANCE's class is entered under: the engine that actually generates (`auto` picks
    one, `fast` falls back to `hf` for an architecture it lacks)."""
    engine_names()
    return next((name for name, cls in _ENGINES.items() if type(instance) is cls), type(instance).__name__)


def make_engine(name: str, model: str, *, dtype: str = "auto", device: str = "auto", batch_size: int = 32, seed: int = 0,
                memory_share: float = 0.5):
    """(engine, tokenizer) generating from the checkpoint MODEL with engine NAME."""
    return engine_class(name).load(model, EngineSettings(dtype, device, batch_size, seed, memory_share))
