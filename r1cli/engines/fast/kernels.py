"""Two Triton kernels for the decode step on CUDA, each replacing a run of small torch kernels.

At decode batch sizes a layer's work is a handful of GEMMs and a dozen elementwise kernels, each
of which costs a few microseconds of launch and tail whatever its size; fusing those is what
brings a step towards the time its weights take to read. Here:

- `rope_into_cache`: after the fused QKV projection, the q/k-norm (Qwen3), rope on Q and K, and
  the writes of K and V into each slot's cache column: one kernel where torch took about eight
  (norm, two products, a swap copy, a sum, two index_puts, the contiguous Q for attention).
- `silu_mul`: silu(gate) * up of the fused gate-up projection: one kernel instead of two.

Each rounds where torch rounds (a bf16 product is an fp32 product rounded to bf16, then summed
in fp32 and rounded again), so the step computes what the eager torch code does, to the last
bit except where libdevice and torch's own transcendental functions differ in the last fp32
place. The eager torch code in `model.py` stays the reference and the CPU path.
"""

from __future__ import annotations

import functools

import torch

try:  # Triton ships with CUDA builds of torch; elsewhere the torch ops are used
    import triton
    import triton.language as tl
    from triton.language.extra import libdevice
except Exception:  # noqa: BLE001 - absent or unusable
    triton = None


@functools.cache
def available() -> bool:
    return triton is not None and torch.cuda.is_available()


def usable(tensor: torch.Tensor, head_dim: int) -> bool:
    """Whether the kernels serve a step on TENSOR's device and dtype: CUDA, Triton present, a 16-bit
    compute dtype (fp32 engines keep the torch path, which the CPU tests compare exactly) and a
    power-of-two head size (a Triton block is one head)."""
    return (tensor.is_cuda and tensor.dtype in (torch.bfloat16, torch.float16) and head_dim & (head_dim - 1) == 0
            and available())


if triton is not None:
    TRITON_DTYPES = {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}

    @triton.jit
    def _round(x, dtype: tl.constexpr):
        return x.to(dtype).to(tl.float32)

    # Products and sums go through libdevice's mul_rn / add_rn: written as `a * b + c`, the
    # compiler contracts them into one fused multiply-add and drops the rounding between
    # (measured on an H200: 24% of a rope's outputs then differ from torch's by a bf16 step).

    @triton.jit
    def _rope_into_cache_kernel(qkv_ptr, positions_ptr, cos_ptr, sin_ptr, norm_ptr, q_ptr, k_cache_ptr, v_cache_ptr,
                                qkv_stride, cache_slot_stride, cache_head_stride, eps,
                                NUM_HEADS: tl.constexpr, NUM_KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
                                QK_NORM: tl.constexpr, DTYPE: tl.constexpr):
        row = tl.program_id(0)
        head = tl.program_id(1)  # q heads, then k heads, then v heads: the fused projection's order
        d = tl.arange(0, HEAD_DIM)
        source = qkv_ptr + row.to(tl.int64) * qkv_stride + head * HEAD_DIM
        position = tl.load(positions_ptr + row)
        cache_row = row.to(tl.int64) * cache_slot_stride + position * HEAD_DIM
        if head >= NUM_HEADS + NUM_KV_HEADS:  # V: stored as it is
            kv_head = head - NUM_HEADS - NUM_KV_HEADS
            tl.store(v_cache_ptr + cache_row + kv_head * cache_head_stride + d, tl.load(source + d))
        else:
            half: tl.constexpr = HEAD_DIM // 2
            x = tl.load(source + d).to(tl.float32)
            swapped = tl.load(source + (d + half) % HEAD_DIM).to(tl.float32)  # the halves swapped
            if QK_NORM:  # rms_norm without weight (fp32 statistics, rounded), then times the head's weight
                scale = tl.rsqrt(tl.sum(x * x, axis=0) / HEAD_DIM + eps)
                weight = tl.load(norm_ptr + head * HEAD_DIM + d).to(tl.float32)
                weight_swapped = tl.load(norm_ptr + head * HEAD_DIM + (d + half) % HEAD_DIM).to(tl.float32)
                x = _round(libdevice.mul_rn(_round(libdevice.mul_rn(x, scale), DTYPE), weight), DTYPE)
                swapped = _round(libdevice.mul_rn(_round(libdevice.mul_rn(swapped, scale), DTYPE), weight_swapped), DTYPE)
            cos = tl.load(cos_ptr + position * HEAD_DIM + d).to(tl.float32)
            sin = tl.load(sin_ptr + position * HEAD_DIM + d).to(tl.float32)  # (-sin, sin) by half
            rotated = libdevice.add_rn(_round(libdevice.mul_rn(x, cos), DTYPE), _round(libdevice.mul_rn(swapped, sin), DTYPE)).to(DTYPE)
            if head < NUM_HEADS:
                tl.store(q_ptr + (row.to(tl.int64) * NUM_HEADS + head) * HEAD_DIM + d, rotated)
            else:
                kv_head = head - NUM_HEADS
                tl.store(k_cache_ptr + cache_row + kv_head * cache_head_stride + d, rotated)

    @triton.jit
    def _silu_mul_kernel(gate_up_ptr, out_ptr, width, BLOCK: tl.constexpr, DTYPE: tl.constexpr):
        row = tl.program_id(0)
        offsets = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        inside = offsets < width
        source = gate_up_ptr + row.to(tl.int64) * 2 * width
        gate = tl.load(source + offsets, mask=inside, other=0.0).to(tl.float32)
        up = tl.load(source + width + offsets, mask=inside, other=0.0).to(tl.float32)
        silu = tl.math.div_rn(gate, 1.0 + libdevice.exp(-gate)).to(DTYPE).to(tl.float32)  # as torch: IEEE division, libm exp
        tl.store(out_ptr + row.to(tl.int64) * width + offsets, (silu * up).to(DTYPE), mask=inside)


def rope_into_cache(qkv_RW: torch.Tensor, positions_R: torch.Tensor, cos_TD: torch.Tensor, signed_sin_TD: torch.Tensor,
                    qk_norm: torch.Tensor | None, eps: float, k_cache: torch.Tensor, v_cache: torch.Tensor,
                    num_heads: int, num_kv_heads: int) -> torch.Tensor:
    """Rope (after the q/k-norm, where the model has one) on the Q and K heads of QKV_RW [R, W];
    K and V written to K_CACHE / V_CACHE [S, Hkv, T, D] at slot r, column POSITIONS_R[r]; returns
    Q, [R, Hq, 1, D] contiguous (attention's query). Graph-safe."""
    rows, head_dim = qkv_RW.shape[0], k_cache.shape[-1]
    q_RH1D = torch.empty(rows, num_heads, 1, head_dim, dtype=qkv_RW.dtype, device=qkv_RW.device)
    _rope_into_cache_kernel[(rows, num_heads + 2 * num_kv_heads)](
        qkv_RW, positions_R, cos_TD, signed_sin_TD, qk_norm if qk_norm is not None else qkv_RW, q_RH1D, k_cache, v_cache,
        qkv_RW.stride(0), k_cache.stride(0), k_cache.stride(1), eps,
        NUM_HEADS=num_heads, NUM_KV_HEADS=num_kv_heads, HEAD_DIM=head_dim, QK_NORM=qk_norm is not None,
        DTYPE=TRITON_DTYPES[qkv_RW.dtype])
    return q_RH1D


def silu_mul(gate_up_RI2: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up of a fused [R, 2I] projection (gate first), [R, I]. Graph-safe."""
    rows, width = gate_up_RI2.shape[0], gate_up_RI2.shape[1] // 2
    out = torch.empty(rows, width, dtype=gate_up_RI2.dtype, device=gate_up_RI2.device)
    block = 1024
    _silu_mul_kernel[(rows, triton.cdiv(width, block))](gate_up_RI2, out, width, BLOCK=block, DTYPE=TRITON_DTYPES[out.dtype])
    return out
