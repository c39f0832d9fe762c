"""`fast`: r1's own rollout engine. Continuous batching over a slot-per-sequence KV cache, with
the decode step captured as CUDA graphs.

The loop (`generate_ids`): admit waiting requests into free slots (each prompt prefilled once,
its KV copied to the slots of its samples, the first token sampled from the prefill), replay the
decode step a few times without looking, then sync once: harvest finished rows, look for stop
strings, compact the live rows to the front (so a smaller graph can run), admit more.

Why slots rather than paged blocks: a slot is one contiguous [layers, prompt + max new tokens]
stretch of the preallocated cache, so a captured graph addresses every row's cache by its slot
index alone (no block table to gather through on each step), and compacting live rows is one
copy per layer. The cost is memory reserved for tokens a short completion never writes. At the
sizes GRPO runs (tens to hundreds of sequences of up to a few thousand tokens) that reserve fits
the share `--engine-memory` gives it (Qwen2.5-7B, 256 sequences x 256 new tokens: 37.0 GiB
peak, weights included; bench/RESULTS.md); when it does not, fewer slots are made and the rest of
the requests wait (continuous batching), which costs time, not correctness. Paged blocks would
pay off for far longer, very unequal completions, where the reserve would crowd out sequences.

Written by hand because rollouts are where RL spends its time, and neither transformers'
static-cache compile path nor its continuous batching captures cleanly (ENGINE.md); vLLM is the
alternative where it can be installed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch

from r1cli.console import log
from r1cli.engines.base import Completion, EngineSettings, SamplingOptions, engine
from r1cli.engines.fast.model import (
    Decoder,
    DecoderWeights,
    KVCache,
    RopeTable,
    read_spec,
    unsupported_reason,
)
from r1cli.engines.fast.step import DecodeGraphs, Slots, StepConstants
from r1cli.engines.hf import HFEngine
from r1cli.engines.sampling import request_seeds, sample_tokens, token_hashes
from r1cli.engines.text import STOP_WINDOW, completion_text, ends_in_stop, eos_ids
from r1cli.errors import UserError
from r1cli.modeling import hf_base

BUCKETS = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024)
SYNC_EVERY = 16  # decode steps between looks at the finished rows (on a GPU; every step on a CPU)
PREFILL_TOKENS = 16384  # prompt tokens (padded) per prefill forward
WIDTH_ROUND = 256  # the cache width grows in steps of this many positions


@dataclass
class Request:
    prompt: int  # index of the prompt in the call
    sample: int  # index of the completion among the prompt's
    seed: int


@dataclass
class Row:
    """The request a live slot serves, and what the host knows of it."""

    request: Request
    prompt_length: int
    steps: int = 1  # tokens generated when the host last looked
    stop_checked: int = 0  # tokens already searched for stop strings
    stopped_at: int | None = None  # tokens kept, where a stop string ended the completion


@engine("fast")
class FastEngine:
    """Generates from its own bf16 (or fp32) copy of a Llama / Mistral / Qwen2 / Qwen3 model."""

    batches_per_call = 4  # callers may queue this many slots' worth of requests: freed slots refill from the queue

    def __init__(self, network, tokenizer, *, batch_size: int = 64, dtype: torch.dtype | None = None,
                 device: torch.device | None = None, memory_share: float = 0.5, eos: set[int] | None = None,
                 use_kernels: bool = True):
        reason = unsupported_reason(network)
        if reason:
            raise UserError(f"--engine fast: {reason}")
        source = next(network.parameters())
        self.device = device or source.device
        self.dtype = dtype or source.dtype
        self.tokenizer = tokenizer
        self.max_slots = batch_size
        self.memory_share = memory_share
        self.use_kernels = use_kernels  # the decode step's Triton kernels on CUDA (model.Decoder); off only to compare
        self.spec = read_spec(network)
        self.weights = DecoderWeights(self.spec, self.dtype, self.device)
        self.weights.load_from(network)
        self._network = network  # for the rope table (its rotary buffer) when the cache grows
        self.eos = eos_ids(hf_base(network), tokenizer) if eos is None else eos
        is_eos_V = torch.zeros(self.spec.vocab_size, dtype=torch.bool, device=self.device)
        is_eos_V[[i for i in self.eos if 0 <= i < self.spec.vocab_size]] = True
        self.constants = StepConstants(is_eos_V,
                                       tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
                                       token_hashes(self.spec.vocab_size, self.device))
        self.cache: KVCache | None = None
        self.slots: Slots | None = None
        self.graphs: DecodeGraphs | None = None
        self.decoder: Decoder | None = None
        self.slot_cap: int | None = None  # slots the memory share held when it held fewer than asked

    # ------------------------------------------------------------ the Engine interface

    @classmethod
    def load(cls, model: str, settings: EngineSettings):
        from r1cli.modeling import load_model, resolve_device, resolve_dtype

        device = resolve_device(settings.device)
        network, tokenizer = load_model(model, dtype=resolve_dtype(settings.dtype, device))
        network = network.to(device).eval()
        if reason := unsupported_reason(network):
            log(f"engine fast: {reason}; generating with hf")
            return HFEngine(network, tokenizer, batch_size=settings.batch_size), tokenizer
        return cls(network, tokenizer, batch_size=settings.batch_size, memory_share=settings.memory_share), tokenizer

    @classmethod
    def for_policy(cls, network, tokenizer, model: str, settings: EngineSettings):
        """A copy of the policy's weights in the compute dtype (refreshed after each update)."""
        from r1cli.modeling import resolve_dtype

        if reason := unsupported_reason(network):
            log(f"engine fast: {reason}; generating with hf")
            return HFEngine.for_policy(network, tokenizer, model, settings)
        device = next(network.parameters()).device
        return cls(network, tokenizer, batch_size=settings.batch_size, dtype=resolve_dtype(settings.dtype, device), device=device,
                   memory_share=settings.memory_share)

    def refresh_weights(self, model) -> None:
        """Copy MODEL's weights into the engine's buffers in place (LoRA merged on the way)."""
        self.weights.load_from(model)

    def close(self) -> None:
        self.cache = self.slots = self.graphs = self.decoder = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def generate(self, prompts: list[str], options: SamplingOptions, n: int = 1, seeds: list[list[int]] | None = None) -> list[list[Completion]]:
        encoded = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        return self.generate_ids(encoded, options, n, seeds)

    @torch.no_grad()
    def generate_ids(self, prompts: list[list[int]], options: SamplingOptions, n: int = 1,
                     seeds: list[list[int]] | None = None) -> list[list[Completion]]:
        """For each tokenized prompt, one completion per seed in SEEDS[i] (default: N, seeded from
        options.seed, the prompt's index and the completion's), in order."""
        seeds = request_seeds(len(prompts), n, options.seed) if seeds is None else seeds
        if any(len(p) == 0 for p in prompts):
            raise UserError("a prompt has no tokens")
        waiting = deque([Request(i, k, seed) for i, prompt_seeds in enumerate(seeds) for k, seed in enumerate(prompt_seeds)])
        results: list[list[Completion | None]] = [[None] * len(s) for s in seeds]
        if not waiting:
            return [[] for _ in prompts]
        if options.max_new_tokens < 1:  # as hf: nothing generated
            return [[Completion("", [], [], "length") for _ in s] for s in seeds]
        self._ensure_arena(max(len(p) for p in prompts) + options.max_new_tokens + 1, options.max_new_tokens, len(waiting))
        self.graphs.prepare(options, min(len(waiting), self.cache.slots))
        rows: list[Row] = []
        sync_every = SYNC_EVERY if self.graphs.use_graphs else 1
        while waiting or rows:
            # 1. Fill free slots from the waiting requests (prefill, first token).
            rows += self._admit(waiting, prompts, options, first_slot=len(rows))
            # 2. Decode a few steps without looking (no more than the longest-lived row can use).
            for _ in range(min(sync_every, self._steps_left(rows, options))):
                self.graphs.run(len(rows), options)
            # 3. Look: harvest finished rows, compact the rest to the front.
            rows = self._harvest(rows, options, results)
        return results

    # ------------------------------------------------------------ the arena: cache, slots, graphs

    def _ensure_arena(self, width_needed: int, max_new_tokens: int, requests: int) -> None:
        """Allocate (or grow) the KV cache and slot buffers: slots up to --generation-batch-size
        within the memory share, the width rounded up so that the next calls fit the same graphs."""
        cache = self.cache
        slots_wanted = min(self.max_slots, max(requests, cache.slots if cache else 0), self.slot_cap or self.max_slots)
        if (cache is not None and cache.width >= width_needed and cache.slots >= slots_wanted
                and self.slots.tokens_SN.shape[1] > max_new_tokens):
            return
        width = -(-max(width_needed, cache.width if cache else 0) // WIDTH_ROUND) * WIDTH_ROUND
        tokens_width = max(max_new_tokens, self.slots.tokens_SN.shape[1] - 1 if self.slots is not None else 0)
        self.cache = self.slots = self.graphs = None  # free the old arena before sizing the new one
        per_slot = width * self.spec.kv_bytes_per_position(self.dtype) + (tokens_width + 1) * 12
        slots = slots_wanted
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            free, _ = torch.cuda.mem_get_info(self.device)
            slots = min(slots, int(free * self.memory_share) // per_slot)
            # Fewer slots than wanted: remember the cap, so later calls do not rebuild the arena each time.
            self.slot_cap = slots if slots < slots_wanted else None
            if slots < 1:
                raise UserError(f"--engine-memory {self.memory_share}: {free * self.memory_share / 2**30:.1f} GiB holds no sequence "
                                f"of {width} positions ({per_slot / 2**20:.0f} MiB each); raise it or lower --max-new-tokens")
        self.cache = KVCache(self.spec, slots, width, self.dtype, self.device)
        self.slots = Slots.allocate(slots, tokens_width, self.device)
        self.decoder = Decoder(self.weights, RopeTable(self._network, width, self.dtype, self.device), self.use_kernels)
        self.graphs = DecodeGraphs(self.decoder, self.cache, self.slots, self.constants, [b for b in BUCKETS if b < slots] + [slots])

    # ------------------------------------------------------------ admission

    def _admit(self, waiting: deque, prompts: list[list[int]], options: SamplingOptions, first_slot: int) -> list[Row]:
        """Move waiting requests into slots FIRST_SLOT..: whole groups of a prompt's samples where
        they fit (each prompt prefilled once), a partial group only into an otherwise empty batch."""
        free = self.cache.slots - first_slot
        admitted: list[Request] = []
        while waiting and free > 0:
            prompt = waiting[0].prompt
            group = 0
            while group < len(waiting) and waiting[group].prompt == prompt:
                group += 1
            if group > free and (admitted or first_slot):
                break
            for _ in range(min(group, free)):
                admitted.append(waiting.popleft())
            free = self.cache.slots - first_slot - len(admitted)
        if not admitted:
            return []
        new_rows = [Row(r, len(prompts[r.prompt])) for r in admitted]
        distinct = list(dict.fromkeys(r.prompt for r in admitted))
        slot_of = torch.arange(first_slot, first_slot + len(admitted), device=self.device)
        start = 0
        while start < len(distinct):  # prefill in chunks of at most PREFILL_TOKENS (padded)
            chunk = [distinct[start]]
            longest = len(prompts[chunk[0]])
            for p in distinct[start + 1 :]:
                if (len(chunk) + 1) * max(longest, len(prompts[p])) > PREFILL_TOKENS:
                    break
                chunk.append(p)
                longest = max(longest, len(prompts[p]))
            self._prefill(chunk, prompts, admitted, slot_of, options)
            start += len(chunk)
        return new_rows

    def _prefill(self, chunk: list[int], prompts: list[list[int]], admitted: list[Request], slot_of: torch.Tensor,
                 options: SamplingOptions) -> None:
        """Prefill the prompts CHUNK once, copy each one's K and V into the slots of its samples,
        and sample every sample's first token."""
        lengths = [len(prompts[p]) for p in chunk]
        width = max(lengths)
        ids_PL = torch.tensor([prompts[p] + [0] * (width - len(prompts[p])) for p in chunk], device=self.device)
        place = {p: i for i, p in enumerate(chunk)}
        members = [j for j, r in enumerate(admitted) if r.prompt in place]
        member_slots = slot_of[members]
        member_prompt = torch.tensor([place[admitted[j].prompt] for j in members], device=self.device)

        def write_kv(layer: int, k_PHLD: torch.Tensor, v_PHLD: torch.Tensor) -> None:
            self.cache.k[layer][member_slots, :, :width] = k_PHLD[member_prompt]
            self.cache.v[layer][member_slots, :, :width] = v_PHLD[member_prompt]

        logits_PV = self.decoder.prefill(ids_PL, torch.tensor(lengths, device=self.device), write_kv)
        keys_M = torch.tensor([admitted[j].seed for j in members], dtype=torch.long, device=self.device)
        steps_M = torch.zeros(len(members), dtype=torch.long, device=self.device)
        token_M, logprob_M = sample_tokens(logits_PV[member_prompt], options, keys_M, steps_M, self.constants.token_hashes_V)
        s = self.slots
        s.keys_S[member_slots] = keys_M
        s.tokens_SN[member_slots, 0] = token_M
        s.logprobs_SN[member_slots, 0] = logprob_M
        s.steps_S[member_slots] = 1
        s.budget_S[member_slots] = options.max_new_tokens
        s.ids_S[member_slots] = token_M
        s.positions_S[member_slots] = torch.tensor(lengths, device=self.device)[member_prompt]
        s.finished_S[member_slots] = self.constants.is_eos_V[token_M] | (options.max_new_tokens <= 1)

    # ------------------------------------------------------------ the host's look

    def _steps_left(self, rows: list[Row], options: SamplingOptions) -> int:
        """Decode steps any live row can still use (the longest remaining budget)."""
        return max((options.max_new_tokens - row.steps for row in rows), default=0)

    def _harvest(self, rows: list[Row], options: SamplingOptions, results: list[list[Completion | None]]) -> list[Row]:
        """Finish rows whose completion ended (EOS, budget, stop string), return the live rows
        compacted into slots 0.."""
        if not rows:
            return rows
        s = self.slots
        count = len(rows)
        finished = s.finished_S[:count].tolist()
        steps = s.steps_S[:count].tolist()
        for row, row_steps in zip(rows, steps):
            row.steps = row_steps
        if options.stop:
            tokens = s.tokens_SN[:count].tolist()
            for index, row in enumerate(rows):
                if row.stopped_at is None:
                    row.stopped_at = self._stop_position(tokens[index], row, steps[index], options.stop)
                    finished[index] = finished[index] or row.stopped_at is not None
        done = [i for i in range(count) if finished[i]]
        if not done:
            return rows
        done_index = torch.tensor(done, device=self.device)
        done_tokens, done_logprobs = s.tokens_SN[done_index].tolist(), s.logprobs_SN[done_index].tolist()
        for index, ids, logprobs in zip(done, done_tokens, done_logprobs):
            row = rows[index]
            length = row.stopped_at if row.stopped_at is not None else steps[index]
            ids, logprobs = ids[:length], logprobs[:length]
            stopped = row.stopped_at is not None or (length > 0 and ids[-1] in self.eos)
            request = row.request
            results[request.prompt][request.sample] = Completion(completion_text(self.tokenizer, ids, options.stop), ids, logprobs,
                                                                 "stop" if stopped else "length")
        live = [i for i in range(count) if not finished[i]]
        if live != list(range(len(live))):  # move the live rows to the front: a smaller graph can run them
            source = torch.tensor(live, device=self.device)
            target = torch.arange(len(live), device=self.device)
            for buffer in s.per_slot():
                buffer[target] = buffer[source]
            self.cache.move_rows(source, target)
        s.finished_S[len(live):count] = True
        return [rows[i] for i in live]

    def _stop_position(self, tokens: list[int], row: Row, steps: int, stops: tuple[str, ...]) -> int | None:
        """The first token count (after the last look) at which the completion ends in a stop
        string, as `hf` checks it after each token; None if none does."""
        # A cheap look at the whole new stretch first. A stop string found in a shorter range is
        # found in the longer one, except one holding U+FFFD: a range ending inside a character
        # decodes to U+FFFD there, the longer range to the character. Those are checked per length.
        window = self.tokenizer.decode(tokens[max(0, row.stop_checked - STOP_WINDOW) : steps])
        if any(stop in window or "\ufffd" in stop for stop in stops):
            for length in range(row.stop_checked + 1, steps + 1):
                if tokens[length - 1] in self.eos:
                    return None  # ended by EOS first
                if ends_in_stop(self.tokenizer, tokens[:length], stops):
                    return length
        row.stop_checked = steps
        return None
