"""A toy preference reward: it grades a reply to a general instruction the way the R1 paper's
helpfulness reward model grades the final summary (the response, not the reasoning).

`r1 grpo ... --reward r1cli.toy.judge:helpfulness` in the toy pipeline's final RL stage. On a real
model, a trained reward model takes its place (`--reward rm:PATH`).
"""

from __future__ import annotations

from r1cli.data.answers import split_completion


def helpfulness(record: dict) -> float | None:
    """1 for the requested reply and nothing else, 0.5 when it is there among other words,
    0 otherwise; None for records without a `reference` (reasoning prompts: other rewards judge those)."""
    reference = record.get("reference")
    if reference is None:
        return None
    _, response = split_completion(record.get("completion", ""))
    reply, wanted = " ".join(response.split()), " ".join(str(reference).split())
    if reply == wanted:
        return 1.0
    return 0.5 if wanted and wanted in reply else 0.0
