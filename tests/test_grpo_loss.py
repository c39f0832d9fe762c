"""The GRPO objective against direct computations: loops over completions and tokens."""

import math

import pytest
import torch

from r1cli.grpo_loss import Normaliser, aggregate, group_advantages, k3_kl, per_token_objective


def random_step(seed: int, completions: int = 6, width: int = 7):
    generator = torch.Generator().manual_seed(seed)
    logprobs = -torch.rand(completions, width, generator=generator, dtype=torch.float64) * 3
    old = logprobs + (torch.rand(completions, width, generator=generator, dtype=torch.float64) - 0.5) * 0.8  # both clip sides
    ref = logprobs + (torch.rand(completions, width, generator=generator, dtype=torch.float64) - 0.5)
    lengths = torch.randint(1, width + 1, (completions,), generator=generator)
    mask = (torch.arange(width)[None, :] < lengths[:, None]).double()  # right padding
    advantages = torch.randn(completions, generator=generator, dtype=torch.float64)  # both signs
    return logprobs, old, ref, mask, advantages


def direct_loss(logprobs, old, ref, mask, advantages, eps_low, eps_high, beta, loss_type, max_length):
    per_completion, total_tokens, total = [], 0, 0.0
    for i in range(logprobs.shape[0]):
        terms = []
        for t in range(logprobs.shape[1]):
            if mask[i, t] == 0:
                continue
            lp, old_lp, ref_lp, a = logprobs[i, t].item(), old[i, t].item(), ref[i, t].item(), advantages[i].item()
            rho = math.exp(lp - old_lp)
            objective = min(rho * a, min(max(rho, 1 - eps_low), 1 + eps_high) * a)
            d = math.exp(ref_lp - lp) - (ref_lp - lp) - 1
            terms.append(-(objective - beta * d))
        per_completion.append(sum(terms) / len(terms))
        total += sum(terms)
        total_tokens += len(terms)
    if loss_type == "grpo":
        return sum(per_completion) / len(per_completion)
    if loss_type == "dapo":
        return total / total_tokens
    return total / (logprobs.shape[0] * max_length)


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
@pytest.mark.parametrize("seed", range(5))
def test_each_loss_type_equals_a_direct_computation(loss_type, seed):
    logprobs, old, ref, mask, advantages = random_step(seed)
    eps_low, eps_high, beta = 0.2, 0.28, 0.04
    loss, _ = per_token_objective(logprobs, old, advantages, eps_low, eps_high, ref, beta)
    normaliser = Normaliser.for_step(loss_type, [mask], max_completion_length=10)
    ours = aggregate(loss, mask, normaliser).item()
    assert ours == pytest.approx(direct_loss(logprobs, old, ref, mask, advantages, eps_low, eps_high, beta, loss_type, 10), rel=1e-10)


def test_both_clip_sides_are_exercised_and_counted():
    logprobs, old, ref, mask, advantages = random_step(0, completions=40)
    _, parts = per_token_objective(logprobs, old, advantages, 0.1, 0.1)
    assert parts["clipped_low"].any() and parts["clipped_high"].any()
    ratio = torch.exp(logprobs - old)
    assert torch.equal(parts["clipped_high"], (ratio > 1.1) & (advantages[:, None] > 0))


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_on_policy_gradient_equals_the_policy_gradient_of_the_aggregation(loss_type):
    """mu = 1, beta = 0: rho = 1 and the gradient is that of -sum A log pi under the aggregation."""
    _, _, _, mask, advantages = random_step(3)
    logits = torch.randn(6, 7, 5, dtype=torch.float64, requires_grad=True)
    tokens = torch.randint(0, 5, (6, 7))
    logprobs = logits.log_softmax(-1).gather(-1, tokens[..., None]).squeeze(-1)
    normaliser = Normaliser.for_step(loss_type, [mask], max_completion_length=9)
    loss, _ = per_token_objective(logprobs, logprobs.detach(), advantages, 0.2, 0.2)
    (ours,) = torch.autograd.grad(aggregate(loss, mask, normaliser), logits, retain_graph=True)
    surrogate = -advantages[:, None] * logprobs
    (expected,) = torch.autograd.grad(aggregate(surrogate, mask, normaliser), logits)
    assert torch.allclose(ours, expected, atol=1e-12)
    assert aggregate(loss, mask, normaliser).item() == pytest.approx(aggregate(-advantages[:, None].expand(6, 7), mask, normaliser).item())


def test_k3_is_non_negative_and_zero_where_the_policies_agree():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(1000, generator=generator), torch.randn(1000, generator=generator)
    assert (k3_kl(a, b) >= 0).all() and torch.equal(k3_kl(a, a), torch.zeros(1000))


def test_advantages_per_group_batch_and_none_and_zero_std_groups():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])  # second group uniform
    group = group_advantages(rewards, 4, "group")
    first = rewards[:4]
    assert torch.allclose(group[:4], (first - first.mean()) / (first.std() + 1e-4))
    assert torch.equal(group[4:], torch.zeros(4))  # zero std: no signal, not a division by zero
    batch = group_advantages(rewards, 4, "batch")
    assert torch.allclose(batch[:4], (first - first.mean()) / (rewards.std() + 1e-4))
    assert torch.allclose(group_advantages(rewards, 4, "none"), torch.tensor([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]))


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_splitting_a_step_into_micro_batches_changes_nothing(loss_type):
    logprobs, old, ref, mask, advantages = random_step(7, completions=8)
    normaliser = Normaliser.for_step(loss_type, [mask[:3], mask[3:5], mask[5:]], max_completion_length=7)
    whole = aggregate(per_token_objective(logprobs, old, advantages, 0.2, 0.3, ref, 0.01)[0], mask, normaliser)
    split = sum(
        aggregate(per_token_objective(logprobs[s], old[s], advantages[s], 0.2, 0.3, ref[s], 0.01)[0], mask[s], normaliser)
        for s in (slice(0, 3), slice(3, 5), slice(5, 8))
    )
    assert split.item() == pytest.approx(whole.item(), rel=1e-12)
