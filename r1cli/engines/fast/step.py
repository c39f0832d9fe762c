"""One decode step over the first R slots, written against buffers that never move.

Everything a step reads or writes lives in `Slots` (per-slot state, allocated once), so the step
can be captured in a CUDA graph and replayed: the model forward, sampling, and the bookkeeping of
finished rows all happen on the device, and the host looks only every few steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from r1cli.engines.base import SamplingOptions
from r1cli.engines.fast.model import Decoder, KVCache
from r1cli.engines.sampling import sample_tokens


@dataclass
class Slots:
    """Per-slot state, S slots; the tokens and log-probs of each slot's completion, [S, N + 1]
    (column N is scratch: a finished row writes there, never over its completion)."""

    ids_S: torch.Tensor  # the token the next step feeds
    positions_S: torch.Tensor  # where that token's K and V go (its position in the sequence)
    keys_S: torch.Tensor  # the completion's seed
    steps_S: torch.Tensor  # tokens generated so far (the sampling step of the next one)
    budget_S: torch.Tensor  # tokens the completion may have (--max-new-tokens)
    finished_S: torch.Tensor  # EOS sampled, budget reached, or no completion in the slot
    tokens_SN: torch.Tensor
    logprobs_SN: torch.Tensor

    @classmethod
    def allocate(cls, slots: int, max_new_tokens: int, device: torch.device) -> Slots:
        def longs():
            return torch.zeros(slots, dtype=torch.long, device=device)

        return cls(longs(), longs(), longs(), longs(), longs(), torch.ones(slots, dtype=torch.bool, device=device),
                   torch.zeros(slots, max_new_tokens + 1, dtype=torch.long, device=device),
                   torch.zeros(slots, max_new_tokens + 1, dtype=torch.float32, device=device))

    def per_slot(self) -> list[torch.Tensor]:
        return [self.ids_S, self.positions_S, self.keys_S, self.steps_S, self.budget_S, self.finished_S, self.tokens_SN, self.logprobs_SN]


@dataclass(frozen=True)
class StepConstants:
    """What a step needs besides the slots: fixed for an engine (a graph holds them)."""

    is_eos_V: torch.Tensor  # True at the end-of-sequence ids (a lookup: torch.isin may sync the host)
    pad_id: int
    token_hashes_V: torch.Tensor  # the per-token half of the sampling noise, computed once


def decode_step(decoder: Decoder, cache: KVCache, slots: Slots, rows: int, options: SamplingOptions, constants: StepConstants) -> None:
    """Feed each of the first ROWS slots its next token, sample the one after, record it."""
    logits_RV = decoder.decode(cache, rows, slots.ids_S, slots.positions_S)
    steps_R = slots.steps_S[:rows]
    token_R, logprob_R = sample_tokens(logits_RV, options, slots.keys_S[:rows], steps_R, constants.token_hashes_V)
    live_R = ~slots.finished_S[:rows]
    token_R = torch.where(live_R, token_R, constants.pad_id)
    slots.tokens_SN[:rows].scatter_(1, steps_R[:, None], token_R[:, None])
    slots.logprobs_SN[:rows].scatter_(1, steps_R[:, None], logprob_R[:, None])
    steps_R += live_R
    done_R = (constants.is_eos_V[token_R] & live_R) | (steps_R >= slots.budget_S[:rows])
    slots.finished_S[:rows] |= done_R
    slots.ids_S[:rows] = token_R
    slots.positions_S[:rows] += live_R


class DecodeGraphs:
    """`decode_step` captured as one CUDA graph per (bucket of rows, sampling settings), all in
    one memory pool; without CUDA the step runs eagerly."""

    def __init__(self, decoder: Decoder, cache: KVCache, slots: Slots, constants: StepConstants, buckets: list[int]):
        self.decoder, self.cache, self.slots, self.constants = decoder, cache, slots, constants
        self.buckets = buckets
        self.use_graphs = cache.k[0].is_cuda
        self.graphs: dict[tuple, torch.cuda.CUDAGraph] = {}
        self.pool = torch.cuda.graph_pool_handle() if self.use_graphs else None

    def bucket(self, rows: int) -> int:
        return next(b for b in self.buckets if b >= rows)

    @staticmethod
    def signature(options: SamplingOptions) -> tuple:
        return (options.temperature, options.top_k, options.top_p)

    def prepare(self, options: SamplingOptions, max_rows: int) -> None:
        """Capture the graphs this call can use (largest first, so the pool is sized once). Only
        while every slot is empty: the warm-up run writes into the slots."""
        if not self.use_graphs:
            return
        wanted = [b for b in self.buckets if b <= self.bucket(max_rows)]
        for bucket in sorted(wanted, reverse=True):
            key = (bucket, *self.signature(options))
            if key in self.graphs:
                continue
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):  # warm-up: kernels chosen and workspaces made before capture
                decode_step(self.decoder, self.cache, self.slots, bucket, options, self.constants)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                decode_step(self.decoder, self.cache, self.slots, bucket, options, self.constants)
            self.graphs[key] = graph
        self.slots.finished_S.fill_(True)
        self.slots.steps_S.zero_()
        self.slots.positions_S.zero_()

    def run(self, rows: int, options: SamplingOptions) -> None:
        if self.use_graphs:
            self.graphs[(self.bucket(rows), *self.signature(options))].replay()
        else:
            decode_step(self.decoder, self.cache, self.slots, rows, options, self.constants)
