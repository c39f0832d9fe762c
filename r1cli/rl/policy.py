"""The policy update of a GRPO step: μ passes over the rollouts in M minibatches, one optimizer
update each, on the clipped objective of `r1cli.rl.loss`.

Shapes: B rollouts in a micro-batch, T completion tokens (right-padded after left-padded prompts,
so every row's completion starts at the same position).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from r1cli.rl.loss import Normaliser, aggregate, per_token_objective
from r1cli.rl.rollouts import Rollout


@dataclass
class Policy:
    """The model being trained, its reference for the KL term, and its optimizer."""

    network: torch.nn.Module
    reference: torch.nn.Module | None  # None: no KL term (beta 0), or LoRA (the reference is the adapter-free model)
    optimizer: torch.optim.Optimizer
    scheduler: object
    device: torch.device
    dtype: torch.dtype  # compute dtype (autocast); the trained weights stay fp32
    pad_id: int

    @property
    def is_adapter(self) -> bool:
        return hasattr(self.network, "peft_config")


@dataclass(frozen=True)
class UpdateSettings:
    loss: str  # grpo | dapo | dr_grpo
    temperature: float  # the rollouts' sampling temperature: log-probs are taken under logits / T as sampled
    epsilon_low: float
    epsilon_high: float
    beta: float
    iterations: int  # mu
    minibatches: int  # M
    grad_accum: int
    mask_truncated: bool
    max_new_tokens: int
    max_grad_norm: float
    order_seed: int  # the order of rollouts in the minibatches (mu > 1 or M > 1)


@dataclass
class RolloutTensors:
    """A micro-batch of rollouts as tensors."""

    input_ids_BL: torch.Tensor  # prompt (left-padded) then completion (right-padded): L = prompt width + T
    attention_mask_BL: torch.Tensor
    position_ids_BL: torch.Tensor
    completion_mask_BT: torch.Tensor  # 1.0 on the completion tokens that carry loss
    prompt_width: int


@dataclass
class UpdateStats:
    """Means over the step's updates (loss, grad_norm) and over its completion tokens (the rest)."""

    loss: float
    grad_norm: float
    entropy: float
    clipped_low: float
    clipped_high: float
    kl: float | None  # None without a KL term
    # Mean |log-prob under the policy - log-prob the engine sampled with| before the update: ~0 when
    # the engine generates with the policy's own weights, small in bf16, large if its copy is stale.
    engine_logprob_gap: float | None = None

    def as_metrics(self) -> dict:
        return {name: value for name, value in vars(self).items() if value is not None}


def update_policy(policy: Policy, rollouts: list[Rollout], advantages_B: torch.Tensor, settings: UpdateSettings) -> UpdateStats:
    """μ passes over ROLLOUTS in M minibatches, one optimizer update each. Normalisers are taken
    over the whole update, so --grad-accum changes nothing; dapo with M minibatches divides each
    update by the step's tokens / M, so updates have equal scale (TRL's convention)."""
    policy.network.train()
    order_rng = random.Random(settings.order_seed)
    on_policy = settings.iterations == 1 and settings.minibatches == 1
    old_logprobs = None if on_policy else old_policy_logprobs(policy, rollouts, settings.temperature)
    totals: dict[str, list[float]] = {"kl": [], "clipped_low": [], "clipped_high": [], "entropy": [], "loss": [], "grad_norm": [],
                                      "engine_logprob_gap": []}
    if old_logprobs is not None:
        totals["engine_logprob_gap"] += engine_gaps(rollouts, old_logprobs)
    trainable = [p for p in policy.network.parameters() if p.requires_grad]
    step_tokens = sum(len(r.completion_ids) for r in rollouts if not (settings.mask_truncated and r.truncated))
    for _ in range(settings.iterations):
        order = list(range(len(rollouts)))
        if not on_policy:
            order_rng.shuffle(order)
        for minibatch in split(order, settings.minibatches):
            micro_batches = split(minibatch, settings.grad_accum)
            batches = [collate_rollouts([rollouts[i] for i in micro], policy.pad_id, policy.device, settings.mask_truncated)
                       for micro in micro_batches]
            normaliser = Normaliser.for_step(settings.loss, [b.completion_mask_BT for b in batches], settings.max_new_tokens,
                                             step_tokens=step_tokens, minibatches=settings.minibatches)
            update_loss = 0.0
            for micro, batch in zip(micro_batches, batches):
                with torch.autocast(policy.device.type, dtype=policy.dtype, enabled=policy.dtype != torch.float32):
                    logprobs_BT, entropy_BT = completion_logprobs(policy.network, batch, settings.temperature, with_entropy=True)
                    ref_logprobs_BT = reference_logprobs(policy, batch, settings.temperature) if settings.beta > 0 else None
                if old_logprobs is None:  # on policy: this forward is the pre-update policy
                    totals["engine_logprob_gap"] += engine_gaps([rollouts[i] for i in micro], list(logprobs_BT.detach()))
                old_BT = logprobs_BT.detach() if old_logprobs is None else padded([old_logprobs[i] for i in micro], logprobs_BT.shape[1])
                per_token_BT, parts = per_token_objective(logprobs_BT, old_BT, advantages_B[micro].to(policy.device),
                                                          settings.epsilon_low, settings.epsilon_high, ref_logprobs_BT, settings.beta)
                micro_loss = aggregate(per_token_BT, batch.completion_mask_BT, normaliser)
                micro_loss.backward()
                update_loss += micro_loss.item()
                mask_BT = batch.completion_mask_BT.bool()
                for name in ("clipped_low", "clipped_high"):
                    totals[name] += parts[name][mask_BT].float().tolist()
                if "kl" in parts:
                    totals["kl"] += parts["kl"].detach()[mask_BT].tolist()
                totals["entropy"] += entropy_BT[mask_BT].tolist()
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, settings.max_grad_norm if settings.max_grad_norm > 0 else float("inf"))
            policy.optimizer.step()
            policy.scheduler.step()
            policy.optimizer.zero_grad(set_to_none=True)
            totals["loss"].append(update_loss)
            totals["grad_norm"].append(float(grad_norm))
    means = {name: sum(values) / len(values) if values else None for name, values in totals.items()}
    return UpdateStats(means["loss"], means["grad_norm"], means["entropy"], means["clipped_low"], means["clipped_high"], means["kl"],
                       means["engine_logprob_gap"])


def engine_gaps(rollouts: list[Rollout], policy_logprobs: list[torch.Tensor]) -> list[float]:
    """|policy - engine| log-prob of every completion token the engine reported one for."""
    gaps: list[float] = []
    for rollout, row in zip(rollouts, policy_logprobs):
        if rollout.engine_logprobs:
            engine = torch.tensor(rollout.engine_logprobs, device=row.device)
            gaps += (row[: len(engine)].float() - engine).abs().tolist()
    return gaps


def collate_rollouts(rollouts: list[Rollout], pad_id: int, device, mask_truncated: bool) -> RolloutTensors:
    """Prompts left-padded to one width, completions right-padded after them: the completion
    tokens then sit at the same positions in every row."""
    prompt_width = max(len(r.prompt_ids) for r in rollouts)
    completion_width = max(1, max(len(r.completion_ids) for r in rollouts))
    rows, masks, completion_masks = [], [], []
    for r in rollouts:
        left = prompt_width - len(r.prompt_ids)
        right = completion_width - len(r.completion_ids)
        rows.append([pad_id] * left + r.prompt_ids + r.completion_ids + [pad_id] * right)
        masks.append([0] * left + [1] * (len(r.prompt_ids) + len(r.completion_ids)) + [0] * right)
        keep = 0 if (mask_truncated and r.truncated) else 1
        completion_masks.append([keep] * len(r.completion_ids) + [0] * right)
    attention_mask_BL = torch.tensor(masks, device=device)
    return RolloutTensors(
        input_ids_BL=torch.tensor(rows, device=device),
        attention_mask_BL=attention_mask_BL,
        position_ids_BL=(attention_mask_BL.cumsum(-1) - 1).clamp(min=0),
        completion_mask_BT=torch.tensor(completion_masks, device=device, dtype=torch.float32),
        prompt_width=prompt_width,
    )


def completion_logprobs(network, batch: RolloutTensors, temperature: float, with_entropy: bool = False):
    """Log-probabilities of the completion tokens under logits / temperature (as they were
    sampled), [B, T]; with WITH_ENTROPY also each position's entropy (no gradient)."""
    logits = network(input_ids=batch.input_ids_BL, attention_mask=batch.attention_mask_BL,
                     position_ids=batch.position_ids_BL, use_cache=False).logits
    logits_BTV = logits[:, batch.prompt_width - 1 : -1].float() / max(temperature, 1e-6)
    logprobs_BTV = logits_BTV.log_softmax(-1)
    tokens_BT = batch.input_ids_BL[:, batch.prompt_width :]
    logprobs_BT = logprobs_BTV.gather(-1, tokens_BT[..., None]).squeeze(-1)
    if not with_entropy:
        return logprobs_BT
    with torch.no_grad():
        entropy_BT = -(logprobs_BTV.exp() * logprobs_BTV).sum(-1)
    return logprobs_BT, entropy_BT


@torch.no_grad()
def reference_logprobs(policy: Policy, batch: RolloutTensors, temperature: float) -> torch.Tensor:
    if policy.is_adapter:  # the reference is the same model with the adapter switched off: no second copy
        with policy.network.disable_adapter():
            return completion_logprobs(policy.network, batch, temperature)
    return completion_logprobs(policy.reference, batch, temperature)


@torch.no_grad()
def old_policy_logprobs(policy: Policy, rollouts: list[Rollout], temperature: float) -> list[torch.Tensor]:
    """π_old: each rollout's completion log-probabilities under the policy before this step's updates."""
    out = []
    for rollout in rollouts:
        batch = collate_rollouts([rollout], policy.pad_id, policy.device, mask_truncated=False)
        with torch.autocast(policy.device.type, dtype=policy.dtype, enabled=policy.dtype != torch.float32):
            out.append(completion_logprobs(policy.network, batch, temperature)[0, : len(rollout.completion_ids)])
    return out


def padded(rows: list[torch.Tensor], width: int) -> torch.Tensor:
    return torch.stack([torch.nn.functional.pad(row, (0, width - row.shape[0])) for row in rows])


def split(items: list[int], parts: int) -> list[list[int]]:
    size = -(-len(items) // parts)
    return [items[i : i + size] for i in range(0, len(items), size)]
