"""Token log-probabilities, entropies and a teacher's KL from a model's final hidden states,
through its output head a chunk of tokens at a time.

Why by hand: with a 151,936-token vocabulary, the [tokens, vocab] logits of 64 completions of
1,024 tokens are ~40 GB per fp32 copy, and the usual `log_softmax(logits)` keeps several. Here
the head runs on CHUNK tokens at a time, in the forward pass and again in the backward pass
(recomputed, as activation checkpointing would), so at most one chunk's logits exist at once.
The gradients are written out (d log p_y / dz = onehot(y) - p; d H / dz = -p (log p + H);
d KL(t || s) / dz_s = p_s - p_t) rather than taken by autograd through a saved graph, which is
what keeps the memory flat. Plain torch: no Triton-only kernel, so the CPU runs the same code.

Shapes: N scored tokens (the positions selected from a [B, L] batch), H hidden size, V
vocabulary. `temperature` divides the logits, as they were sampled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from r1cli.modeling import hf_base

# A chunk's fp32 logits take at least MIN_CHUNK_BYTES and at most MAX_CHUNK_BYTES (the passes
# hold two or three such buffers at once); in between, a call makes about vocabulary / (4 hidden)
# chunks (~40 for Qwen), so the chunk logits are a few times the size of the hidden states and the
# fixed cost of a chunk (accumulating the [V, H] weight gradient) is paid ~40 times a call.
MIN_CHUNK_BYTES = 32 * 2**20
MAX_CHUNK_BYTES = 1024 * 2**20
CHUNK_SPAN = 4  # chunk logits / hidden-state elements

# Architectures whose causal-LM logits are exactly `lm_head(decoder(...))`: their tokens can be
# scored from the decoder's hidden states. Others (logit soft-capping, logit scales) are scored
# from the model's own full logits, which is correct but not lean.
PLAIN_HEAD_MODEL_TYPES = frozenset({
    "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "phi3", "olmo2", "smollm3", "deepseek_v3",
})


@dataclass
class OutputHead:
    """The output projection logits = hidden @ weight.T (+ bias), its rows up to `vocab_size`."""

    weight_VH: torch.Tensor
    bias_V: torch.Tensor | None

    def sliced(self, vocab_size: int | None) -> OutputHead:
        if vocab_size is None or vocab_size >= self.weight_VH.shape[0]:
            return self
        bias = None if self.bias_V is None else self.bias_V[:vocab_size]
        return OutputHead(self.weight_VH[:vocab_size], bias)


@dataclass
class TokenScores:
    """Per scored token: log p(token) under logits / T, and the entropy of that distribution."""

    logprobs_N: torch.Tensor
    entropy_N: torch.Tensor | None  # None unless asked for


def output_head(network) -> OutputHead | None:
    """NETWORK's output head where its logits are a plain projection of the decoder's output, else None."""
    model = hf_base(network)
    config = getattr(model, "config", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if config is None or config.model_type not in PLAIN_HEAD_MODEL_TYPES or not isinstance(head, torch.nn.Linear):
        return None
    if getattr(config, "final_logit_softcapping", None):
        return None
    return OutputHead(head.weight, head.bias)


def decoder_hidden(network, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The final (normed) hidden states [B, L, H] of NETWORK's decoder: the causal LM without its head.
    LoRA layers and gradient checkpointing live inside the decoder, so both apply."""
    model = hf_base(network)
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else getattr(model, model.base_model_prefix)
    return decoder(**inputs, use_cache=False).last_hidden_state


def score_tokens(network, inputs: dict[str, torch.Tensor], scored_BL: torch.Tensor, targets_N: torch.Tensor,
                 temperature: float = 1.0, with_entropy: bool = False, chunk_tokens: int | None = None) -> TokenScores:
    """Score the next token at each position of SCORED_BL (a [B, L] bool mask over INPUTS' positions):
    log p(TARGETS_N) under logits / TEMPERATURE, in the mask's row-major order; with WITH_ENTROPY
    also each position's entropy (differentiable too; callers that log it detach it)."""
    head = output_head(network)
    if head is None:  # the model's own logits, at the scored positions only
        logits_NV = network(**inputs, use_cache=False).logits[scored_BL]
        return scores_from_logits(logits_NV, targets_N, temperature, with_entropy)
    hidden_NH = decoder_hidden(network, inputs)[scored_BL]
    return chunked_token_scores(hidden_NH, head, targets_N, temperature, with_entropy, chunk_tokens)


def chunked_token_scores(hidden_NH: torch.Tensor, head: OutputHead, targets_N: torch.Tensor, temperature: float = 1.0,
                         with_entropy: bool = False, chunk_tokens: int | None = None) -> TokenScores:
    """`score_tokens` from hidden states: the head applied CHUNK_TOKENS rows at a time."""
    chunk = chunk_tokens or default_chunk_tokens(hidden_NH.shape[0], *head.weight_VH.shape)
    logprobs_N, entropy_N = _ChunkedTokenScores.apply(hidden_NH, head.weight_VH, head.bias_V, targets_N,
                                                      max(temperature, 1e-6), chunk, compute_dtype(hidden_NH))
    return TokenScores(logprobs_N, entropy_N if with_entropy else None)


def teacher_kl_sum(student_hidden_NH: torch.Tensor, student_head: OutputHead, teacher_hidden_NH: torch.Tensor,
                   teacher_head: OutputHead, vocab_size: int, chunk_tokens: int | None = None) -> torch.Tensor:
    """Sum over the N tokens of KL(teacher || student) between next-token distributions over the
    first VOCAB_SIZE entries (rows past the tokenizer are embedding padding). Gradient: student only."""
    student, teacher = student_head.sliced(vocab_size), teacher_head.sliced(vocab_size)
    chunk = chunk_tokens or default_chunk_tokens(student_hidden_NH.shape[0], vocab_size, student_hidden_NH.shape[1])
    return _ChunkedTeacherKL.apply(student_hidden_NH, student.weight_VH, student.bias_V, teacher_hidden_NH.detach(),
                                   teacher.weight_VH.detach(), None if teacher.bias_V is None else teacher.bias_V.detach(),
                                   chunk, compute_dtype(student_hidden_NH))


def default_chunk_tokens(tokens: int, vocab_size: int, hidden_size: int) -> int:
    row_bytes = 4 * max(1, vocab_size)
    smallest, largest = max(16, MIN_CHUNK_BYTES // row_bytes), max(16, MAX_CHUNK_BYTES // row_bytes)
    return min(largest, max(smallest, -(-CHUNK_SPAN * tokens * hidden_size // max(1, vocab_size))))


def compute_dtype(hidden: torch.Tensor) -> torch.dtype:
    """The dtype autocast would run the head's matmul in (or the hidden states' own)."""
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return hidden.dtype


def scores_from_logits(logits_NV: torch.Tensor, targets_N: torch.Tensor, temperature: float = 1.0,
                       with_entropy: bool = False) -> TokenScores:
    """`score_tokens` from logits already computed at the scored positions."""
    logprobs_NV = (logits_NV.float() / max(temperature, 1e-6)).log_softmax(-1)
    logprobs_N = logprobs_NV.gather(-1, targets_N[:, None]).squeeze(-1)
    entropy_N = -(logprobs_NV.exp() * logprobs_NV).sum(-1) if with_entropy else None
    return TokenScores(logprobs_N, entropy_N)


def _logits(hidden_CH: torch.Tensor, weight_VH: torch.Tensor, bias_V: torch.Tensor | None) -> torch.Tensor:
    """One chunk's fp32 logits, the matmul in the weight's (already cast) dtype, as autocast runs it."""
    return F.linear(hidden_CH.to(weight_VH.dtype), weight_VH, bias_V).float()


def _log_softmax(hidden_CH: torch.Tensor, weight_VH: torch.Tensor, bias_V: torch.Tensor | None, temperature: float) -> torch.Tensor:
    logits_CV = _logits(hidden_CH, weight_VH, bias_V)
    if temperature != 1.0:
        logits_CV.div_(temperature)
    return logits_CV.log_softmax(-1)


def _cast(weight_VH: torch.Tensor, bias_V: torch.Tensor | None, dtype: torch.dtype):
    # Once per call, not per chunk: the cast weight is the one large temporary (V x H).
    return weight_VH.to(dtype), None if bias_V is None else bias_V.to(dtype)


class _ChunkedTokenScores(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden_NH, weight_VH, bias_V, targets_N, temperature, chunk, dtype):
        weight, bias = _cast(weight_VH, bias_V, dtype)
        logprobs_N = hidden_NH.new_empty(hidden_NH.shape[0], dtype=torch.float32)
        entropy_N = torch.empty_like(logprobs_N)
        with torch.no_grad():
            for start in range(0, hidden_NH.shape[0], chunk):
                rows = slice(start, start + chunk)
                logprobs_CV = _log_softmax(hidden_NH[rows], weight, bias, temperature)
                logprobs_N[rows] = logprobs_CV.gather(-1, targets_N[rows, None]).squeeze(-1)
                entropy_N[rows] = -logprobs_CV.exp().mul_(logprobs_CV).sum(-1)
        ctx.save_for_backward(hidden_NH, weight_VH, bias_V, targets_N, entropy_N)
        ctx.settings = (temperature, chunk, dtype)
        ctx.set_materialize_grads(False)  # an output nobody differentiates (usually the entropy) costs nothing
        return logprobs_N, entropy_N

    @staticmethod
    def backward(ctx, grad_logprobs_N, grad_entropy_N):
        hidden_NH, weight_VH, bias_V, targets_N, entropy_N = ctx.saved_tensors
        temperature, chunk, dtype = ctx.settings
        if grad_logprobs_N is None and grad_entropy_N is None:
            return (None,) * 7
        weight, bias = _cast(weight_VH, bias_V, dtype)
        grad_hidden, grad_weight, grad_bias = _gradient_buffers(ctx, hidden_NH, weight_VH, bias_V)
        for start in range(0, hidden_NH.shape[0], chunk):
            rows = slice(start, start + chunk)
            hidden = hidden_NH[rows]
            logprobs_CV = _log_softmax(hidden, weight, bias, temperature)
            probs_CV = logprobs_CV.exp()
            # The gradient with respect to z = logits / T, built in place in the two buffers.
            if grad_entropy_N is not None:  # d H / dz = -p (log p + H)
                grad_z_CV = logprobs_CV.add_(entropy_N[rows, None]).mul_(probs_CV).mul_(-grad_entropy_N[rows, None])
                if grad_logprobs_N is not None:
                    grad_z_CV.addcmul_(probs_CV, grad_logprobs_N[rows, None], value=-1)
            else:
                del logprobs_CV
                grad_z_CV = probs_CV.mul_(-grad_logprobs_N[rows, None])
            if grad_logprobs_N is not None:  # d log p_y / dz = onehot(y) - p
                grad_z_CV.scatter_add_(-1, targets_N[rows, None], grad_logprobs_N[rows, None].float())
            if temperature != 1.0:
                grad_z_CV.div_(temperature)
            _accumulate(grad_z_CV, hidden, weight, rows, grad_hidden, grad_weight, grad_bias)
        return (grad_hidden, _like(grad_weight, weight_VH), _like(grad_bias, bias_V), None, None, None, None)


class _ChunkedTeacherKL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden_NH, weight_VH, bias_V, teacher_hidden_NH, teacher_weight_VH, teacher_bias_V, chunk, dtype):
        weight, bias = _cast(weight_VH, bias_V, dtype)
        teacher_weight, teacher_bias = _cast(teacher_weight_VH, teacher_bias_V, dtype)
        total = hidden_NH.new_zeros((), dtype=torch.float32)
        with torch.no_grad():
            for start in range(0, hidden_NH.shape[0], chunk):
                rows = slice(start, start + chunk)
                student_CV = _logits(hidden_NH[rows], weight, bias).log_softmax(-1)
                teacher_CV = _logits(teacher_hidden_NH[rows], teacher_weight, teacher_bias).log_softmax(-1)
                total += F.kl_div(student_CV, teacher_CV, log_target=True, reduction="sum")
        ctx.save_for_backward(hidden_NH, weight_VH, bias_V, teacher_hidden_NH, teacher_weight_VH, teacher_bias_V)
        ctx.settings = (chunk, dtype)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        hidden_NH, weight_VH, bias_V, teacher_hidden_NH, teacher_weight_VH, teacher_bias_V = ctx.saved_tensors
        chunk, dtype = ctx.settings
        weight, bias = _cast(weight_VH, bias_V, dtype)
        teacher_weight, teacher_bias = _cast(teacher_weight_VH, teacher_bias_V, dtype)
        grad_hidden, grad_weight, grad_bias = _gradient_buffers(ctx, hidden_NH, weight_VH, bias_V)
        for start in range(0, hidden_NH.shape[0], chunk):
            rows = slice(start, start + chunk)
            hidden = hidden_NH[rows]
            student_CV = _logits(hidden, weight, bias).softmax(-1)
            teacher_CV = _logits(teacher_hidden_NH[rows], teacher_weight, teacher_bias).softmax(-1)
            _accumulate((student_CV - teacher_CV) * grad_total, hidden, weight, rows, grad_hidden, grad_weight, grad_bias)
        return (grad_hidden, _like(grad_weight, weight_VH), _like(grad_bias, bias_V), None, None, None, None, None)


def _gradient_buffers(ctx, hidden_NH, weight_VH, bias_V):
    """The (hidden, weight, bias) gradients a backward pass fills, for the inputs that need one:
    the hidden one row by row, the weight and bias ones summed over chunks in fp32."""
    grad_hidden = torch.empty_like(hidden_NH) if ctx.needs_input_grad[0] else None
    grad_weight = torch.zeros_like(weight_VH, dtype=torch.float32) if ctx.needs_input_grad[1] else None
    grad_bias = torch.zeros_like(bias_V, dtype=torch.float32) if bias_V is not None and ctx.needs_input_grad[2] else None
    return grad_hidden, grad_weight, grad_bias


def _accumulate(grad_logits_CV, hidden_CH, weight_VH, rows, grad_hidden, grad_weight, grad_bias) -> None:
    """Chain one chunk's logit gradient through logits = hidden @ weight.T + bias (matmuls in the
    compute dtype, as autocast's backward runs them; the weight gradient summed in fp32)."""
    grad_logits = grad_logits_CV.to(weight_VH.dtype)
    if grad_hidden is not None:
        grad_hidden[rows] = (grad_logits @ weight_VH).to(grad_hidden.dtype)
    if grad_weight is not None:  # added into fp32 in one pass (no fp32 copy of the chunk's product first)
        grad_weight.add_(grad_logits.T @ hidden_CH.to(weight_VH.dtype))
    if grad_bias is not None:
        grad_bias += grad_logits_CV.sum(0)


def _like(grad: torch.Tensor | None, parameter: torch.Tensor | None) -> torch.Tensor | None:
    return None if grad is None else grad.to(parameter.dtype)
