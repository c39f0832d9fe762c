"""Evaluation metrics over scored sample records: pass@k, maj@k and the rates `r1 eval` reports."""

from __future__ import annotations

from collections import defaultdict

from r1cli.answers import extract_answer
from r1cli.rewards import reasoning_and_response


def pass_at_k(n: int, correct: int, k: int) -> float:
    """The unbiased estimator of Chen et al. (2021): 1 - C(n-c, k) / C(n, k)."""
    if n - correct < k:
        return 1.0
    product = 1.0
    for i in range(n - correct + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def same_answer(a: str, b: str, timeout: int = 5) -> bool:
    """Whether two final answers are equivalent: equal text, or equal as mathematics."""
    if a.strip() == b.strip():
        return True
    from math_verify import parse, verify

    left, right = parse(f"\\boxed{{{a}}}", parsing_timeout=timeout), parse(f"\\boxed{{{b}}}", parsing_timeout=timeout)
    return bool(left and right and verify(left, right, timeout_seconds=timeout))


def majority_correct(samples: list[dict], k: int) -> float:
    """maj@k: the answer most of the first K samples give (grouping equivalent answers; ties go
    to the group seen first) is correct. Samples without an answer do not vote."""
    groups: list[list[dict]] = []
    for sample in sorted(samples, key=lambda s: s["sample"])[:k]:
        _, response = reasoning_and_response(sample)
        if not response:
            continue
        answer = extract_answer(response)
        for group in groups:
            if same_answer(group[0]["_answer"], answer):
                group.append({**sample, "_answer": answer})
                break
        else:
            groups.append([{**sample, "_answer": answer}])
    if not groups:
        return 0.0
    winner = max(groups, key=len)  # max keeps the first of equal lengths
    return float(winner[0]["rewards"].get("accuracy") == 1.0)


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def report_block(samples: list[dict], ks: list[int]) -> dict:
    """The metrics of one group of scored sample records (each with `rewards`)."""
    by_prompt: dict[str, list[dict]] = defaultdict(list)
    for sample in samples:
        by_prompt[sample["id"]].append(sample)
    block: dict = {"n_prompts": len(by_prompt), "n_samples": len(samples)}
    accuracies = [s["rewards"].get("accuracy") for s in samples if s["rewards"].get("accuracy") is not None]
    block["pass@1"] = mean(accuracies)
    graded = {pid: group for pid, group in by_prompt.items() if all(s["rewards"].get("accuracy") is not None for s in group)}
    for k in ks:
        eligible = [group for group in graded.values() if len(group) >= k]
        if eligible:
            block[f"pass@{k}"] = mean([pass_at_k(len(g), sum(s["rewards"]["accuracy"] == 1.0 for s in g), k) for g in eligible])
            block[f"maj@{k}"] = mean([majority_correct(g, k) for g in eligible])
    block["format_rate"] = mean([s["rewards"]["format"] for s in samples if s["rewards"].get("format") is not None])
    languages = [s["rewards"]["language"] for s in samples if s["rewards"].get("language") is not None]
    block["language_consistency"] = mean([float(value == 1.0) for value in languages])
    block["mean_completion_tokens"] = mean([s["completion_tokens"] for s in samples if s.get("completion_tokens") is not None])
    block["truncated_rate"] = mean([float(s.get("finish_reason") == "length") for s in samples if "finish_reason" in s])
    names = sorted({name for s in samples for name in s["rewards"]})
    block["rewards"] = {name: mean([s["rewards"][name] for s in samples if s["rewards"].get(name) is not None]) for name in names}
    return block
