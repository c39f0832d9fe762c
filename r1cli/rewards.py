"""The reward registry shared by `grpo`, `filter` and `eval`: `--reward NAME[=WEIGHT]`.

A reward scores one sample record (DESIGN.md) and returns a float, or None where it cannot
apply (no gold answer, no reasoning to judge). Built in: accuracy, format, tags, language,
overlong (alias length), repetition, code, rm:PATH and MODULE:FUNCTION.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from r1cli.answers import extract_answer, gold_answer, split_completion
from r1cli.errors import UserError
from r1cli.sandbox import Limits, TestSuite, run_tests

Reward = Callable[[dict], "float | None"]
BUILT_IN = ("accuracy", "format", "tags", "language", "overlong", "length", "repetition", "code")
VALID_NAMES = ", ".join(BUILT_IN) + ", rm:PATH, MODULE:FUNCTION"


@dataclass
class RewardOptions:
    """Parameters of the rewards that take any; commands expose them as options."""

    max_length: int = 1024  # overlong: completions longer than this many tokens get -1
    overlong_buffer: int = 256  # overlong: the penalty ramps from 0 to -1 over the last this many tokens
    repetition_ngram: int = 3
    code_timeout: float = 10.0  # seconds per program
    code_memory_mb: int = 1024
    answer_timeout: int = 5  # seconds per math-verify parse or comparison


@dataclass
class RewardSpec:
    name: str
    weight: float
    function: Reward
    parallel: str = "inline"  # "process": CPU-bound, spread over processes; "thread": waits on subprocesses


# ---------------------------------------------------------------- the rewards


def reasoning_and_response(record: dict) -> tuple[str, str]:
    """A sample record's reasoning and response, derived from `completion` when absent."""
    if "reasoning" in record and "response" in record:
        return record["reasoning"] or "", record["response"] or ""
    return split_completion(record.get("completion", ""))


def accuracy(record: dict, timeout: int = 5) -> float | None:
    """1 if the response's final answer is mathematically equivalent to the gold, else 0."""
    if record.get("answer") in (None, ""):
        return None
    from math_verify import parse, verify

    _, response = reasoning_and_response(record)
    if not response:
        return 0.0
    answer = extract_answer(response)
    explicit = "<answer>" in response or "\\boxed" in response or "\\fbox" in response
    prediction = parse(f"\\boxed{{{answer}}}" if explicit else response, parsing_timeout=timeout)
    gold = parse(f"\\boxed{{{gold_answer(record['answer'])}}}", parsing_timeout=timeout)
    if not gold or not prediction:
        return 0.0
    return float(verify(gold, prediction, timeout_seconds=timeout))


FORMAT_PATTERN = re.compile(r"\s*<think>(?:(?!<think>|</think>).)*</think>\s*\S", re.DOTALL)


def format_reward(record: dict) -> float:
    """1 for one <think>…</think> block at the start followed by a non-empty response."""
    return float(bool(FORMAT_PATTERN.match(record.get("completion", ""))))


def tags(record: dict) -> float:
    """Partial credit: 0.5 for each of <think> and </think> present exactly once."""
    completion = record.get("completion", "")
    return 0.5 * (completion.count("<think>") == 1) + 0.5 * (completion.count("</think>") == 1)


# Scripts written without spaces count per character; the others per word.
SCRIPTS = {
    "han": r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]",
    "kana": r"[\u3040-\u30ff]",
    "hangul": r"[\uac00-\ud7af]+",
    "latin": r"[A-Za-z\u00c0-\u024f]+",
    "cyrillic": r"[\u0400-\u04ff]+",
    "arabic": r"[\u0600-\u06ff]+",
}
SCRIPT_UNITS = re.compile("|".join(f"(?P<{name}>{pattern})" for name, pattern in SCRIPTS.items()))
MATH_MARKUP = re.compile(r"\$[^$]*\$|\\\(.*?\\\)|\\\[.*?\\\]|\\[A-Za-z]+|<[^>]+>", re.DOTALL)


def script_counts(text: str) -> dict[str, int]:
    """Words (or characters, for scripts without spaces) of each script; maths and tags ignored."""
    counts: dict[str, int] = {}
    for match in SCRIPT_UNITS.finditer(MATH_MARKUP.sub(" ", text)):
        counts[match.lastgroup] = counts.get(match.lastgroup, 0) + 1
    return counts


def prompt_text(record: dict) -> str:
    prompt = record.get("prompt", "")
    if isinstance(prompt, list):
        return " ".join(m.get("content", "") for m in prompt if m.get("role") == "user")
    return prompt


def prompt_script(record: dict) -> str | None:
    counts = script_counts(prompt_text(record))
    return max(counts, key=counts.get) if counts else None


def language(record: dict) -> float | None:
    """Share of the reasoning's words in the prompt's script (the R1 paper's language reward)."""
    target = prompt_script(record)
    reasoning, _ = reasoning_and_response(record)
    counts = script_counts(reasoning)
    if target is None or not counts:
        return None
    return counts.get(target, 0) / sum(counts.values())


def overlong(record: dict, max_length: int, buffer: int) -> float:
    """DAPO's soft overlong penalty on the completion's token count."""
    tokens = record.get("completion_tokens")
    if tokens is None:
        raise UserError(f"{getattr(record, 'where', 'a record')}: the overlong reward needs 'completion_tokens'")
    if tokens <= max_length - buffer:
        return 0.0
    if tokens <= max_length:
        return (max_length - buffer - tokens) / buffer
    return -1.0


def repetition(record: dict, ngram: int) -> float:
    """Minus the share of repeated word n-grams in the completion: 0 (none) down to -1."""
    words = record.get("completion", "").split()
    grams = [tuple(words[i : i + ngram]) for i in range(len(words) - ngram + 1)]
    if not grams:
        return 0.0
    return len(set(grams)) / len(grams) - 1


FENCE = re.compile(r"```(?:python|py|Python)?[^\n]*\n(.*?)```", re.DOTALL)


def code(record: dict, timeout: float, memory_mb: int) -> float | None:
    """Run the response's last fenced Python block against the record's tests (r1cli.sandbox).

    HumanEval records (`test`, `entry_point`): the prompt and the block are the solution, the
    tests' `check(entry_point)` runs in the judge: 1 or 0. MBPP records (`test_list`): the share
    of asserts that pass. A program that does not finish, exits early or returns anything but
    plain values fails.
    """
    _, response = reasoning_and_response(record)
    blocks = FENCE.findall(response)
    limits = Limits(timeout=timeout, memory_mb=memory_mb)
    if "test" in record and "entry_point" in record:
        if not blocks:
            return 0.0
        block, entry_point = blocks[-1], record["entry_point"]
        prompt = record.get("prompt", "") if isinstance(record.get("prompt"), str) else ""
        # A block that defines the function replaces the prompt's stub; one that does not is its body.
        head = prompt + "    pass\n" if f"def {entry_point}" in block else prompt
        suite = TestSuite(setup=prompt + "    pass\n", tests=(f"{record['test']}\n\ncheck({entry_point})\n",), names=(entry_point,))
        return float(all(run_tests(f"{head}\n{block}\n", suite, limits).passed))
    if "test_list" in record:
        if not blocks:
            return 0.0
        imports = "\n".join(record.get("test_imports") or [])
        # The function under test: named by the record where it says (MBPP's `code_header`),
        # else every name the asserts call that neither the imports nor Python define.
        header = re.match(r"\s*def\s+(\w+)", record.get("code_header") or "")
        suite = TestSuite(setup=imports, tests=tuple(record["test_list"]), names=(header.group(1),) if header else None)
        return run_tests(f"{imports}\n{blocks[-1]}\n", suite, limits).share
    return None


# ---------------------------------------------------------------- the registry


def parse_reward(spec: str, options: RewardOptions | None = None) -> RewardSpec:
    """NAME[=WEIGHT] as a RewardSpec; an unknown name lists the valid ones."""
    options = options or RewardOptions()
    name, _, weight_text = spec.partition("=") if not spec.startswith("rm:") else _split_rm(spec)
    try:
        weight = float(weight_text) if weight_text else 1.0
    except ValueError:
        raise UserError(f"--reward {spec!r}: weight {weight_text!r} is not a number") from None
    if name == "accuracy":
        return RewardSpec(name, weight, partial(accuracy, timeout=options.answer_timeout), "process")
    if name == "format":
        return RewardSpec(name, weight, format_reward)
    if name == "tags":
        return RewardSpec(name, weight, tags)
    if name == "language":
        return RewardSpec(name, weight, language)
    if name in ("overlong", "length"):
        return RewardSpec(name, weight, partial(overlong, max_length=options.max_length, buffer=options.overlong_buffer))
    if name == "repetition":
        return RewardSpec(name, weight, partial(repetition, ngram=options.repetition_ngram))
    if name == "code":
        return RewardSpec(name, weight, partial(code, timeout=options.code_timeout, memory_mb=options.code_memory_mb), "thread")
    if name.startswith("rm:"):
        from r1cli.reward_model import RewardModel

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

    def _apply(self, spec: RewardSpec, records: list[dict]) -> list:
        if spec.parallel == "batch":
            return spec.function.score_batch(records)
        if spec.parallel == "process" and len(records) > 8 and self.workers > 1:
            if self._processes is None:
                self._processes = ProcessPoolExecutor(max_workers=self.workers)
            return list(self._processes.map(spec.function, records, chunksize=max(1, len(records) // (4 * self.workers))))
        if spec.parallel == "thread" and len(records) > 1:
            with ThreadPoolExecutor(max_workers=self.workers) as threads:
                return list(threads.map(spec.function, records))
        return [spec.function(record) for record in records]

    def close(self) -> None:
        if self._processes is not None:
            self._processes.shutdown()
            self._processes = None
