"""The GRPO objective, written out by hand because it is the product: DeepSeekMath's GRPO with
the variants practitioners use (DAPO's clip-higher and token-level loss, Dr. GRPO's constant
normaliser and unscaled advantages).

Shapes: B completions, T completion tokens (right-padded); `completion_mask` is 1 on real tokens;
P prompts of G completions each (B = P x G).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LOSS_TYPES = ("grpo", "dapo", "dr_grpo")
SCALINGS = ("group", "batch", "none")
STD_EPSILON = 1e-4


def group_advantages(rewards_B: torch.Tensor, group_size: int, scale: str = "group", valid_B: torch.Tensor | None = None) -> torch.Tensor:
    """A_i = (r_i - mean of its group) / (std + 1e-4): the same for every token of completion i.

    Completions are laid out group by group (G consecutive completions per prompt). `scale`:
    group (std of the group, DeepSeekMath), batch (std of the whole batch), none (Dr. GRPO).
    Standard deviations are the sample (Bessel-corrected) ones.

    `valid_B` marks the completions that some reward applies to. One that none does (every
    reward None) has no reward, not a reward of 0: it gets advantage 0 and its placeholder
    (any value, NaN included) moves neither its group's mean nor any std. Means and stds are
    then over the valid members (batch scale: the std over the valid members of the batch),
    and a group with fewer than two valid members gets 0 throughout, there being nothing to
    compare. Without a mask, or with every member valid, the result is the unmasked one, bit
    for bit.
    """
    if scale not in SCALINGS:
        raise ValueError(f"scale must be one of {SCALINGS}")
    if valid_B is not None and not bool(valid_B.all()):
        return _masked_group_advantages(rewards_B, group_size, scale, valid_B.bool())
    grouped = rewards_B.view(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale == "none":
        return centred.flatten()
    if scale == "group":
        std = grouped.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(grouped[:, :1])
    else:
        std = rewards_B.std() if rewards_B.numel() > 1 else torch.zeros(())
    return (centred / (std + STD_EPSILON)).flatten()


def _masked_group_advantages(rewards_B: torch.Tensor, group_size: int, scale: str, valid_B: torch.Tensor) -> torch.Tensor:
    valid_PG = valid_B.view(-1, group_size)
    zeros_PG = torch.zeros_like(rewards_B.view(-1, group_size))
    rewards_PG = torch.where(valid_PG, rewards_B.view(-1, group_size), zeros_PG)  # placeholders out before any sum
    count_P1 = valid_PG.sum(dim=1, keepdim=True)
    centred_PG = torch.where(valid_PG, rewards_PG - rewards_PG.sum(dim=1, keepdim=True) / count_P1.clamp(min=1), zeros_PG)
    compared_PG = valid_PG & (count_P1 >= 2)
    if scale == "none":
        return torch.where(compared_PG, centred_PG, zeros_PG).flatten()
    if scale == "group":
        std = ((centred_PG**2).sum(dim=1, keepdim=True) / (count_P1 - 1).clamp(min=1)).sqrt()
    else:
        valid_rewards = rewards_B[valid_B]
        std = valid_rewards.std() if valid_rewards.numel() > 1 else torch.zeros((), dtype=rewards_B.dtype)
    return torch.where(compared_PG, centred_PG / (std + STD_EPSILON), zeros_PG).flatten()


def k3_kl(logprobs_BT: torch.Tensor, ref_logprobs_BT: torch.Tensor) -> torch.Tensor:
    """D = pi_ref/pi - log(pi_ref/pi) - 1 per token: an unbiased, non-negative KL estimator."""
    log_ratio = ref_logprobs_BT - logprobs_BT
    return torch.exp(log_ratio) - log_ratio - 1


@dataclass
class Normaliser:
    """What an optimizer update's summed loss is divided by, computed over the whole update so
    that splitting it into micro-batches does not change it."""

    loss_type: str
    completions: int  # completions in the update
    tokens: float  # dapo's divisor: the update's unmasked completion tokens, or the step's / M
    max_completion_length: int  # dr_grpo's constant

    @classmethod
    def for_step(
        cls,
        loss_type: str,
        completion_masks: list[torch.Tensor],
        max_completion_length: int,
        step_tokens: int | None = None,
        minibatches: int = 1,
    ) -> Normaliser:
        """The normaliser of one update, over the micro-batches' `completion_masks`.

        dapo over M minibatches: the step's rollouts are split into M updates, and dividing each
        by its own token count would weigh a token more in a minibatch of short completions than
        in one of long completions. Each update is divided instead by `step_tokens` (the
        unmasked completion tokens of all the step's rollouts, one pass over them) / M, TRL's
        convention: every token of the step weighs the same in every update, and the M updates
        sum to M times the loss of the step taken as one batch. With M = 1 and no
        `step_tokens`, the divisor is the update's own token count, which is then the step's.
        grpo and dr_grpo ignore `step_tokens` and `minibatches`: their divisors count
        completions, per update.
        """
        return cls.from_counts(loss_type, sum(mask.shape[0] for mask in completion_masks),
                               int(sum(mask.sum().item() for mask in completion_masks)), max_completion_length,
                               step_tokens=step_tokens, minibatches=minibatches)

    @classmethod
    def from_counts(
        cls,
        loss_type: str,
        completions: int,
        tokens: int,
        max_completion_length: int,
        step_tokens: int | None = None,
        minibatches: int = 1,
    ) -> Normaliser:
        """`for_step` from the update's counts: its COMPLETIONS and unmasked completion TOKENS (under
        torchrun every rank's, summed, so that each rank's share of the loss has the whole update's divisor)."""
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}")
        if minibatches < 1:
            raise ValueError("minibatches must be at least 1")
        divisor: float = max(1, tokens)
        if loss_type == "dapo" and step_tokens is not None:
            divisor = max(1, step_tokens) / minibatches
        elif loss_type == "dapo" and minibatches > 1:
            raise ValueError("dapo over several minibatches needs step_tokens: each update is divided by the step's tokens / M")
        return cls(loss_type, completions=completions, tokens=divisor, max_completion_length=max_completion_length)


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
    """This micro-batch's share of the update's loss.

    grpo: mean over each completion's tokens, then mean over the update's completions.
    dapo: sum over the update's tokens / `normaliser.tokens` (their count, or the step's / M).
    dr_grpo: sum / (completions x max length).
    """
    masked = loss_BT * completion_mask_BT
    if normaliser.loss_type == "grpo":
        per_completion = masked.sum(-1) / completion_mask_BT.sum(-1).clamp(min=1)
        return per_completion.sum() / normaliser.completions
    if normaliser.loss_type == "dapo":
        return masked.sum() / normaliser.tokens
    return masked.sum() / (normaliser.completions * normaliser.max_completion_length)
