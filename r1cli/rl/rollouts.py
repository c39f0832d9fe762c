"""Rollouts: P prompts, G completions each, scored; the groups GRPO learns from.

A rollout's seed is derived from the run's seed, the place of its prompt draw in the run and its
index in the group, so a resumed run samples exactly what an uninterrupted one would have, and a
refill of skipped groups draws fresh seeds rather than the next step's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from r1cli.data.records import Record, sample_record
from r1cli.engines.base import Engine, SamplingOptions
from r1cli.errors import UserError
from r1cli.rewards.registry import Scorer
from r1cli.rl.loss import group_advantages
from r1cli.seeding import derive_seed, python_random

MAX_REFILLS = 8  # draws of fresh prompts to replace groups skipped as uniform, per step


@dataclass
class Rollout:
    """One completion with what training and logging need."""

    prompt_ids: list[int]
    completion_ids: list[int]
    reward: float | None  # the weighted total; None: no reward applies to it
    truncated: bool  # cut at --max-new-tokens
    scores: dict[str, float | None]  # each reward's score
    sample: dict  # the sample record (prompt fields, completion, reasoning, response)
    engine_logprobs: list[float] = field(default_factory=list)  # each token's log-prob as the engine sampled it


@dataclass
class Group:
    """The G completions of one prompt."""

    prompt_index: int
    rollouts: list[Rollout]


@dataclass
class RolloutBatch:
    """A step's groups, and what was spent and skipped getting them."""

    groups: list[Group]
    uniform_groups: int  # groups dropped because every member scored the same
    generate_seconds: float
    score_seconds: float

    @property
    def rollouts(self) -> list[Rollout]:
        return [rollout for group in self.groups for rollout in group.rollouts]

    def advantages(self, group_size: int, scale: str) -> torch.Tensor:
        """Group-relative advantages, [B]; a completion no reward applies to gets 0 and stays
        out of its group's mean and std."""
        rollouts = self.rollouts
        valid_B = torch.tensor([r.reward is not None for r in rollouts])
        rewards_B = torch.tensor([0.0 if r.reward is None else r.reward for r in rollouts])
        return group_advantages(rewards_B, group_size, scale, valid_B)


@dataclass
class PromptSet:
    """The run's prompt records and their tokens (tokenized once: generation and training see the same)."""

    records: list[Record]
    prompt_ids: list[list[int]]


class PromptStream:
    """Prompt indices in a fresh seeded order each epoch; its position is one number (consumed)."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.consumed = size, seed, 0

    def next(self) -> int:
        epoch, offset = divmod(self.consumed, self.size)
        order = list(range(self.size))
        python_random(self.seed, "prompt-order", epoch).shuffle(order)
        self.consumed += 1
        return order[offset]


def collect_groups(engine: Engine, scorer: Scorer, prompts: PromptSet, stream: PromptStream, sampling: SamplingOptions, *,
                   prompts_per_step: int, num_generations: int, skip_uniform_groups: bool) -> RolloutBatch:
    """Sample and score groups until the step has PROMPTS_PER_STEP of them (skipping groups whose
    rewards are all equal when asked, and drawing fresh prompts in their place)."""
    groups: list[Group] = []
    uniform, generate_seconds, score_seconds = 0, 0.0, 0.0
    for _refill in range(MAX_REFILLS if skip_uniform_groups else 1):
        wanted = prompts_per_step - len(groups)
        positions = [stream.consumed + offset for offset in range(wanted)]  # each prompt draw's place in the run
        chosen = [stream.next() for _ in range(wanted)]
        seeds = [[derive_seed(sampling.seed, "rollout", position, k) for k in range(num_generations)] for position in positions]
        began = time.time()
        generated = engine.generate_ids([prompts.prompt_ids[i] for i in chosen], sampling, seeds=seeds)
        generate_seconds += time.time() - began

        began = time.time()
        samples = [sample_record(prompts.records[i], k, c) for i, completions in zip(chosen, generated) for k, c in enumerate(completions)]
        scores = scorer.score(samples)
        for g, (index, completions) in enumerate(zip(chosen, generated)):
            members = range(g * num_generations, (g + 1) * num_generations)
            rollouts = [Rollout(prompts.prompt_ids[index], completion.token_ids, scorer.total_if_scored(scores[m]),
                                completion.finish_reason == "length", scores[m], samples[m], completion.logprobs)
                        for m, completion in zip(members, completions)]
            scored = [r.reward for r in rollouts if r.reward is not None]
            if skip_uniform_groups and (len(scored) < 2 or max(scored) == min(scored)):
                uniform += 1
                continue
            groups.append(Group(index, rollouts))
        score_seconds += time.time() - began
        if len(groups) >= prompts_per_step:
            break
    if not groups:
        raise UserError("every sampled group had uniform rewards; nothing to learn from (try without --skip-uniform-groups)")
    return RolloutBatch(groups, uniform, generate_seconds, score_seconds)
