"""Rollouts: P prompts, G completions each, scored; the groups GRPO learns from.

A rollout's seed is derived from the run's seed, the place of its prompt draw in the run and its
index in the group, so a resumed run samples exactly what an uninterrupted one would have, and a
refill of skipped groups draws fresh seeds rather than the next step's.

Under torchrun every rank draws the same prompts of the step (the stream is the run's, seeded
alike) and generates and scores its share of them, round-robin by their places in the run; as
the engines' draws depend on a completion's own seed only, a completion is the same whichever
rank samples it. `gather_step` then lays every rank's numbers out in the order one process holds
its rollouts in, for the advantages, the metrics and the policy update.
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
from r1cli.train.distributed import World

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
    position: int = 0  # the place of its prompt draw in the run (the step's order over every rank)


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
                   prompts_per_step: int, num_generations: int, skip_uniform_groups: bool, world: World = World()) -> RolloutBatch:
    """Sample and score groups until the step has PROMPTS_PER_STEP of them (skipping groups whose
    rewards are all equal when asked, and drawing fresh prompts in their place). Under torchrun
    each rank samples its share of every draw (WORLD: its place) and the groups kept are counted
    over every rank; the batch holds this rank's."""
    groups: list[Group] = []
    kept, uniform, generate_seconds, score_seconds = 0, 0, 0.0, 0.0
    for _refill in range(MAX_REFILLS if skip_uniform_groups else 1):
        wanted = prompts_per_step - kept
        first = stream.consumed
        drawn = [stream.next() for _ in range(wanted)]
        # This rank's share of the draws, round-robin by their places in the run (each draw's place seeds its completions).
        positions = [position for position in range(first, first + wanted) if position % world.world_size == world.rank]
        chosen = [drawn[position - first] for position in positions]
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
            groups.append(Group(index, rollouts, positions[g]))
        score_seconds += time.time() - began
        kept = sum(world.gather(len(groups)))
        if kept >= prompts_per_step:
            break
    if not kept:
        raise UserError("every sampled group had uniform rewards; nothing to learn from (try without --skip-uniform-groups)")
    return RolloutBatch(groups, uniform, generate_seconds, score_seconds)


@dataclass
class RolloutNumbers:
    """What every rank learns of each rollout of the step: what the advantages and metrics need."""

    reward: float | None
    scores: dict[str, float | None]
    prompt_length: int
    completion_length: int
    truncated: bool

    @classmethod
    def of(cls, rollout: Rollout) -> RolloutNumbers:
        return cls(rollout.reward, rollout.scores, len(rollout.prompt_ids), len(rollout.completion_ids), rollout.truncated)


@dataclass
class GroupNumbers:
    """A group's place in the step (its prompt draw's in the run) and its members' numbers."""

    position: int
    members: list[RolloutNumbers]


@dataclass
class RankRollouts:
    """What one rank sampled in a step: its groups' numbers, and what it skipped and spent."""

    groups: list[GroupNumbers]
    uniform_groups: int
    generate_seconds: float
    score_seconds: float


@dataclass
class StepRollouts:
    """A step's rollouts over every rank, in the order one process holds them (by prompt draw).
    One process: its batch as it is."""

    rollouts: list[Rollout | None]  # this rank's; None where another rank holds the rollout
    numbers: list[RolloutNumbers]  # every rollout's
    groups: int
    uniform_groups: int
    generate_seconds: float  # the slowest rank's
    score_seconds: float

    def advantages(self, group_size: int, scale: str) -> torch.Tensor:
        """Group-relative advantages of every rank's rollouts, [B]; a completion no reward applies
        to gets 0 and stays out of its group's mean and std."""
        valid_B = torch.tensor([n.reward is not None for n in self.numbers])
        rewards_B = torch.tensor([0.0 if n.reward is None else n.reward for n in self.numbers])
        return group_advantages(rewards_B, group_size, scale, valid_B)


def gather_step(batch: RolloutBatch, world: World) -> StepRollouts:
    """BATCH (this rank's groups) with every rank's numbers, each group at its draw's place: the
    step as one process would hold it (a collective under torchrun)."""
    mine = RankRollouts([GroupNumbers(group.position, [RolloutNumbers.of(r) for r in group.rollouts]) for group in batch.groups],
                        batch.uniform_groups, batch.generate_seconds, batch.score_seconds)
    shares = world.gather(mine)
    placed = sorted(((rank, group) for rank, share in enumerate(shares) for group in share.groups), key=lambda entry: entry[1].position)
    own = {group.position: group.rollouts for group in batch.groups}
    rollouts = [rollout for rank, group in placed
                for rollout in (own[group.position] if rank == world.rank else [None] * len(group.members))]
    return StepRollouts(rollouts, [n for _, group in placed for n in group.members], len(placed),
                        sum(share.uniform_groups for share in shares), max(share.generate_seconds for share in shares),
                        max(share.score_seconds for share in shares))
