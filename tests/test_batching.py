"""Token-budget micro-batches: the update is the same however the rollouts or rows are split."""

from __future__ import annotations

import json
import random

import pytest
import torch
from conftest import write_jsonl
from safetensors.torch import load_file

from r1cli.commands.sft import sft
from r1cli.modeling import load_model
from r1cli.rl.policy import Policy, UpdateSettings, padded_tokens, token_budget_batches, update_policy
from r1cli.rl.rollouts import Rollout
from r1cli.train.batching import token_budget, within_budget
from r1cli.train.optim import make_optimizer, make_scheduler


def ragged_rollouts(vocab: int, count: int = 12, seed: int = 0) -> list[Rollout]:
    rng = random.Random(seed)
    rollouts = []
    for i in range(count):
        prompt = [rng.randrange(3, vocab) for _ in range(rng.randint(3, 9))]
        completion = [rng.randrange(3, vocab) for _ in range(rng.randint(1, 20))]
        engine = [-rng.random() * 4 for _ in completion] if i % 3 else []  # some rollouts carry no engine log-probs
        rollouts.append(Rollout(prompt, completion, reward=None, truncated=i % 5 == 0, scores={}, sample={}, engine_logprobs=engine))
    return rollouts


def make_policy(checkpoint, beta: float) -> Policy:
    network, tokenizer = load_model(str(checkpoint), seed=0)
    reference = load_model(str(checkpoint), seed=0)[0].eval().requires_grad_(False) if beta > 0 else None
    optimizer = make_optimizer(network, 1e-3, 0.0, (0.9, 0.95), 1e-8)
    scheduler = make_scheduler(optimizer, schedule="constant", warmup=0, total_steps=10, min_lr_ratio=0.1)
    return Policy(network, reference, optimizer, scheduler, torch.device("cpu"), torch.float32, tokenizer.pad_token_id)


SETTINGS = {
    "grpo, KL to the reference": dict(loss="grpo", beta=0.04, iterations=1, minibatches=1, grad_accum=1, mask_truncated=False),
    "dapo, mu 2, M 2, masked truncation": dict(loss="dapo", beta=0.0, iterations=2, minibatches=2, grad_accum=1, mask_truncated=True),
    "dr_grpo, grad accumulation 2": dict(loss="dr_grpo", beta=0.04, iterations=1, minibatches=1, grad_accum=2, mask_truncated=False),
}


@pytest.mark.parametrize("name", SETTINGS)
def test_a_token_budget_update_equals_the_unsplit_one(tiny_checkpoint, name):
    rollouts = ragged_rollouts(vocab=60)
    advantages_B = torch.tensor([random.Random(1).uniform(-1, 1) for _ in rollouts])
    budget = 48  # a few rollouts per micro-batch: the step is split into many
    batches = token_budget_batches(list(range(len(rollouts))), rollouts, 1, budget)
    assert len(batches) >= 4 and sorted(i for b in batches for i in b) == list(range(len(rollouts)))
    assert all(len(b) == 1 or padded_tokens(b, rollouts) <= budget for b in batches)

    results = []
    for max_tokens in (None, budget):
        policy = make_policy(tiny_checkpoint, SETTINGS[name]["beta"])
        settings = UpdateSettings(temperature=0.7, epsilon_low=0.2, epsilon_high=0.28, max_new_tokens=20, max_grad_norm=1.0,
                                  order_seed=5, max_tokens_per_batch=max_tokens, **SETTINGS[name])
        stats = update_policy(policy, rollouts, advantages_B, settings)
        results.append((stats, {n: p.detach().clone() for n, p in policy.network.named_parameters()}))
    (whole, whole_weights), (split, split_weights) = results
    for parameter in whole_weights:
        torch.testing.assert_close(split_weights[parameter], whole_weights[parameter], atol=1e-5, rtol=1e-5, msg=parameter)
    assert any((whole_weights[p] != make_policy(tiny_checkpoint, 0).network.state_dict()[p]).any() for p in whole_weights)
    for metric, value in whole.as_metrics().items():
        assert getattr(split, metric) == pytest.approx(value, rel=1e-4, abs=1e-6), metric
    assert whole.engine_logprob_gap is not None and whole.entropy > 0


def test_engine_gap_and_entropy_are_means_over_the_right_tokens(tiny_checkpoint):
    """Independent of the micro-batching: the gap averages |policy - engine| over the tokens the
    engine reported, computed here one rollout at a time through the model's full logits."""
    rollouts = ragged_rollouts(vocab=60, count=5, seed=3)
    policy = make_policy(tiny_checkpoint, 0.0)
    gaps, entropies = [], []
    with torch.no_grad():
        for r in rollouts:
            logits = policy.network(input_ids=torch.tensor([r.prompt_ids + r.completion_ids])).logits[0]
            logprobs = (logits[len(r.prompt_ids) - 1 : -1] / 0.7).log_softmax(-1)
            token = logprobs.gather(-1, torch.tensor(r.completion_ids)[:, None]).squeeze(-1)
            gaps += (token[: len(r.engine_logprobs)] - torch.tensor(r.engine_logprobs)).abs().tolist()
            entropies += (-(logprobs.exp() * logprobs).sum(-1)).tolist()
    settings = UpdateSettings("grpo", 0.7, 0.2, 0.2, 0.0, 1, 1, 1, False, 20, 1.0, 0, max_tokens_per_batch=30)
    stats = update_policy(policy, rollouts, torch.zeros(len(rollouts)), settings)
    assert stats.engine_logprob_gap == pytest.approx(sum(gaps) / len(gaps), rel=1e-5)
    assert stats.entropy == pytest.approx(sum(entropies) / len(entropies), rel=1e-5)


def test_within_budget_keeps_a_fitting_batch_as_it_is_and_sorts_a_split_one():
    lengths = {0: 5, 1: 2, 2: 9, 3: 3, 4: 1}
    size = lambda group: len(group) * max(lengths[i] for i in group)  # noqa: E731
    assert within_budget([2, 0, 1], size, lengths.get, 27) == [[2, 0, 1]]
    assert within_budget([2, 0, 1, 3, 4], size, lengths.get, 10) == [[4, 1, 3], [0], [2]]
    assert within_budget([2, 0, 1], size, lengths.get, None) == [[2, 0, 1]]
    assert within_budget([], size, lengths.get, 10) == []


def test_the_default_budget_is_a_power_of_two_from_the_model_and_an_explicit_one_wins(tiny_checkpoint):
    network = load_model(str(tiny_checkpoint), seed=0)[0]
    auto = token_budget(None, network, torch.device("cpu"), torch.float32, checkpointing=False)
    assert auto >= 1024 and auto & (auto - 1) == 0
    assert token_budget(None, network, torch.device("cpu"), torch.float32, checkpointing=True) >= auto
    assert token_budget(777, network, torch.device("cpu"), torch.float32, checkpointing=False) == 777


def test_sft_with_a_token_budget_trains_the_same_weights(tmp_path, tiny_config, chat_records):
    data = write_jsonl(tmp_path / "d.jsonl", chat_records)
    common = dict(max_steps=2, lr=1e-3, batch_size=6, warmup=0, seed=0, device="cpu", dtype="fp32", save_every=0)
    sft(str(tiny_config), [str(data)], tmp_path / "whole", **common)
    sft(str(tiny_config), [str(data)], tmp_path / "split", max_tokens_per_batch=64, **common)
    whole, split = (load_file(tmp_path / run / "model.safetensors") for run in ("whole", "split"))
    for name in whole:
        torch.testing.assert_close(split[name], whole[name], atol=1e-5, rtol=1e-5, msg=name)
    losses = [[json.loads(line)["loss"] for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()] for run in ("whole", "split")]
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)


def test_gradient_checkpointing_with_chunked_scores_and_a_budget_changes_nothing(tiny_checkpoint):
    rollouts = ragged_rollouts(vocab=60, count=8, seed=7)
    advantages_B = torch.linspace(-1, 1, len(rollouts))
    weights = []
    for checkpointing, max_tokens in ((False, None), (True, 40)):
        policy = make_policy(tiny_checkpoint, 0.04)
        if checkpointing:
            policy.network.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        settings = UpdateSettings("grpo", 1.0, 0.2, 0.2, 0.04, 1, 1, 1, False, 20, 1.0, 0, max_tokens_per_batch=max_tokens)
        update_policy(policy, rollouts, advantages_B, settings)
        weights.append({n: p.detach().clone() for n, p in policy.network.named_parameters()})
    for name in weights[0]:
        torch.testing.assert_close(weights[1][name], weights[0][name], atol=1e-5, rtol=1e-5, msg=name)


def test_the_off_policy_engine_gap_is_measured_on_pi_old(tiny_checkpoint):
    """With mu 2 the gap comes from pi_old's batched pass: the same figure as on policy, before any update."""
    rollouts = ragged_rollouts(vocab=60, count=6, seed=4)
    gaps = []
    for iterations in (1, 2):
        policy = make_policy(tiny_checkpoint, 0.0)
        settings = UpdateSettings("grpo", 0.7, 0.2, 0.2, 0.0, iterations, 1, 1, False, 20, 1.0, 0, max_tokens_per_batch=30)
        gaps.append(update_policy(policy, rollouts, torch.linspace(-1, 1, len(rollouts)), settings).engine_logprob_gap)
    assert gaps[1] == pytest.approx(gaps[0], rel=1e-6) and gaps[0] > 0
