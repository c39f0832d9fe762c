"""The sampling noise of `r1cli.engines.sampling` as one Triton kernel, for CUDA tensors.

`keyed_uniform` in torch is about fifteen elementwise int64 kernels over [B, V] (a 151,936-wide
vocabulary makes each one a pass over tens of megabytes); this kernel computes the same 32-bit
hash per token and writes log(-log(u)) in one pass. The integer hash is bit-identical (each
product of the torch version is reduced mod 2^32, which is uint32 arithmetic); the logarithms
are libdevice's, as torch's CUDA `log`.
"""

from __future__ import annotations

import functools

import torch

try:  # Triton ships with CUDA builds of torch; elsewhere the torch ops are used
    import triton
    import triton.language as tl
    from triton.language.extra import libdevice
except Exception:  # noqa: BLE001 - absent, or too old to have libdevice
    triton = None

if triton is not None:

    @triton.jit
    def _log_exponential_kernel(row_ptr, token_ptr, out_ptr, vocab_size, BLOCK: tl.constexpr, UNIFORM_ONLY: tl.constexpr):
        row = tl.program_id(0)
        offsets = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        inside = offsets < vocab_size
        x = tl.load(row_ptr + row).to(tl.uint32) ^ tl.load(token_ptr + offsets, mask=inside, other=0).to(tl.uint32)
        x = x ^ (x >> 16)
        x = x * 0x21F0AAAD
        x = x ^ (x >> 15)
        x = x * 0x735A2D97
        x = x ^ (x >> 15)
        uniform = ((x >> 8).to(tl.float32) + 0.5) * (1.0 / 16777216.0)
        if UNIFORM_ONLY:  # the hash alone (tests compare it bit for bit with keyed_uniform)
            tl.store(out_ptr + row.to(tl.int64) * vocab_size + offsets, uniform, mask=inside)
        else:
            tl.store(out_ptr + row.to(tl.int64) * vocab_size + offsets, libdevice.log(-libdevice.log(uniform)), mask=inside)


@functools.cache
def available() -> bool:
    return triton is not None


def log_exponential(row_hashes_B: torch.Tensor, token_hashes_V: torch.Tensor, uniform_only: bool = False) -> torch.Tensor:
    """log(E) for E = -log(u) [B, V], u the keyed uniform of (row hash, token hash) (or u itself,
    UNIFORM_ONLY); graph-safe."""
    rows, vocab_size = row_hashes_B.shape[0], token_hashes_V.shape[0]
    out = torch.empty(rows, vocab_size, dtype=torch.float32, device=row_hashes_B.device)
    block = 1024
    _log_exponential_kernel[(rows, triton.cdiv(vocab_size, block))](row_hashes_B, token_hashes_V, out, vocab_size, BLOCK=block,
                                                                          UNIFORM_ONLY=uniform_only)
    return out
