"""The GRPO objective, written out by hand because it is the product: DeepSeekMath's GRPO with
the variants practitioners use (DAPO's clip-higher and token-level loss, Dr. GRPO's constant
normaliser and unscaled advantages).

Shapes: B completions, T completion tokens (right-padded); `completion_mask` is 1 on real tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LOSS_TYPES = ("grpo", "dapo", "dr_grpo")
SCALINGS = ("group", "batch", "none")
STD_EPSILON = 1e-4


def group_advantages(rewards_B: torch.Tensor, group_size: int, scale: str = "group") -> torch.Tensor:
    """A_i = (r_i - mean of its group) / (std + 1e-4): the same for every token of completion i.

    Completions are laid out group by group (G consecutive completions per prompt). `scale`:
    group (std of the group, DeepSeekMath), batch (std of the whole batch), none (Dr. GRPO).
    Standard deviations are the sample (Bessel-corrected) ones.
    """
    grouped = rewards_B.view(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale == "none":
        return centred.flatten()
    if scale == "group":
        std = grouped.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(grouped[:, :1])
    elif scale == "batch":
        std = rewards_B.std() if rewards_B.numel() > 1 else torch.zeros(())
    else:
        raise ValueError(f"scale must be one of {SCALINGS}")
    return (centred / (std + STD_EPSILON)).flatten()


def k3_kl(logprobs_BT: torch.Tensor, ref_logprobs_BT: torch.Tensor) -> torch.Tensor:
    """D = pi_ref/pi - log(pi_ref/pi) - 1 per token: an unbiased, non-negative KL estimator."""
    log_ratio = ref_logprobs_BT - logprobs_BT
    return torch.exp(log_ratio) - log_ratio - 1


@dataclass
class Normaliser:
    """What a step's summed loss is divided by, computed over the whole optimizer step so that
    splitting it into micro-batches does not change the update."""

    loss_type: str
    completions: int  # completions in the step
    tokens: int  # unmasked completion tokens in the step
    max_completion_length: int  # dr_grpo's constant

    @classmethod
    def for_step(cls, loss_type: str, completion_masks: list[torch.Tensor], max_completion_length: int) -> Normaliser:
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}")
        return cls(
            loss_type,
            completions=sum(mask.shape[0] for mask in completion_masks),
            tokens=max(1, int(sum(mask.sum().item() for mask in completion_masks))),
            max_completion_length=max_completion_length,
        )


def per_token_objective(
    logprobs_BT: torch.Tensor,
    old_logprobs_BT: torch.Tensor,
    advantages_B: torch.Tensor,
    epsilon_low: float,
    epsilon_high: float,
    ref_logprobs_BT: torch.Tensor | None = None,
    beta: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token loss: -(min(rho A, clip(rho, 1-eps_low, 1+eps_high) A) - beta D), and its parts."""
    ratio = torch.exp(logprobs_BT - old_logprobs_BT)
    advantages = advantages_B[:, None]
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high) * advantages
    objective = torch.min(unclipped, clipped)
    parts = {
        "clipped_low": (ratio < 1 - epsilon_low) & (advantages < 0),
        "clipped_high": (ratio > 1 + epsilon_high) & (advantages > 0),
    }
    if beta > 0 and ref_logprobs_BT is not None:
        kl = k3_kl(logprobs_BT, ref_logprobs_BT)
        objective = objective - beta * kl
        parts["kl"] = kl
    return -objective, parts


def aggregate(loss_BT: torch.Tensor, completion_mask_BT: torch.Tensor, normaliser: Normaliser) -> torch.Tensor:
    """This micro-batch's share of the step loss.

    grpo: mean over each completion's tokens, then mean over the step's completions.
    dapo: sum over the step's tokens / their count. dr_grpo: sum / (completions x max length).
    """
    masked = loss_BT * completion_mask_BT
    if normaliser.loss_type == "grpo":
        per_completion = masked.sum(-1) / completion_mask_BT.sum(-1).clamp(min=1)
        return per_completion.sum() / normaliser.completions
    if normaliser.loss_type == "dapo":
        return masked.sum() / normaliser.tokens
    return masked.sum() / (normaliser.completions * normaliser.max_completion_length)
