"""The reward registry shared by `grpo`, `filter` and `eval`: `--reward NAME[=WEIGHT]`.

A reward scores one sample record (DESIGN.md) and returns a float, or None where it cannot
apply (no gold answer, no reasoning to judge). Built in: accuracy, format, tags, language,
overlong (alias length), repetition, code, rm:PATH and MODULE:FUNCTION.
"""

from __future__ import annotations

import ast
import importlib
import math
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


PROSE_WORD = re.compile(r"[^\W\d_]{2,}")
LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
BRACED = re.compile(r"\{[^{}]*\}")


def is_prose(text: str) -> bool:
    """Whether text has words of its own: a run of two or more letters that is neither a LaTeX
    command's name nor inside braces (`\\text{Evelyn}`, `\\begin{pmatrix}` are maths)."""
    bare = LATEX_COMMAND.sub(" ", text)
    while BRACED.search(bare):
        bare = BRACED.sub(" ", bare)
    return bool(PROSE_WORD.search(bare))


# Maths that continues a match: a power, index, brace, operator, minus before a number or a
# command, or a command that is not text, a unit's roman type or spacing (`\times`, `\sqrt`).
MATH_AFTER = re.compile(r"\s*(?:[\^_{+*/×÷]|-\s*[\d\\]|\\(?!text|mbox|mathrm|quad|qquad)[A-Za-z])")
MATH_BEFORE = re.compile(r"[\w}\^_\\]$")


def names_one_answer(text: str, answer: list, timeout: int = 5) -> bool:
    """Whether every number or expression math-verify's default extraction finds in `text` is
    whole and equivalent to `answer` (what math-verify reads from it).

    math-verify reads free text by taking, among its best-ranked matches, the rightmost that
    parses: "17 or 19 or 18" reads as 18. A hedge that lists candidates must not score as its
    last one, so every match that does not overlap one already taken (best rank first, then
    rightmost first, as math-verify ranks them) must agree. Nor may a match be a piece of
    maths written without $…$ (`\\frac{14}{3}+1` would read as 14/3, `90^\\circ` as 90): a
    match that maths markup or an operator continues names nothing. The scan gives up, as
    ambiguous, once it has spent `timeout` seconds.
    """
    import time

    from math_verify import ExprExtractionConfig, LatexExtractionConfig, verify
    from math_verify.parser import extract_match, get_extraction_regexes
    from math_verify.utils import timeout as time_limit

    targets = get_extraction_regexes((LatexExtractionConfig(), ExprExtractionConfig()))
    matches = sorted(
        ((priority, -match.end(), match.start(), match, target) for patterns, target in targets
         for pattern, priority in patterns for match in pattern.finditer(text)),
        key=lambda row: row[:3],
    )
    deadline, taken, agreeing = time.monotonic() + timeout, [], set()
    for _, negative_end, start, match, target in matches:
        if time.monotonic() > deadline:
            return False
        end = -negative_end
        if any(start < other_end and other_start < end for other_start, other_end in taken):
            continue
        try:
            value, text_form = time_limit(timeout)(extract_match)(match, target)
        except Exception:  # a match that cannot be read in time might disagree: not confirmed
            return False
        if value is None:
            continue
        separated = match.group(0)[:1].isspace() or match.group(0).startswith("=")  # the match holds its separator
        if MATH_AFTER.match(text, end) or (not separated and MATH_BEFORE.search(text, 0, start)):
            return False
        taken.append((start, end))
        if text_form in agreeing:
            continue
        if not verify(answer, value, timeout_seconds=timeout):
            return False
        agreeing.add(text_form)
    return True


LISTED_NUMBERS = re.compile(r"\d(?:\s|~|\\[,:;! ]|\\q?quad)+\d|…|\.\.\.|\\[a-z]*dots[a-z]*")


def read_expression(latex: str, timeout: int = 5) -> list:
    """`latex` read as one expression, as math-verify reads a \\boxed{…}; [] for a list.

    math-verify reads numbers set side by side as their sum (`10 8` as 18, `1 800` as 801) and
    a run ending in an ellipsis as its last term (`1 2 3 … 18` as 18): an expression that lists
    numbers like that names no single answer, so it reads as none.
    """
    from math_verify import parse

    if LISTED_NUMBERS.search(latex):
        return []
    return parse(f"\\boxed{{{latex}}}", parsing_timeout=timeout)


def answer_expression(response: str, timeout: int = 5) -> list:
    """A response's final answer as math-verify reads it (its `parse` result; [] for none).

    Inside <answer>…</answer> (the last one): the last \\boxed{…} there if any; else, when the
    tag holds prose ("The total is 18 dollars"), what math-verify's default extraction reads
    from it, provided it names one answer (`names_one_answer`: "17 or 18 or 19" names none);
    else (bare maths such as `\\frac{\\sqrt{2}}{2}`, which free-text extraction misreads, or
    prose in which it finds nothing) the tag's text as one expression. Without a tag, the last
    \\boxed{…} or \\fbox{…} as one expression; without either, math-verify's reading of the
    whole response. Expressions are read by `read_expression`.
    """
    from math_verify import parse

    from r1cli.answers import ANSWER_PATTERN, last_boxed

    tagged = ANSWER_PATTERN.findall(response)
    if tagged:
        inner = tagged[-1].strip()
        if last_boxed(inner) is None and is_prose(inner):
            read = parse(inner, parsing_timeout=timeout)
            if read:
                return read if names_one_answer(inner, read, timeout) else []
        return read_expression(extract_answer(response), timeout)
    if "<answer>" in response or "\\boxed" in response or "\\fbox" in response:
        return read_expression(extract_answer(response), timeout)
    return parse(response, parsing_timeout=timeout)


def accuracy(record: dict, timeout: int = 5) -> float | None:
    """1 if the response's final answer (`answer_expression`) is mathematically equivalent to
    the gold, else 0."""
    if record.get("answer") in (None, ""):
        return None
    from math_verify import parse, verify

    _, response = reasoning_and_response(record)
    if not response:
        return 0.0
    prediction = answer_expression(response, timeout)
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


# No backtick in the info string: a response of backticks would otherwise take quadratic time.
FENCE = re.compile(r"```(?:python|py|Python)?[^\n`]*\n(.*?)```", re.DOTALL)
FAILURES = "_r1_failed_asserts"


class _DeferAsserts(ast.NodeTransformer):
    """`assert X` becomes "note it if X is false (or raises)", so that every call of the test
    happens whatever the solution answered: otherwise a test that stops at its first failure
    tells the solution, by whether a next call comes, that its last answer was wrong."""

    def visit_Assert(self, node: ast.Assert):
        failed = ast.parse(f"{FAILURES}.append({node.lineno})").body[0]
        guard = ast.Try(
            body=[ast.If(test=ast.UnaryOp(op=ast.Not(), operand=node.test), body=[failed], orelse=[])],
            handlers=[ast.ExceptHandler(type=ast.Name("Exception", ast.Load()), name=None, body=[failed])],
            orelse=[], finalbody=[],
        )
        return ast.copy_location(guard, node)


def deferred_asserts(test: str) -> str:
    """TEST with its asserts deferred (see _DeferAsserts); it passes when FAILURES stays empty."""
    tree = ast.fix_missing_locations(_DeferAsserts().visit(ast.parse(test)))
    return f"{FAILURES} = []\n{ast.unparse(tree)}\n"


def code(record: dict, timeout: float, memory_mb: int) -> float | None:
    """Run the response's last fenced Python block against the record's tests (r1cli.sandbox):
    1 when every test passes, else 0.

    HumanEval records (`test`, `entry_point`): the prompt and the block are the solution, the
    tests' `check(entry_point)` runs in the judge. MBPP records (`test_list`): every assert. All
    or nothing, because partial credit pays programs that solve nothing (a constant `True`
    passes some asserts of one MBPP task in five). A program that does not finish, exits early
    or returns anything but plain values fails.
    """
    _, response = reasoning_and_response(record)
    blocks = FENCE.findall(response)
    limits = Limits(timeout=timeout, memory_mb=memory_mb)
    _check_test_fields(record)
    if "test" in record and "entry_point" in record:
        if not blocks:
            return 0.0
        block, entry_point = blocks[-1], record["entry_point"]
        prompt = record["prompt"] if isinstance(record.get("prompt"), str) else ""
        stub = prompt + "    pass\n" if prompt.strip() else ""
        # A block that defines the function replaces the prompt's stub; one that does not is its body.
        head = stub if f"def {entry_point}" in block else prompt
        try:
            test = deferred_asserts(record["test"])
        except SyntaxError as error:
            raise UserError(f"{getattr(record, 'where', 'a record')}: field 'test' is not Python ({error.msg})") from None
        suite = TestSuite(setup=stub, tests=(f"{test}\ncheck({entry_point})\nassert not {FAILURES}\n",), names=(entry_point,))
        return float(all(run_tests(f"{head}\n{block}\n", suite, limits).passed))
    if "test_list" in record:
        if not blocks:
            return 0.0
        imports = "\n".join(record.get("test_imports") or [])
        suite = TestSuite(setup=imports, tests=tuple(record["test_list"]), names=function_names(record))
        return float(all(run_tests(f"{imports}\n{blocks[-1]}\n", suite, limits).passed))
    return None


def _check_test_fields(record: dict) -> None:
    """The tests are code the judge runs: each field must be what HumanEval or MBPP makes it."""
    where = getattr(record, "where", "a record")
    for name in ("test", "entry_point", "code_header", "code"):
        if record.get(name) is not None and not isinstance(record[name], str):
            raise UserError(f"{where}: field '{name}' must be a string, got {type(record[name]).__name__}")
    for name in ("test_list", "test_imports"):
        value = record.get(name)
        if value is not None and (not isinstance(value, list) or not all(isinstance(item, str) for item in value)):
            raise UserError(f"{where}: field '{name}' must be a list of strings (Python statements), got {type(value).__name__}")


def function_names(record: dict) -> tuple[str, ...] | None:
    """The functions an MBPP-style record tests, from the data (never from the completion): the
    `def` in its `code_header`, else the top-level `def`s of its reference `code`; None (the
    judge infers them from the asserts) when it has neither. A named function is called in the
    solution even where it shadows a builtin (MBPP has a task named `sum`)."""
    header = re.search(r"^\s*def\s+(\w+)", record.get("code_header") or "", re.MULTILINE)
    if header:
        return (header.group(1),)
    try:
        tree = ast.parse(record.get("code") or "")
    except SyntaxError:
        return None
    names = tuple(node.name for node in tree.body if isinstance(node, ast.FunctionDef))
    return names or None


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
