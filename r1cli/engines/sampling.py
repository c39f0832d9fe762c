"""Sampling on the device: counter-based noise, top-k / top-p filtering, the exponential race.

Every draw is a pure function of (a completion's seed, its step, the token id), so a completion
depends on its own seed only, never on its batch: what makes resumed sampling equal an
uninterrupted run, and what a CUDA graph can replay without generator state.
"""

from __future__ import annotations

import torch

from r1cli.engines.base import SamplingOptions
from r1cli.seeding import derive_seed

MASK32 = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (xor-shift-multiply) of int64 values in [0, 2^32).

    The multipliers are below 2^31, so every product stays below 2^63: plain int64 arithmetic,
    the same on every device, with no overflow.
    """
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & MASK32
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & MASK32
    return x ^ (x >> 15)


def token_hashes(vocab_size: int, device) -> torch.Tensor:
    """The per-token half of `keyed_uniform`'s hash, [V] (an engine may compute it once)."""
    return _mix32(torch.arange(vocab_size, device=device, dtype=torch.int64) * 0x9E3779B1 & MASK32)


def row_hashes(keys_B: torch.Tensor, step: int | torch.Tensor) -> torch.Tensor:
    """The per-row half of `keyed_uniform`'s hash, [B]: of each row's key and STEP (an int for
    the batch, or one per row)."""
    low, high = keys_B & MASK32, (keys_B >> 32) & MASK32
    step_B = torch.full_like(keys_B, step & MASK32) if isinstance(step, int) else step.to(torch.int64) & MASK32
    return _mix32(low ^ _mix32(high ^ _mix32(step_B)))


def keyed_uniform(keys_B: torch.Tensor, step: int | torch.Tensor, vocab_size: int, token_V: torch.Tensor | None = None) -> torch.Tensor:
    """Uniform noise in (0, 1), [B, V], a pure function of (each row's key, step, token id).
    STEP is the completion's token index: one int for the batch, or one per row ([B]).

    Counter-based rather than a generator's stream: a completion's draws depend on its own
    seed only, never on which other completions share its batch, so sampling a prompt's
    missing samples after a kill reproduces exactly what an uninterrupted run would have drawn.
    """
    token_V = token_hashes(vocab_size, keys_B.device) if token_V is None else token_V
    bits_BV = _mix32(row_hashes(keys_B, step)[:, None] ^ token_V[None, :])
    return ((bits_BV >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))


def log_exponential_noise(keys_B: torch.Tensor, step: int | torch.Tensor, vocab_size: int, token_V: torch.Tensor | None = None) -> torch.Tensor:
    """log(E), E = -log(keyed_uniform) ~ Exponential(1), [B, V]: one Triton kernel on CUDA where
    Triton is installed, the torch ops elsewhere."""
    if keys_B.is_cuda:
        from r1cli.engines import noise_triton

        if noise_triton.available():
            token_V = token_hashes(vocab_size, keys_B.device) if token_V is None else token_V
            return noise_triton.log_exponential(row_hashes(keys_B, step), token_V)
    return torch.log(-torch.log(keyed_uniform(keys_B, step, vocab_size, token_V)))


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask all but the top-k tokens and the smallest set whose probability reaches top-p."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # keep a token if the mass before it is below top_p (so the first token is always kept)
        drop_sorted = (cumulative - sorted_logits.softmax(-1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def request_seeds(n_prompts: int, n: int, seed: int) -> list[list[int]]:
    """The default seed of completion K of prompt I in a request seeded with SEED."""
    return [[derive_seed(seed, "request", index, k) for k in range(n)] for index in range(n_prompts)]


def sample_tokens(logits_BV: torch.Tensor, options: SamplingOptions, keys_B: torch.Tensor, step: int | torch.Tensor,
                  token_V: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A token per row, and its log-probability under the temperature-scaled distribution.
    STEP: the completion's token index (an int, or one per row); graph-safe (no host sync).

    Sampling is argmax(p / E) with E ~ Exponential(1) drawn from `keyed_uniform`, which is an
    exact draw from p (the exponential race) that needs no generator state.
    """
    if options.temperature <= 0:
        token = logits_BV.argmax(-1)
        return token, logits_BV.log_softmax(-1).gather(-1, token[:, None]).squeeze(-1)
    scaled = logits_BV / options.temperature
    logprobs = scaled.log_softmax(-1)
    filtered = options.top_k > 0 or options.top_p < 1.0
    kept = filter_logits(scaled, options.top_k, options.top_p).log_softmax(-1) if filtered else logprobs  # the same values
    token = (kept - log_exponential_noise(keys_B, step, logits_BV.shape[-1], token_V)).argmax(-1)
    return token, logprobs.gather(-1, token[:, None]).squeeze(-1)
