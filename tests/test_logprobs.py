"""Chunked token scores (r1cli.train.logprobs) against the full-logits computation they replace."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from r1cli.modeling import load_model
from r1cli.train.logprobs import (
    OutputHead,
    chunked_token_scores,
    decoder_hidden,
    output_head,
    score_tokens,
    scores_from_logits,
    teacher_kl_sum,
)

TOLERANCE = 1e-5


def full_scores(hidden, weight, bias, targets, temperature):
    logprobs_NV = (F.linear(hidden, weight, bias) / temperature).log_softmax(-1)
    return logprobs_NV.gather(-1, targets[:, None]).squeeze(-1), -(logprobs_NV.exp() * logprobs_NV).sum(-1)


def grads(*tensors):
    out = [t.grad.clone() for t in tensors if t is not None]
    for t in tensors:
        if t is not None:
            t.grad = None
    return out


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
@pytest.mark.parametrize("temperature", [1.0, 0.6, 1.3])
@pytest.mark.parametrize("with_bias", [False, True])
def test_log_probs_entropy_and_their_gradients_equal_the_full_computation(chunk, temperature, with_bias):
    generator = torch.Generator().manual_seed(chunk)
    hidden = torch.randn(53, 24, generator=generator, requires_grad=True)
    weight = torch.randn(97, 24, generator=generator, requires_grad=True)
    bias = torch.randn(97, generator=generator, requires_grad=True) if with_bias else None
    targets = torch.randint(97, (53,), generator=generator)
    upstream_lp, upstream_entropy = torch.randn(53, generator=generator), torch.randn(53, generator=generator)

    scores = chunked_token_scores(hidden, OutputHead(weight, bias), targets, temperature, with_entropy=True, chunk_tokens=chunk)
    ((scores.logprobs_N * upstream_lp).sum() + (scores.entropy_N * upstream_entropy).sum()).backward()
    chunked = grads(hidden, weight, bias)
    logprobs, entropy = full_scores(hidden, weight, bias, targets, temperature)
    ((logprobs * upstream_lp).sum() + (entropy * upstream_entropy).sum()).backward()
    full = grads(hidden, weight, bias)

    torch.testing.assert_close(scores.logprobs_N, logprobs, atol=TOLERANCE, rtol=TOLERANCE)
    torch.testing.assert_close(scores.entropy_N, entropy, atol=TOLERANCE, rtol=TOLERANCE)
    for got, want in zip(chunked, full):
        torch.testing.assert_close(got, want, atol=TOLERANCE, rtol=TOLERANCE)


def test_only_the_log_probs_gradient_flows_when_the_entropy_is_not_used():
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(9, 8, generator=generator, requires_grad=True)
    weight = torch.randn(31, 8, generator=generator, requires_grad=True)
    targets = torch.randint(31, (9,), generator=generator)
    chunked_token_scores(hidden, OutputHead(weight, None), targets, 0.7, with_entropy=True, chunk_tokens=4).logprobs_N.sum().backward()
    got = grads(hidden, weight)
    full_scores(hidden, weight, None, targets, 0.7)[0].sum().backward()
    for a, b in zip(got, grads(hidden, weight)):
        torch.testing.assert_close(a, b, atol=TOLERANCE, rtol=TOLERANCE)


@pytest.mark.parametrize("chunk", [1, 5, 100])
def test_teacher_kl_and_its_gradient_equal_the_full_computation_over_the_shared_vocabulary(chunk):
    generator = torch.Generator().manual_seed(chunk)
    hidden = torch.randn(29, 16, generator=generator, requires_grad=True)
    weight = torch.randn(50, 16, generator=generator, requires_grad=True)
    teacher_hidden, teacher_weight = torch.randn(29, 12, generator=generator), torch.randn(53, 12, generator=generator)
    vocab = 44  # rows past it are embedding padding, sized differently by the two models

    kl = teacher_kl_sum(hidden, OutputHead(weight, None), teacher_hidden, OutputHead(teacher_weight, None), vocab, chunk_tokens=chunk)
    (1.7 * kl).backward()
    chunked = grads(hidden, weight)
    student = F.linear(hidden, weight)[:, :vocab].log_softmax(-1)
    teacher = F.linear(teacher_hidden, teacher_weight)[:, :vocab].log_softmax(-1)
    want = (teacher.exp() * (teacher - student)).sum()
    (1.7 * want).backward()

    assert kl.item() == pytest.approx(want.item(), rel=TOLERANCE)
    for got, full in zip(chunked, grads(hidden, weight)):
        torch.testing.assert_close(got, full, atol=TOLERANCE, rtol=TOLERANCE)
    assert chunked[1][vocab:].abs().max() == 0  # padding rows get no gradient


def test_a_tiny_model_scores_from_hidden_states_as_from_its_own_logits(tiny_checkpoint):
    """The hidden-state path (decoder, then the tied head in chunks) equals the model's full logits,
    values and parameter gradients, under a temperature."""
    model, tokenizer = load_model(str(tiny_checkpoint), seed=0)
    assert output_head(model) is not None
    input_ids = torch.tensor([tokenizer.encode("Ann has 3 pens, gets 2. How many?")] * 2)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :3] = 0  # a left-padded row
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    scored_BL = torch.zeros_like(input_ids, dtype=torch.bool)
    scored_BL[:, 4:-1] = True
    scored_BL[0, 6] = False
    targets_N = F.pad(input_ids[:, 1:], (0, 1))[scored_BL]

    scores = score_tokens(model, inputs, scored_BL, targets_N, temperature=0.7, with_entropy=True, chunk_tokens=3)
    (scores.logprobs_N.sum() + 0.5 * scores.entropy_N.sum()).backward()
    chunked = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    full = scores_from_logits(model(**inputs).logits[scored_BL], targets_N, temperature=0.7, with_entropy=True)
    (full.logprobs_N.sum() + 0.5 * full.entropy_N.sum()).backward()

    torch.testing.assert_close(scores.logprobs_N, full.logprobs_N, atol=TOLERANCE, rtol=TOLERANCE)
    torch.testing.assert_close(scores.entropy_N, full.entropy_N, atol=TOLERANCE, rtol=TOLERANCE)
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(chunked[name], parameter.grad, atol=TOLERANCE, rtol=TOLERANCE, msg=name)
    assert decoder_hidden(model, inputs).shape == (*input_ids.shape, model.config.hidden_size)


def test_an_architecture_whose_logits_are_not_a_plain_projection_is_scored_from_its_logits(tmp_path):
    """Gemma 2 soft-caps its logits: scoring its hidden states through the head would be wrong,
    so its tokens are scored from its own logits."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                          num_key_value_heads=1, head_dim=8, final_logit_softcapping=2.0)
    torch.manual_seed(0)
    model = Gemma2ForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(30)  # logits large enough for the cap to bite
    assert output_head(model) is None
    input_ids = torch.randint(64, (1, 8))
    scored_BL = torch.ones_like(input_ids, dtype=torch.bool)
    targets_N = torch.randint(64, (8,))
    got = score_tokens(model, {"input_ids": input_ids}, scored_BL, targets_N).logprobs_N
    want = model(input_ids=input_ids).logits[0].log_softmax(-1).gather(-1, targets_N[:, None]).squeeze(-1)
    torch.testing.assert_close(got, want)
    uncapped = F.linear(decoder_hidden(model, {"input_ids": input_ids})[0], model.lm_head.weight).log_softmax(-1)
    assert (uncapped.gather(-1, targets_N[:, None]).squeeze(-1) - want).abs().max() > 0.1  # the plain head would be wrong


def test_under_bf16_autocast_with_fp32_weights_both_paths_agree_to_bf16_precision(tiny_checkpoint):
    """As on a GPU: fp32 master weights, the matmuls in bf16. The chunked path casts explicitly in
    both passes (its backward runs outside autocast), so it must match the model's own bf16 logits."""
    model, tokenizer = load_model(str(tiny_checkpoint), seed=0)
    input_ids = torch.tensor([tokenizer.encode("Ann has 3 pens, gets 2. How many pens now?")] * 3)
    inputs = {"input_ids": input_ids}
    scored_BL = torch.zeros_like(input_ids, dtype=torch.bool)
    scored_BL[:, 3:-1] = True
    targets_N = F.pad(input_ids[:, 1:], (0, 1))[scored_BL]
    results = []
    for chunked in (True, False):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            if chunked:
                scores = score_tokens(model, inputs, scored_BL, targets_N, temperature=0.6, chunk_tokens=5)
            else:
                scores = scores_from_logits(model(**inputs).logits[scored_BL], targets_N, temperature=0.6)
        scores.logprobs_N.sum().backward()
        results.append((scores.logprobs_N.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (chunked_lp, chunked_grads), (full_lp, full_grads) = results
    assert chunked_lp.dtype == torch.float32
    torch.testing.assert_close(chunked_lp, full_lp, atol=2e-2, rtol=2e-2)
    for name, grad in full_grads.items():
        assert chunked_grads[name].dtype == torch.float32
        torch.testing.assert_close(chunked_grads[name], grad, atol=2e-2 * grad.abs().max().item(), rtol=5e-2, msg=name)
