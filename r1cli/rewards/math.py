"""`accuracy`: the response's final answer against the gold, read the way math-verify reads it,
without paying for hedges ("17 or 18") or lists of candidates."""

from __future__ import annotations

import re

from r1cli.data.answers import extract_answer, gold_answer, reasoning_and_response
from r1cli.rewards.base import builtin_reward

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

    from r1cli.data.answers import ANSWER_PATTERN, last_boxed

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


@builtin_reward("accuracy", parallel="process", bind=lambda options: {"timeout": options.answer_timeout})
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
