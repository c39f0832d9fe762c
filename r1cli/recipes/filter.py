"""The rejection-sampling recipe: score samples, keep the correct and readable ones, emit SFT records."""

from __future__ import annotations

import contextlib
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from r1cli.console import log
from r1cli.data.outputs import check_file_output, exclusive
from r1cli.data.records import (
    STDIO,
    Record,
    check_sample_fields,
    prompt_id,
    read_records,
    write_json,
    write_records,
)
from r1cli.errors import UserError
from r1cli.options import DataOptions, FilterOptions, RewardSettings, as_dict
from r1cli.rewards.registry import Scorer, parse_rewards, reward_options

SAMPLE_FIELDS = ("prompt", "completion", "reasoning", "response")


@dataclass(frozen=True)
class FilterJob:
    """Which samples to read, where the kept ones go, and what a kept one must be."""

    samples: str
    out: str
    rules: FilterOptions = FilterOptions()
    rewards: RewardSettings = RewardSettings()
    source: DataOptions = DataOptions()  # the split and subset of SAMPLES when it is a dataset


def run_filter(job: FilterJob) -> None:
    """Keep the samples that pass every threshold and readability rule; write them as `messages`
    records; counts per rule go to stderr and OUT.summary.json."""
    samples, out, rules = job.samples, job.out, job.rules
    reward, min_score, per_prompt = rules.reward, rules.min_score, rules.per_prompt
    check_file_output(out, [samples])
    if rules.max_paragraph_chars is not None and rules.max_paragraph_chars < 1:
        raise UserError(f"--max-paragraph-chars {rules.max_paragraph_chars}: must be at least 1")
    if not 0 < rules.near_duplicate <= 1:
        raise UserError(f"--near-duplicate {rules.near_duplicate}: must be in (0, 1]")
    keep_count = parse_per_prompt(per_prompt)
    specs = parse_rewards(reward or ["accuracy"], reward_options(job.rewards))
    thresholds = parse_thresholds(min_score if min_score is not None else (["accuracy=1"] if not reward else []))
    names = {spec.name for spec in specs}
    for name in thresholds:
        if name not in names:
            raise UserError(f"--min {name}=…: {name} is not a reward being scored (--reward: {', '.join(sorted(names))})")
    if rules.require_format and "format" not in names:
        specs += parse_rewards(["format=0"])
    if rules.one_language and "language" not in names:
        specs += parse_rewards(["language=0"])

    records = [_sample(record) for record in read_records(samples, job.source)]
    if not records:
        raise UserError(f"{samples}: no records (the input is empty)")
    scorer = Scorer(specs)
    try:
        for record, scores in zip(records, scorer.score(records)):
            record["rewards"] = {**record.get("rewards", {}), **scores}
            record["_total"] = scorer.total(scores)
    finally:
        scorer.close()

    kept, dropped = select(records, rules, thresholds, keep_count)

    with exclusive(out) if out != STDIO else contextlib.nullcontext():
        count = write_records(out, (training_record(record) for record in kept))
    summary = {"input": len(records), "kept": count, "dropped": {k: v for k, v in dropped.items() if v}, "prompts_kept": len({r["id"] for r in kept}),
               "options": {"samples": samples, "out": out, **as_dict(rules, job.rewards)}}
    if out != STDIO:
        write_json(Path(f"{out}.summary.json"), summary)
    log(f"filter: kept {count} of {len(records)} samples ({summary['prompts_kept']} prompts); dropped: "
        + (", ".join(f"{k} {v}" for k, v in summary["dropped"].items()) or "none"))


def select(records: list[Record], rules: FilterOptions, thresholds: dict[str, float], keep_count: int | None) -> tuple[list[Record], dict[str, int]]:
    """The records every rule keeps (deduplicated, the best KEEP_COUNT per prompt), and how many each rule dropped."""
    dropped: dict[str, int] = defaultdict(int)
    survivors = []
    for record in records:
        reason = rejection(record, thresholds, rules.require_format, rules.one_language, rules.no_code_blocks, rules.max_paragraph_chars)
        if reason:
            dropped[reason] += 1
        else:
            survivors.append(record)
    by_prompt: dict[str, list[Record]] = defaultdict(list)
    for record in survivors:
        by_prompt[record["id"]].append(record)
    kept = []
    for group in by_prompt.values():
        if rules.dedupe:
            unique = remove_duplicates(group, rules.near_duplicate)
            dropped["duplicate"] += len(group) - len(unique)
            group = unique
        ranked = sorted(group, key=lambda r: (-r["_total"], len(r["completion"])))
        chosen = ranked if keep_count is None else ranked[:keep_count]
        dropped[f"per_prompt={rules.per_prompt}"] += len(group) - len(chosen)
        kept += chosen
    return kept, dropped


def _sample(record: Record) -> Record:
    check_sample_fields(record)
    if record.get("id") is None:
        record["id"] = prompt_id(record["prompt"])
    return record


def parse_per_prompt(text: str) -> int | None:
    if text == "all":
        return None
    if text == "best":
        return 1
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise UserError(f"--per-prompt {text!r}: expected all, best or a positive number")


def parse_thresholds(specs: list[str]) -> dict[str, float]:
    thresholds = {}
    for spec in specs:
        name, separator, value = spec.rpartition("=")
        if name and name in thresholds:
            raise UserError(f"--min {spec!r}: a threshold for {name} is already given")
        try:
            thresholds[name] = float(value)
        except ValueError:
            separator = ""
        if not separator or not name:
            raise UserError(f"--min {spec!r}: expected NAME=VALUE, e.g. accuracy=1")
        if not math.isfinite(thresholds[name]):
            raise UserError(f"--min {spec!r}: the threshold must be a finite number")
    return thresholds


def rejection(record, thresholds, require_format, one_language, no_code_blocks, max_paragraph_chars) -> str | None:
    """The first rule that rejects RECORD, or None if it passes them all."""
    rewards = record["rewards"]
    for name, minimum in thresholds.items():
        if rewards.get(name) is None or rewards[name] < minimum:
            return f"{name}<{minimum:g}"
    if require_format and rewards.get("format") != 1.0:
        return "format"
    if one_language and rewards.get("language") not in (None, 1.0):
        return "mixed_language"
    if no_code_blocks and "```" in record["completion"]:
        return "code_block"
    if max_paragraph_chars and any(len(p) > max_paragraph_chars for p in re.split(r"\n\s*\n", record["completion"])):
        return "long_paragraph"
    return None


def shingles(text: str, size: int = 5) -> set[tuple[str, ...]]:
    words = text.split()
    return {tuple(words[i : i + size]) for i in range(max(1, len(words) - size + 1))}


def remove_duplicates(group: list[Record], threshold: float) -> list[Record]:
    """Drop completions identical (up to whitespace) or near-identical to an earlier one."""
    kept: list[Record] = []
    seen_text: set[str] = set()
    kept_shingles: list[set] = []
    for record in group:
        text = " ".join(record["completion"].split())
        if text in seen_text:
            continue
        grams = shingles(text)
        if any(len(grams & other) / len(grams | other) >= threshold for other in kept_shingles):
            continue
        seen_text.add(text)
        kept_shingles.append(grams)
        kept.append(record)
    return kept


def training_record(record: Record) -> dict:
    prompt = record["prompt"]
    turns = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    fields = {k: v for k, v in record.items() if k not in SAMPLE_FIELDS and k != "_total"}
    return {"messages": [*turns, {"role": "assistant", "content": record["completion"]}], **fields}
