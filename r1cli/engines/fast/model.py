"""The decoder the fast engine runs: the Llama / Mistral / Qwen2 / Qwen3 family in plain torch.

Written by hand (not the transformers modules) because a captured CUDA graph needs every buffer
preallocated and updated in place: fused QKV and gate-up weights in the compute dtype, a
slot-per-sequence KV cache, rope tables read from the HF model's own rotary buffer (so every
static rope scaling its config defines comes out the same). The same code runs eagerly on the
CPU, where the tests compare it with the transformers forward. On CUDA in bf16 / fp16 the decode
step hands its rope, cache writes and activation to the Triton kernels of `kernels.py`.

Shapes: S cache slots (one per sequence), T cache width (positions), H hidden size, Hq / Hkv
query / key-value heads of size D, I the MLP width, V the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from r1cli.engines.fast import kernels
from r1cli.modeling import hf_base
from r1cli.train.distributed import full_value

FAMILIES = ("llama", "mistral", "qwen2", "qwen3")
STATIC_ROPE = ("default", "linear", "llama3", "yarn")  # inv_freq fixed at load; dynamic / longrope change with length


@dataclass(frozen=True)
class ModelSpec:
    """The shape of a supported decoder, read from its HF config and modules."""

    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    rms_norm_eps: float
    tied_head: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    qk_norm: bool
    windows: tuple[int, ...]  # per layer: the sliding-window size, 0 for full attention

    @property
    def qkv_width(self) -> int:
        return (self.num_heads + 2 * self.num_kv_heads) * self.head_dim

    def kv_bytes_per_position(self, dtype: torch.dtype) -> int:
        """Bytes of K and V one cached position takes over all layers."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * torch.finfo(dtype).bits // 8


def unsupported_reason(network) -> str | None:
    """Why the fast engine cannot run NETWORK (None: it can)."""
    model = hf_base(network)
    config = model.config
    if config.model_type not in FAMILIES:
        return f"model type {config.model_type!r} (supported: {', '.join(FAMILIES)})"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act!r} (supported: silu)"
    rotary = getattr(getattr(model, "model", None), "rotary_emb", None)
    if rotary is None or not hasattr(rotary, "inv_freq"):
        return "no shared rotary embedding module"
    rope_type = getattr(rotary, "rope_type", "default")
    if rope_type not in STATIC_ROPE:
        return f"rope type {rope_type!r} (supported: {', '.join(STATIC_ROPE)})"
    return None


def read_spec(network) -> ModelSpec:
    model = hf_base(network)
    config = model.config
    layers = model.model.layers
    attention = layers[0].self_attn
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    layer_types = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
    window = getattr(config, "sliding_window", None) or 0
    if config.model_type == "mistral":  # Mistral has no layer types: the window, when set, is on every layer
        windows = tuple(window for _ in range(config.num_hidden_layers))
    else:
        windows = tuple(window if kind == "sliding_attention" else 0 for kind in layer_types)
    return ModelSpec(
        num_layers=config.num_hidden_layers,
        hidden_size=config.hidden_size,
        num_heads=config.num_attention_heads,
        num_kv_heads=config.num_key_value_heads,
        head_dim=head_dim,
        intermediate_size=config.intermediate_size,
        vocab_size=model.get_output_embeddings().weight.shape[0],
        rms_norm_eps=config.rms_norm_eps,
        tied_head=model.get_output_embeddings().weight is model.get_input_embeddings().weight,
        qkv_bias=_linear(attention.q_proj).bias is not None,
        o_bias=_linear(attention.o_proj).bias is not None,
        mlp_bias=_linear(layers[0].mlp.gate_proj).bias is not None,
        qk_norm=hasattr(attention, "q_norm"),
        windows=windows,
    )


def _linear(module):
    return getattr(module, "base_layer", module)  # a peft LoRA layer wraps the linear


def effective_weight(module) -> torch.Tensor:
    """A linear layer's weight with any active, unmerged LoRA adapters added (merged during the copy)."""
    base = _linear(module)
    weight = base.weight
    if base is module or getattr(module, "merged", False) or getattr(module, "disable_adapters", False):
        return weight
    for adapter in module.active_adapters:
        if adapter in getattr(module, "lora_A", {}):
            weight = weight + module.get_delta_weight(adapter).to(weight.dtype)
    return weight


class DecoderWeights:
    """The model's weights in the compute dtype, fused, in buffers allocated once: `load_from`
    copies a model into them in place, so CUDA graphs captured over them stay valid."""

    def __init__(self, spec: ModelSpec, dtype: torch.dtype, device: torch.device):
        self.spec, self.dtype, self.device = spec, dtype, device

        def empty(*shape):
            return torch.empty(shape, dtype=dtype, device=device)

        s = spec
        self.embed_VH = empty(s.vocab_size, s.hidden_size)
        self.head_VH = self.embed_VH if s.tied_head else empty(s.vocab_size, s.hidden_size)
        self.norm_H = empty(s.hidden_size)
        self.layers = []
        for _ in range(s.num_layers):
            self.layers.append({
                "input_norm": empty(s.hidden_size),
                "qkv": empty(s.qkv_width, s.hidden_size),
                "qkv_bias": empty(s.qkv_width) if s.qkv_bias else None,
                "qk_norm": empty(s.num_heads + s.num_kv_heads, s.head_dim) if s.qk_norm else None,  # q's heads, then k's
                "o": empty(s.hidden_size, s.num_heads * s.head_dim),
                "o_bias": empty(s.hidden_size) if s.o_bias else None,
                "post_norm": empty(s.hidden_size),
                "gate_up": empty(2 * s.intermediate_size, s.hidden_size),
                "gate_up_bias": empty(2 * s.intermediate_size) if s.mlp_bias else None,
                "down": empty(s.hidden_size, s.intermediate_size),
                "down_bias": empty(s.hidden_size) if s.mlp_bias else None,
            })

    @torch.no_grad()
    def load_from(self, network) -> None:
        """Copy NETWORK's current weights in (cast to the compute dtype, LoRA merged). A network
        sharded over processes has each weight gathered whole first (a collective: every rank
        copies the same weights in the same order)."""
        model = hf_base(network)
        s = self.spec
        q_rows, kv_rows = s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim
        self.embed_VH.copy_(full_value(model.get_input_embeddings().weight))
        if not s.tied_head:
            self.head_VH.copy_(full_value(effective_weight(model.get_output_embeddings())))
        self.norm_H.copy_(full_value(model.model.norm.weight))
        for buffers, layer in zip(self.layers, model.model.layers):
            attention, mlp = layer.self_attn, layer.mlp
            buffers["input_norm"].copy_(full_value(layer.input_layernorm.weight))
            buffers["post_norm"].copy_(full_value(layer.post_attention_layernorm.weight))
            for start, rows, projection in ((0, q_rows, attention.q_proj), (q_rows, kv_rows, attention.k_proj),
                                            (q_rows + kv_rows, kv_rows, attention.v_proj)):
                buffers["qkv"][start : start + rows].copy_(full_value(effective_weight(projection)))
                if s.qkv_bias:
                    buffers["qkv_bias"][start : start + rows].copy_(full_value(_linear(projection).bias))
            if s.qk_norm:
                buffers["qk_norm"][: s.num_heads].copy_(full_value(attention.q_norm.weight).expand(s.num_heads, -1))
                buffers["qk_norm"][s.num_heads :].copy_(full_value(attention.k_norm.weight).expand(s.num_kv_heads, -1))
            buffers["o"].copy_(full_value(effective_weight(attention.o_proj)))
            if s.o_bias:
                buffers["o_bias"].copy_(full_value(_linear(attention.o_proj).bias))
            width = s.intermediate_size
            buffers["gate_up"][:width].copy_(full_value(effective_weight(mlp.gate_proj)))
            buffers["gate_up"][width:].copy_(full_value(effective_weight(mlp.up_proj)))
            buffers["down"].copy_(full_value(effective_weight(mlp.down_proj)))
            if s.mlp_bias:
                buffers["gate_up_bias"][:width].copy_(full_value(_linear(mlp.gate_proj).bias))
                buffers["gate_up_bias"][width:].copy_(full_value(_linear(mlp.up_proj).bias))
                buffers["down_bias"].copy_(full_value(_linear(mlp.down_proj).bias))


class RopeTable:
    """cos / sin per position, [T, D], computed as the HF rotary module computes them (fp32, then
    cast to the compute dtype), from its inv_freq and attention scaling."""

    def __init__(self, network, width: int, dtype: torch.dtype, device: torch.device):
        rotary = hf_base(network).model.rotary_emb
        inv_freq = rotary.inv_freq
        freqs_TD = torch.arange(width, device=device, dtype=torch.float32)[:, None] * inv_freq.to(device, torch.float32)[None, :]
        angles_TD = torch.cat((freqs_TD, freqs_TD), dim=-1)
        scaling = float(getattr(rotary, "attention_scaling", 1.0))
        self.cos_TD = (angles_TD.cos() * scaling).to(dtype)
        sin_TD = (angles_TD.sin() * scaling).to(dtype)
        half = sin_TD.shape[-1] // 2
        self.signed_sin_TD = torch.cat((-sin_TD[:, :half], sin_TD[:, half:]), dim=-1)  # for `rotate`
        self.width = width


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """RMSNorm over the last dimension in one fused kernel (statistics in fp32)."""
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


def rotate(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rope as transformers applies it, x * cos + rotate_half(x) * sin, in fewer kernels: swapping
    the halves and multiplying by (-sin, sin) is rotate_half(x) * sin, bit for bit."""
    half = x.shape[-1] // 2
    return x * cos + x.unflatten(-1, (2, half)).flip(-2).flatten(-2) * signed_sin


def residual_linear(x: torch.Tensor, a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x + a @ weight.T (+ bias): one GEMM with the residual as its addend where the shapes allow."""
    if x.dim() == 2 and bias is None:
        return torch.addmm(x, a, weight.t())
    return x + F.linear(a, weight, bias)


class KVCache:
    """K and V per layer, [S, Hkv, T, D]: a slot per sequence, position t of a slot at column t."""

    def __init__(self, spec: ModelSpec, slots: int, width: int, dtype: torch.dtype, device: torch.device):
        shape = (slots, spec.num_kv_heads, width, spec.head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(spec.num_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(spec.num_layers)]
        self.slots, self.width = slots, width

    def move_rows(self, source: torch.Tensor, target: torch.Tensor) -> None:
        """Copy slots SOURCE into slots TARGET (compaction), every layer."""
        for cache in (*self.k, *self.v):
            cache[target] = cache[source]


class Decoder:
    """The forward passes: `prefill` (a batch of prompts, causal) and `decode` (one token per slot)."""

    def __init__(self, weights: DecoderWeights, rope: RopeTable, use_kernels: bool = True):
        self.weights, self.rope, self.spec = weights, rope, weights.spec
        # The decode step's Triton kernels where they apply (CUDA, 16-bit); False: torch alone (benchmarks compare both).
        self.fused = use_kernels and kernels.usable(weights.embed_VH, self.spec.head_dim)

    def _qkv(self, layer: dict, h: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor):
        """Q [..., Hq, D], K and V [..., Hkv, D] of normalised hidden states H [..., H], rope applied
        (to Q and K together: they are adjacent in the fused projection)."""
        s = self.spec
        qkv = F.linear(h, layer["qkv"], layer["qkv_bias"])
        qk = qkv[..., : (s.num_heads + s.num_kv_heads) * s.head_dim].unflatten(-1, (s.num_heads + s.num_kv_heads, s.head_dim))
        v = qkv[..., (s.num_heads + s.num_kv_heads) * s.head_dim :].unflatten(-1, (s.num_kv_heads, s.head_dim))
        if s.qk_norm:
            qk = rms_norm(qk, None, s.rms_norm_eps) * layer["qk_norm"]
        qk = rotate(qk, cos, signed_sin)
        return qk[..., : s.num_heads, :], qk[..., s.num_heads :, :], v

    def _mlp(self, layer: dict, x: torch.Tensor, fused: bool = False) -> torch.Tensor:
        h = rms_norm(x, layer["post_norm"], self.spec.rms_norm_eps)
        gate_up = F.linear(h, layer["gate_up"], layer["gate_up_bias"])
        if fused:
            activated = kernels.silu_mul(gate_up)
        else:
            gate, up = gate_up.chunk(2, dim=-1)
            activated = F.silu(gate) * up
        return residual_linear(x, activated, layer["down"], layer["down_bias"])

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """fp32 logits of the final hidden states (the head in the compute dtype, as transformers)."""
        w = self.weights
        return F.linear(rms_norm(hidden, w.norm_H, self.spec.rms_norm_eps), w.head_VH).float()

    @torch.no_grad()
    def prefill(self, ids_PL: torch.Tensor, lengths_P: torch.Tensor, write_kv) -> torch.Tensor:
        """Run P right-padded prompts [P, L]; hand each layer's K and V, [P, Hkv, L, D], to
        WRITE_KV(layer, k, v); return the logits after each prompt's last token, [P, V]."""
        s, w = self.spec, self.weights
        width = ids_PL.shape[1]
        cos, sin = self.rope.cos_TD[:width, None, :], self.rope.signed_sin_TD[:width, None, :]  # [L, 1, D]
        x = F.embedding(ids_PL, w.embed_VH)
        for index, layer in enumerate(w.layers):
            q, k, v = self._qkv(layer, rms_norm(x, layer["input_norm"], s.rms_norm_eps), cos, sin)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [P, heads, L, D]
            write_kv(index, k, v)
            mask = None
            if s.windows[index] and s.windows[index] < width:
                positions = torch.arange(width, device=x.device)
                offset = positions[:, None] - positions[None, :]
                mask = (offset >= 0) & (offset < s.windows[index])
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                                      scale=s.head_dim**-0.5, enable_gqa=s.num_kv_heads != s.num_heads)
            attended = attended.transpose(1, 2).flatten(-2)
            x = self._mlp(layer, residual_linear(x, attended, layer["o"], layer["o_bias"]))
        last = x[torch.arange(x.shape[0], device=x.device), lengths_P - 1]
        return self.logits(last)

    def decode(self, cache: KVCache, rows: int, ids_S: torch.Tensor, positions_S: torch.Tensor) -> torch.Tensor:
        """One token for each of the first ROWS slots: token IDS_S at position POSITIONS_S (its K
        and V written there), attending to positions <= it. Returns fp32 logits [rows, V].
        Graph-safe: no host sync, no data-dependent shapes."""
        s, w = self.spec, self.weights
        ids, positions = ids_S[:rows], positions_S[:rows]
        row_index = torch.arange(rows, device=ids.device)
        fused = self.fused
        if not fused:
            cos, sin = self.rope.cos_TD[positions][:, None, :], self.rope.signed_sin_TD[positions][:, None, :]  # [rows, 1, D]
        columns = torch.arange(cache.width, device=ids.device)
        offset = positions[:, None] - columns[None, :]  # [rows, T]
        visible = {window: ((offset >= 0) & (offset < window if window else offset >= 0))[:, None, None, :] for window in set(s.windows)}
        x = F.embedding(ids, w.embed_VH)
        for index, layer in enumerate(w.layers):
            h = rms_norm(x, layer["input_norm"], s.rms_norm_eps)
            if fused:  # norm, rope and the cache writes in one kernel; Q comes back as attention takes it
                q = kernels.rope_into_cache(F.linear(h, layer["qkv"], layer["qkv_bias"]), positions, self.rope.cos_TD,
                                            self.rope.signed_sin_TD, layer["qk_norm"], s.rms_norm_eps, cache.k[index],
                                            cache.v[index], s.num_heads, s.num_kv_heads)
            else:
                q, k, v = self._qkv(layer, h, cos, sin)
                cache.k[index][row_index, :, positions] = k
                cache.v[index][row_index, :, positions] = v
                q = q[:, :, None, :]
            # One query per slot against the slot's whole width, masked to its positions so far.
            with attention_backends():
                attended = F.scaled_dot_product_attention(q, cache.k[index][:rows], cache.v[index][:rows],
                                                          attn_mask=visible[s.windows[index]], scale=s.head_dim**-0.5,
                                                          enable_gqa=s.num_kv_heads != s.num_heads)
            x = residual_linear(x, attended.reshape(rows, s.num_heads * s.head_dim), layer["o"], layer["o_bias"])
            x = self._mlp(layer, x, fused)
        return self.logits(x)


def attention_backends():
    """SDPA kernels that take a boolean mask, fastest first (flash takes none; math is the fallback)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = [SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    try:
        return sdpa_kernel(order, set_priority=True)
    except TypeError:  # a torch without priorities
        return sdpa_kernel(order)
