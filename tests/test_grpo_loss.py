"""The GRPO objective against direct computations: loops over completions and tokens."""

import math
import random
import statistics

import pytest
import torch

from r1cli.rl.loss import Normaliser, aggregate, group_advantages, k3_kl, per_token_objective


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


def test_k3_equals_its_formula_and_its_mean_under_the_policy_is_the_kl():
    generator = torch.Generator().manual_seed(0)
    logprobs = -torch.rand(300, generator=generator, dtype=torch.float64) * 5
    ref_logprobs = -torch.rand(300, generator=generator, dtype=torch.float64) * 5
    ours = k3_kl(logprobs, ref_logprobs)
    for i in range(300):
        p, r = logprobs[i].item(), ref_logprobs[i].item()
        assert ours[i].item() == pytest.approx(math.exp(r - p) - (r - p) - 1, rel=1e-12, abs=1e-15)
    assert torch.equal(k3_kl(logprobs, logprobs), torch.zeros(300, dtype=torch.float64))

    # Tokens sampled from pi: the mean of k3 estimates KL(pi || pi_ref), not KL(pi_ref || pi).
    policy, reference = [0.5, 0.3, 0.15, 0.05], [0.1, 0.2, 0.3, 0.4]
    kl = sum(p * math.log(p / r) for p, r in zip(policy, reference))
    reverse_kl = sum(r * math.log(r / p) for p, r in zip(policy, reference))
    draws = 200_000
    tokens = torch.multinomial(torch.tensor(policy, dtype=torch.float64), draws, replacement=True, generator=generator)
    estimates = k3_kl(torch.tensor(policy, dtype=torch.float64).log()[tokens], torch.tensor(reference, dtype=torch.float64).log()[tokens])
    standard_error = estimates.std().item() / math.sqrt(draws)
    assert abs(estimates.mean().item() - kl) < 4 * standard_error
    assert abs(reverse_kl - kl) > 20 * standard_error  # the draws are enough to tell the two directions apart


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


def direct_advantages(rewards: list[float], valid: list[bool], group_size: int, scale: str) -> list[float]:
    """Plain Python: mean and std over each group's valid members; 0 for the invalid and for
    groups with fewer than two valid members."""
    batch = [r for r, v in zip(rewards, valid) if v]
    batch_std = statistics.stdev(batch) if len(batch) > 1 else 0.0
    advantages = []
    for start in range(0, len(rewards), group_size):
        members = list(zip(rewards[start : start + group_size], valid[start : start + group_size]))
        values = [r for r, v in members if v]
        if len(values) < 2:
            advantages += [0.0] * group_size
            continue
        centre = sum(values) / len(values)
        std = {"group": statistics.stdev(values), "batch": batch_std}.get(scale)
        for r, v in members:
            advantages.append(0.0 if not v else r - centre if std is None else (r - centre) / (std + 1e-4))
    return advantages


def test_advantages_of_a_group_with_a_member_no_reward_applies_to_by_hand():
    nan = float("nan")  # the placeholder of a completion without rewards must not matter
    rewards = torch.tensor([1.0, 0.0, nan, 1.0, 2.0, nan, nan, nan, nan, nan, nan, nan], dtype=torch.float64)
    valid = torch.tensor([True, True, False, True, True, False, False, False, False, False, False, False])
    advantages = group_advantages(rewards, 4, "group", valid)
    # Group 1: valid rewards 1, 0, 1: mean 2/3, sample std sqrt(((1/3)^2 + (2/3)^2 + (1/3)^2) / 2) = sqrt(1/3).
    std = math.sqrt(1 / 3) + 1e-4
    expected = [(1 / 3) / std, (-2 / 3) / std, 0.0, (1 / 3) / std] + [0.0] * 8  # groups 2 and 3: fewer than two valid
    assert advantages.tolist() == pytest.approx(expected, abs=1e-12)
    # The valid members get what a group of only them would get.
    assert advantages[[0, 1, 3]].tolist() == pytest.approx(group_advantages(rewards[[0, 1, 3]], 3, "group").tolist(), abs=1e-12)
    assert group_advantages(rewards, 4, "none", valid).tolist() == pytest.approx([1 / 3, -2 / 3, 0, 1 / 3] + [0.0] * 8, abs=1e-12)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_advantages_with_invalid_members_equal_a_direct_computation(scale):
    rng = random.Random(5)
    for _ in range(50):
        group_size = rng.randint(1, 6)
        size = group_size * rng.randint(1, 5)
        rewards = [float(rng.choice([0, 1, 2])) + rng.random() * rng.choice([0, 1]) for _ in range(size)]
        valid = [rng.random() < 0.7 for _ in range(size)]
        placeholders = [r if v else rng.choice([float("nan"), 0.0, -5.0]) for r, v in zip(rewards, valid)]
        ours = group_advantages(torch.tensor(placeholders, dtype=torch.float64), group_size, scale, torch.tensor(valid))
        assert ours.tolist() == pytest.approx(direct_advantages(rewards, valid, group_size, scale), abs=1e-9)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_advantages_are_unchanged_bit_for_bit_when_every_member_is_valid(scale):
    generator = torch.Generator().manual_seed(3)
    for group_size in (1, 4, 8):
        rewards = torch.randint(0, 3, (4 * group_size,), generator=generator).float() + torch.rand(4 * group_size, generator=generator)
        unmasked = group_advantages(rewards, group_size, scale)
        assert torch.equal(group_advantages(rewards, group_size, scale, torch.ones(4 * group_size, dtype=torch.bool)), unmasked)
        if group_size > 1:
            grouped = rewards.view(-1, group_size)
            centred = grouped - grouped.mean(dim=1, keepdim=True)
            std = {"group": grouped.std(dim=1, keepdim=True), "batch": rewards.std(), "none": None}[scale]
            assert torch.equal(unmasked, (centred if std is None else centred / (std + 1e-4)).flatten())


def test_dapo_over_minibatches_divides_every_update_by_the_steps_tokens_over_m():
    """M minibatches, one update each: each update's summed token loss is divided by the step's
    tokens / M, so a token weighs M / step_tokens in every update whatever its minibatch's
    length, and the M updates sum to M times the loss of the step as one batch."""
    logprobs, old, ref, mask, advantages = random_step(11, completions=9)
    loss_BT = per_token_objective(logprobs, old, advantages, 0.2, 0.28, ref, 0.04)[0].detach().requires_grad_()
    step_tokens, minibatches = int(mask.sum().item()), 3
    parts = [slice(0, 3), slice(3, 6), slice(6, 9)]
    assert len({mask[part].sum().item() for part in parts}) == 3  # unequal token counts: own-count divisors would differ
    updates = []
    for part in parts:
        micro_masks = [mask[part][:1], mask[part][1:]]  # micro-batches inside the update
        normaliser = Normaliser.for_step("dapo", micro_masks, max_completion_length=7, step_tokens=step_tokens, minibatches=minibatches)
        update = aggregate(loss_BT[part][:1], micro_masks[0], normaliser) + aggregate(loss_BT[part][1:], micro_masks[1], normaliser)
        summed = sum(loss_BT[i, t].item() for i in range(part.start, part.stop) for t in range(mask.shape[1]) if mask[i, t] == 1)
        assert update.item() == pytest.approx(summed / (step_tokens / minibatches), rel=1e-12)
        (weights,) = torch.autograd.grad(update, loss_BT)
        assert torch.allclose(weights[part], mask[part] * minibatches / step_tokens, rtol=0, atol=1e-15)
        updates.append(update.item())
    one_batch = aggregate(loss_BT, mask, Normaliser.for_step("dapo", [mask], max_completion_length=7)).item()
    assert sum(updates) == pytest.approx(minibatches * one_batch, rel=1e-12)


def test_the_minibatch_count_changes_only_dapo_and_dapo_needs_the_steps_tokens():
    _, _, _, mask, _ = random_step(2, completions=8)
    for loss_type in ("grpo", "dr_grpo"):
        plain = Normaliser.for_step(loss_type, [mask[:4]], max_completion_length=7)
        assert Normaliser.for_step(loss_type, [mask[:4]], max_completion_length=7, step_tokens=int(mask.sum()), minibatches=2) == plain
    assert Normaliser.for_step("dapo", [mask[:4]], 7).tokens == mask[:4].sum().item()
    assert Normaliser.for_step("dapo", [mask], 7, step_tokens=int(mask.sum()), minibatches=1).tokens == mask.sum().item()
    with pytest.raises(ValueError, match="needs step_tokens"):
        Normaliser.for_step("dapo", [mask[:4]], 7, minibatches=2)
