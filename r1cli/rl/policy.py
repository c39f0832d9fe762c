"""The policy update of a GRPO step: μ passes over the rollouts in M minibatches, one optimizer
update each, on the clipped objective of `r1cli.rl.loss`.

Memory: each update's rollouts go through the model in micro-batches of at most
`max_tokens_per_batch` padded tokens (length-sorted when they must be split), and completion
tokens are scored from the final hidden states in chunks (`r1cli.train.logprobs`), so no
[batch, length, vocabulary] logits exist. The loss normalisers are the update's, so neither
changes the result. Metrics stay on the device until one read per optimizer update.

Under torchrun the rollouts handed in are the step's over every rank, in one process's order,
None where another rank holds one: the minibatches are one process's, each rank passes its own
rollouts of them, the normalisers count every rank's (one all-reduce per update) and the
gradients are summed once, after an update's last pass. A rank with fewer micro-batches than
another runs zero-weight passes, so that every rank's FSDP collectives pair up.

Shapes: B rollouts in a micro-batch, T completion tokens (right-padded after left-padded prompts,
so every row's completion starts at the same position).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from r1cli.rl.loss import Normaliser, aggregate, per_token_objective
from r1cli.rl.rollouts import Rollout
from r1cli.train import distributed
from r1cli.train.batching import within_budget
from r1cli.train.logprobs import score_tokens


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
    world: distributed.World = distributed.World()  # the processes the network (and reference) are sharded over

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
    max_tokens_per_batch: int | None = None  # padded tokens per micro-batch at most; None: no limit


@dataclass
class RolloutTensors:
    """A micro-batch of rollouts as tensors."""

    input_ids_BL: torch.Tensor  # prompt (left-padded) then completion (right-padded): L = prompt width + T
    attention_mask_BL: torch.Tensor
    position_ids_BL: torch.Tensor
    completion_mask_BT: torch.Tensor  # 1.0 on the completion tokens that carry loss
    token_mask_BT: torch.Tensor  # True on every completion token (with loss or not)
    engine_logprobs_BT: torch.Tensor  # the log-prob the engine sampled each token with (0 where it gave none)
    engine_mask_BT: torch.Tensor  # True where the engine gave one
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


def update_policy(policy: Policy, rollouts: list[Rollout | None], advantages_B: torch.Tensor, settings: UpdateSettings) -> UpdateStats:
    """μ passes over ROLLOUTS in M minibatches, one optimizer update each. Normalisers are taken
    over the whole update, so --grad-accum and the token budget change nothing; dapo with M
    minibatches divides each update by the step's tokens / M, so updates have equal scale (TRL's convention).
    Under torchrun ROLLOUTS (and ADVANTAGES_B) are every rank's, another rank's rollouts None."""
    policy.network.train()
    order_rng = random.Random(settings.order_seed)
    on_policy = settings.iterations == 1 and settings.minibatches == 1
    totals = Totals(policy.device, policy.world)
    old_logprobs = None if on_policy else old_policy_logprobs(policy, rollouts, settings, totals)
    trainable = [p for p in policy.network.parameters() if p.requires_grad]
    step_tokens = UpdateCounts.summed(policy, 0, sum(len(r.completion_ids) for r in rollouts
                                                     if r is not None and not (settings.mask_truncated and r.truncated)), 0).tokens
    for _ in range(settings.iterations):
        order = list(range(len(rollouts)))
        if not on_policy:
            order_rng.shuffle(order)
        for minibatch in split(order, settings.minibatches):
            # One optimizer update: this rank's rollouts of it in micro-batches within the token
            # budget, the update's normaliser over every rank's.
            mine = [i for i in minibatch if rollouts[i] is not None]
            micro_batches = token_budget_batches(mine, rollouts, settings.grad_accum, settings.max_tokens_per_batch)
            batches = [collate_rollouts([rollouts[i] for i in micro], policy.pad_id, policy.device, settings.mask_truncated)
                       for micro in micro_batches]
            counts = UpdateCounts.summed(policy, sum(map(len, micro_batches)), sum(b.completion_mask_BT.sum() for b in batches), len(batches))
            normaliser = Normaliser.from_counts(settings.loss, counts.completions, counts.tokens, settings.max_new_tokens,
                                                step_tokens=step_tokens, minibatches=settings.minibatches)
            update_loss = torch.zeros((), device=policy.device)
            for index in range(counts.passes):
                distributed.gradient_sync(policy.network, index == counts.passes - 1)  # one reduction an update, after its last pass
                if index >= len(batches):
                    padding_pass(policy, settings, update=True)
                    continue
                micro, batch = micro_batches[index], batches[index]
                with torch.autocast(policy.device.type, dtype=policy.dtype, enabled=policy.dtype != torch.float32):
                    logprobs_BT, entropy_BT = completion_logprobs(policy.network, batch, settings.temperature, with_entropy=True)
                    ref_logprobs_BT = reference_logprobs(policy, batch, settings.temperature) if settings.beta > 0 else None
                if old_logprobs is None:  # on policy: this forward is the pre-update policy
                    totals.add_engine_gap(logprobs_BT.detach(), batch)
                old_BT = logprobs_BT.detach() if old_logprobs is None else padded([old_logprobs[i] for i in micro], logprobs_BT.shape[1])
                per_token_BT, parts = per_token_objective(logprobs_BT, old_BT, advantages_B[micro].to(policy.device),
                                                          settings.epsilon_low, settings.epsilon_high, ref_logprobs_BT, settings.beta)
                micro_loss = aggregate(per_token_BT, batch.completion_mask_BT, normaliser)
                micro_loss.backward()
                update_loss += micro_loss.detach()
                totals.add_tokens(batch.completion_mask_BT.bool(), entropy_BT.detach(), parts)
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, settings.max_grad_norm if settings.max_grad_norm > 0 else float("inf"))
            policy.optimizer.step()
            policy.scheduler.step()
            policy.optimizer.zero_grad(set_to_none=True)
            totals.end_update(update_loss, distributed.full_value(grad_norm))
    if policy.reference is not None:
        distributed.reshard_root(policy.reference)  # its forwards have no backward
    return totals.stats(with_kl=settings.beta > 0)


@dataclass(frozen=True)
class UpdateCounts:
    """Counts over every rank: an update's completions and loss-carrying tokens, and the most
    micro-batch passes any rank runs (the others pad to it with zero-weight passes)."""

    completions: int
    tokens: int
    passes: int

    @classmethod
    def summed(cls, policy: Policy, completions: int, tokens: int | torch.Tensor, passes: int) -> UpdateCounts:
        """This rank's counts summed over the ranks in one all-reduce (one process: as they are);
        each rank's pass count goes in a slot of its own, so that the sum holds every rank's."""
        world = policy.world
        counts = torch.zeros(2 + world.world_size, dtype=torch.float64, device=policy.device)
        counts[0], counts[1], counts[2 + world.rank] = completions, tokens, passes
        values = world.sum(counts).tolist()
        return cls(int(values[0]), int(values[1]), int(max(values[2:])))


def padding_pass(policy: Policy, settings: UpdateSettings, update: bool) -> None:
    """A zero-weight pass over a one-token filler, what a rank runs while another runs a real
    micro-batch: the policy's forward, and in an UPDATE the reference's forward and a backward."""
    filler = Rollout([policy.pad_id], [policy.pad_id], None, False, {}, {})
    batch = collate_rollouts([filler], policy.pad_id, policy.device, mask_truncated=False)
    with torch.autocast(policy.device.type, dtype=policy.dtype, enabled=policy.dtype != torch.float32):
        logprobs_BT = completion_logprobs(policy.network, batch, settings.temperature)
        if update and settings.beta > 0:
            reference_logprobs(policy, batch, settings.temperature)
    if update:
        (logprobs_BT.sum() * 0.0).backward()


class Totals:
    """The update's metrics as sums on the device; read to the host once per optimizer update."""

    TOKEN_SUMS = ("entropy", "clipped_low", "clipped_high", "kl")

    def __init__(self, device: torch.device, world: distributed.World = distributed.World()):
        self.world = world  # the sums are each rank's own until `end_update` and `stats` add them up
        zeros = lambda: torch.zeros((), dtype=torch.float64, device=device)  # noqa: E731
        self.sums = {name: zeros() for name in (*self.TOKEN_SUMS, "tokens", "gap", "gap_tokens")}
        self.updates: list[tuple[float, float]] = []  # (loss, grad norm) of each update

    def add_tokens(self, mask_BT: torch.Tensor, entropy_BT: torch.Tensor, parts: dict[str, torch.Tensor]) -> None:
        # torch.where, not boolean indexing: indexing would wait for the device to size its result.
        self.sums["tokens"] += mask_BT.sum()
        self.sums["entropy"] += torch.where(mask_BT, entropy_BT.double(), 0.0).sum()
        for name in ("clipped_low", "clipped_high", "kl"):
            if name in parts:
                self.sums[name] += torch.where(mask_BT, parts[name].detach().double(), 0.0).sum()

    def add_engine_gap(self, policy_logprobs_BT: torch.Tensor, batch: RolloutTensors) -> None:
        gap_BT = (policy_logprobs_BT.float() - batch.engine_logprobs_BT).abs()
        self.sums["gap"] += torch.where(batch.engine_mask_BT, gap_BT.double(), 0.0).sum()
        self.sums["gap_tokens"] += batch.engine_mask_BT.sum()

    def end_update(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        """LOSS (this rank's share, summed over the ranks here) and GRAD_NORM (already the whole gradient's)."""
        loss = self.world.sum(loss.clone())
        loss_value, norm_value = torch.stack([loss.double(), torch.as_tensor(grad_norm).double().to(loss.device)]).tolist()
        self.updates.append((loss_value, norm_value))

    def stats(self, with_kl: bool) -> UpdateStats:
        sums = dict(zip(self.sums, self.world.sum(torch.stack(list(self.sums.values()))).tolist()))
        per_token = {name: sums[name] / sums["tokens"] if sums["tokens"] else None for name in self.TOKEN_SUMS}
        gap = sums["gap"] / sums["gap_tokens"] if sums["gap_tokens"] else None
        losses, norms = zip(*self.updates) if self.updates else ((), ())
        mean = lambda values: sum(values) / len(values) if values else None  # noqa: E731
        return UpdateStats(mean(losses), mean(norms), per_token["entropy"], per_token["clipped_low"], per_token["clipped_high"],
                           per_token["kl"] if with_kl else None, gap)


def token_budget_batches(indices: list[int], rollouts: list[Rollout], grad_accum: int, max_tokens: int | None) -> list[list[int]]:
    """INDICES in GRAD_ACCUM micro-batches, each split further, where it holds more than
    MAX_TOKENS padded tokens (rows x (widest prompt + longest completion)), into runs of
    length-sorted rollouts that fit."""
    return [batch for micro in split(indices, grad_accum)
            for batch in within_budget(micro, lambda group: padded_tokens(group, rollouts),
                                       lambda i: len(rollouts[i].prompt_ids) + len(rollouts[i].completion_ids), max_tokens)]


def padded_tokens(indices: list[int], rollouts: list[Rollout]) -> int:
    prompt = max(len(rollouts[i].prompt_ids) for i in indices)
    completion = max(1, max(len(rollouts[i].completion_ids) for i in indices))
    return len(indices) * (prompt + completion)


def collate_rollouts(rollouts: list[Rollout], pad_id: int, device, mask_truncated: bool) -> RolloutTensors:
    """Prompts left-padded to one width, completions right-padded after them: the completion
    tokens then sit at the same positions in every row."""
    prompt_width = max(len(r.prompt_ids) for r in rollouts)
    completion_width = max(1, max(len(r.completion_ids) for r in rollouts))
    rows, masks, completion_masks, engine_rows, engine_masks = [], [], [], [], []
    for r in rollouts:
        left = prompt_width - len(r.prompt_ids)
        right = completion_width - len(r.completion_ids)
        rows.append([pad_id] * left + r.prompt_ids + r.completion_ids + [pad_id] * right)
        masks.append([0] * left + [1] * (len(r.prompt_ids) + len(r.completion_ids)) + [0] * right)
        keep = 0 if (mask_truncated and r.truncated) else 1
        completion_masks.append([keep] * len(r.completion_ids) + [0] * right)
        engine = r.engine_logprobs[: len(r.completion_ids)]
        engine_rows.append(engine + [0.0] * (completion_width - len(engine)))
        engine_masks.append([True] * len(engine) + [False] * (completion_width - len(engine)))
    attention_mask_BL = torch.tensor(masks, device=device)
    lengths_B = torch.tensor([len(r.completion_ids) for r in rollouts], device=device)
    return RolloutTensors(
        input_ids_BL=torch.tensor(rows, device=device),
        attention_mask_BL=attention_mask_BL,
        position_ids_BL=(attention_mask_BL.cumsum(-1) - 1).clamp(min=0),
        completion_mask_BT=torch.tensor(completion_masks, device=device, dtype=torch.float32),
        token_mask_BT=torch.arange(completion_width, device=device)[None, :] < lengths_B[:, None],
        engine_logprobs_BT=torch.tensor(engine_rows, device=device, dtype=torch.float32),
        engine_mask_BT=torch.tensor(engine_masks, device=device, dtype=torch.bool),
        prompt_width=prompt_width,
    )


def completion_logprobs(network, batch: RolloutTensors, temperature: float, with_entropy: bool = False):
    """Log-probabilities of the completion tokens under logits / temperature (as they were
    sampled), [B, T] (0 past each completion); with WITH_ENTROPY also each position's entropy."""
    inputs = {"input_ids": batch.input_ids_BL, "attention_mask": batch.attention_mask_BL, "position_ids": batch.position_ids_BL}
    # The token at position p is predicted at p - 1: completion tokens from the prompt's last position on.
    scored_BL = torch.zeros_like(batch.input_ids_BL, dtype=torch.bool)
    scored_BL[:, batch.prompt_width - 1 : -1] = batch.token_mask_BT
    targets_N = batch.input_ids_BL[:, batch.prompt_width :][batch.token_mask_BT]
    scores = distributed.in_root_forward(network, score_tokens, network, inputs, scored_BL, targets_N, temperature, with_entropy)
    zeros_BT = torch.zeros(batch.token_mask_BT.shape, dtype=torch.float32, device=batch.input_ids_BL.device)
    logprobs_BT = zeros_BT.masked_scatter(batch.token_mask_BT, scores.logprobs_N)
    if not with_entropy:
        return logprobs_BT
    return logprobs_BT, zeros_BT.masked_scatter(batch.token_mask_BT, scores.entropy_N.detach())


@torch.no_grad()
def reference_logprobs(policy: Policy, batch: RolloutTensors, temperature: float) -> torch.Tensor:
    if policy.is_adapter:  # the reference is the same model with the adapter switched off: no second copy
        with policy.network.disable_adapter():
            return completion_logprobs(policy.network, batch, temperature)
    return completion_logprobs(policy.reference, batch, temperature)


@torch.no_grad()
def old_policy_logprobs(policy: Policy, rollouts: list[Rollout | None], settings: UpdateSettings, totals: Totals) -> list[torch.Tensor]:
    """π_old: each rollout's completion log-probabilities under the policy before this step's
    updates (this rank's; another rank's stay empty), in micro-batches of the token budget; the
    engine's log-prob gap measured on them."""
    out: list[torch.Tensor] = [torch.empty(0)] * len(rollouts)
    mine = [i for i, rollout in enumerate(rollouts) if rollout is not None]
    micro_batches = token_budget_batches(mine, rollouts, 1, settings.max_tokens_per_batch)
    for _ in range(len(micro_batches), UpdateCounts.summed(policy, 0, 0, len(micro_batches)).passes):
        padding_pass(policy, settings, update=False)  # as many forwards as the rank with the most
    for micro in micro_batches:
        batch = collate_rollouts([rollouts[i] for i in micro], policy.pad_id, policy.device, mask_truncated=False)
        with torch.autocast(policy.device.type, dtype=policy.dtype, enabled=policy.dtype != torch.float32):
            logprobs_BT = completion_logprobs(policy.network, batch, settings.temperature)
        totals.add_engine_gap(logprobs_BT, batch)
        for row, index in enumerate(micro):
            out[index] = logprobs_BT[row, : len(rollouts[index].completion_ids)]
    distributed.reshard_root(policy.network)  # no backward follows these forwards
    return out


def padded(rows: list[torch.Tensor], width: int) -> torch.Tensor:
    return torch.stack([torch.nn.functional.pad(row, (0, width - row.shape[0])) for row in rows])


def split(items: list[int], parts: int) -> list[list[int]]:
    size = max(1, -(-len(items) // parts))  # no items (a rank holding none of a minibatch): no parts
    return [items[i : i + size] for i in range(0, len(items), size)]
