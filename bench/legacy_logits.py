"""The full-logits scoring that r1 used before chunked log-probs, kept here only so that the
benchmarks can run it side by side with the current path (`install()` swaps it in)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def completion_logprobs(network, batch, temperature: float, with_entropy: bool = False):
    """[B, L, V] logits, an fp32 copy divided by T, log_softmax over all of it, then the gather."""
    logits = network(input_ids=batch.input_ids_BL, attention_mask=batch.attention_mask_BL,
                     position_ids=batch.position_ids_BL, use_cache=False).logits
    logits_BTV = logits[:, batch.prompt_width - 1 : -1].float() / max(temperature, 1e-6)
    logprobs_BTV = logits_BTV.log_softmax(-1)
    tokens_BT = batch.input_ids_BL[:, batch.prompt_width :]
    logprobs_BT = logprobs_BTV.gather(-1, tokens_BT[..., None]).squeeze(-1) * batch.token_mask_BT
    if not with_entropy:
        return logprobs_BT
    with torch.no_grad():
        entropy_BT = -(logprobs_BTV.exp() * logprobs_BTV).sum(-1)
    return logprobs_BT, entropy_BT


def token_loss_sum(network, batch, teacher=None):
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = network(**inputs, use_cache=False).logits
    labels = batch["labels"][:, 1:]
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE, reduction="sum")
    return loss, None


def install() -> None:
    """Score with full logits from here on (and split micro-batches by row count only)."""
    import r1cli.recipes.sft as sft
    import r1cli.rl.policy as policy

    policy.completion_logprobs = completion_logprobs
    sft.token_loss_sum = token_loss_sum
