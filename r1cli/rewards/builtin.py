"""The rule rewards of the R1 paper and its successors: format, tags, language consistency,
DAPO's overlong penalty, repetition. Each scores one sample record; None where it cannot apply."""

from __future__ import annotations

import re

from r1cli.data.answers import reasoning_and_response
from r1cli.errors import UserError
from r1cli.rewards.base import RewardOptions, builtin_reward

FORMAT_PATTERN = re.compile(r"\s*<think>(?:(?!<think>|</think>).)*</think>\s*\S", re.DOTALL)


@builtin_reward("format")
def format_reward(record: dict) -> float:
    """1 for one <think>…</think> block at the start followed by a non-empty response."""
    return float(bool(FORMAT_PATTERN.match(record.get("completion", ""))))


@builtin_reward("tags")
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


@builtin_reward("language")
def language(record: dict) -> float | None:
    """Share of the reasoning's words in the prompt's script (the R1 paper's language reward)."""
    target = prompt_script(record)
    reasoning, _ = reasoning_and_response(record)
    counts = script_counts(reasoning)
    if target is None or not counts:
        return None
    return counts.get(target, 0) / sum(counts.values())


def _overlong_limits(options: RewardOptions) -> dict:
    if options.max_length is None:
        raise UserError("--reward overlong: needs the length limit, --overlong-length")
    return {"max_length": options.max_length, "buffer": options.overlong_buffer}


@builtin_reward("overlong", "length", bind=_overlong_limits)
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


@builtin_reward("repetition", bind=lambda options: {"ngram": options.repetition_ngram})
def repetition(record: dict, ngram: int) -> float:
    """Minus the share of repeated word n-grams in the completion: 0 (none) down to -1."""
    words = record.get("completion", "").split()
    grams = [tuple(words[i : i + ngram]) for i in range(len(words) - ngram + 1)]
    if not grams:
        return 0.0
    return len(set(grams)) / len(grams) - 1


# No backtick in the info string: a response of backticks would otherwise take quadratic time.
