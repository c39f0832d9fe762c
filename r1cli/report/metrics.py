"""Evaluation metrics over scored sample records: pass@k, maj@k and the rates `r1 eval` reports."""

from __future__ import annotations

from collections import defaultdict

from r1cli.data.answers import ANSWER_PATTERN, extract_answer, last_boxed, reasoning_and_response
from r1cli.errors import UserError
from r1cli.rewards.math import answer_expression


def pass_at_k(n: int, correct: int, k: int) -> float:
    """The unbiased estimator of Chen et al. (2021): 1 - C(n-c, k) / C(n, k)."""
    if n - correct < k:
        return 1.0
    product = 1.0
    for i in range(n - correct + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def has_explicit_answer(response: str) -> bool:
    """Whether a response states a final answer: a \\boxed{…} / \\fbox{…} or an <answer>…</answer>.

    A response that merely ends ("I am not sure.") has text that `extract_answer` would return,
    but it answers nothing, and letting it vote would let hedges outvote real answers."""
    return bool(ANSWER_PATTERN.search(response)) or last_boxed(response) is not None


def majority_correct(samples: list[dict], k: int, timeout: int = 5) -> float:
    """maj@k: 1 if the answer most of the first k samples (by sample index) give is correct.

    Voters: a sample votes only when its think block is closed (an unclosed <think> has no
    response) and its response has an explicit final answer (`has_explicit_answer`), read as
    `extract_answer` reads it; the others among the first k abstain. Grouping: a voter joins the
    first group whose first answer it equals as text or as mathematics (math-verify's
    `verify` of the two readings `answer_expression` gives, the accuracy reward's reading),
    else starts a group. The largest group wins; among equally large ones, the group whose first
    member has the lowest sample index. The result is that first member's accuracy reward; with
    no voter at all, maj@k is 0.
    """
    from math_verify import verify

    groups: list[tuple[str, list, dict]] = []  # (answer text, its reading, first member), and the votes
    votes: list[int] = []
    for sample in sorted(samples, key=lambda s: s["sample"])[:k]:
        _, response = reasoning_and_response(sample)
        if not response or not has_explicit_answer(response):
            continue
        text = extract_answer(response)
        if not text:
            continue
        reading = answer_expression(response, timeout)
        for index, (group_text, group_reading, _) in enumerate(groups):
            if text == group_text or (group_reading and reading and verify(group_reading, reading, timeout_seconds=timeout)):
                votes[index] += 1
                break
        else:
            groups.append((text, reading, sample))
            votes.append(1)
    if not groups:
        return 0.0
    winner = max(range(len(groups)), key=votes.__getitem__)  # max keeps the first of equal counts
    return float(groups[winner][2]["rewards"].get("accuracy") == 1.0)


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def graded_by_prompt(samples: list[dict]) -> dict[str, list[dict]]:
    """Each prompt's samples that have an accuracy reward; prompts with none are left out."""
    graded: dict[str, list[dict]] = defaultdict(list)
    for sample in samples:
        if sample["rewards"].get("accuracy") is not None:
            graded[sample["id"]].append(sample)
    return dict(graded)


def check_enough_samples(graded: dict[str, list[dict]], k: int) -> None:
    """pass@k and maj@k of a prompt need k of its samples; averaging over only the prompts that
    have them, or over fewer than k, would report a different metric under the same name."""
    if not graded:
        return
    prompt, group = min(graded.items(), key=lambda item: len(item[1]))  # min keeps the first of the fewest
    n = len(group)
    if k > n:
        raise UserError(f"--k {k}: prompt {prompt!r} has only {n} sample{'s' if n != 1 else ''} (n={n}); pass@k and maj@k need k <= n")


def report_block(samples: list[dict], ks: list[int]) -> dict:
    """The metrics of one group of scored sample records (each with `rewards`).

    pass@1 is the mean over prompts of each prompt's share of correct samples, so that every
    prompt weighs the same however many samples it has; pass@k (Chen et al.'s estimator) and
    maj@k are means over prompts too. All three count only samples with an accuracy reward.
    Every k must be at most each graded prompt's sample count (a UserError names the first
    prompt with the fewest samples otherwise).
    """
    by_prompt: dict[str, list[dict]] = defaultdict(list)
    for sample in samples:
        by_prompt[sample["id"]].append(sample)
    block: dict = {"n_prompts": len(by_prompt), "n_samples": len(samples)}
    graded = graded_by_prompt(samples)
    for k in ks:
        check_enough_samples(graded, k)
    correct = {prompt: sum(s["rewards"]["accuracy"] == 1.0 for s in group) for prompt, group in graded.items()}
    block["pass@1"] = mean([correct[prompt] / len(group) for prompt, group in graded.items()])
    if graded:
        for k in ks:
            if k > 1:
                block[f"pass@{k}"] = mean([pass_at_k(len(group), correct[prompt], k) for prompt, group in graded.items()])
            block[f"maj@{k}"] = mean([majority_correct(group, k) for group in graded.values()])
    block["format_rate"] = mean([s["rewards"]["format"] for s in samples if s["rewards"].get("format") is not None])
    languages = [s["rewards"]["language"] for s in samples if s["rewards"].get("language") is not None]
    block["language_consistency"] = mean([float(value == 1.0) for value in languages])
    block["mean_completion_tokens"] = mean([s["completion_tokens"] for s in samples if s.get("completion_tokens") is not None])
    block["truncated_rate"] = mean([float(s.get("finish_reason") == "length") for s in samples if "finish_reason" in s])
    names = sorted({name for s in samples for name in s["rewards"]})
    block["rewards"] = {name: mean([s["rewards"][name] for s in samples if s["rewards"].get(name) is not None]) for name in names}
    return block
