"""CUDA checks, run on a GPU machine with `pytest -m gpu`."""

import json
import math

import pytest
import torch
from conftest import write_jsonl
from transformers import AutoModelForCausalLM

from r1cli.commands.sft import sft

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("lora_r", [0, 4])
def test_sft_on_cuda_in_bf16(tmp_path, tiny_config, chat_records, lora_r):
    data = write_jsonl(tmp_path / "d.jsonl", chat_records)
    sft(str(tiny_config), [str(data)], tmp_path / "out", max_steps=4, lr=1e-3, batch_size=4, save_every=2,
        lora_r=lora_r, gradient_checkpointing=True)
    lines = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 4 and all(math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"]) for m in lines)
    lineage = json.loads((tmp_path / "out" / "r1.json").read_text())
    assert lineage["options"]["dtype"] == "auto"
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype="auto")
    assert next(model.parameters()).dtype == torch.bfloat16


@pytest.mark.parametrize("lora_r", [0, 4])
def test_grpo_on_cuda_in_bf16(tmp_path, tiny_checkpoint, lora_r):
    from r1cli.commands.grpo import grpo

    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"{n} plus 1?", "answer": str(n + 1)} for n in range(8)])
    grpo(str(tiny_checkpoint), str(prompts), tmp_path / "out", ["repetition", "length"], steps=2, prompts_per_step=4,
         num_generations=4, max_new_tokens=16, lr=1e-3, beta=0.04, lora_r=lora_r, gradient_checkpointing=True, save_every=1)
    lines = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(math.isfinite(m["loss"]) and math.isfinite(m["kl"]) for m in lines)


def test_distill_with_kd_on_cuda_in_bf16(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    from conftest import run_cli

    traces = write_jsonl(tmp_path / "t.jsonl", [
        {"id": f"p{n}", "prompt": f"Ann has {n} pens, gets 2. How many pens now?", "answer": str(n + 2),
         "completion": f"<think>{n} plus 2 is {n + 2}.</think> The answer is \\boxed{{{n + 2}}}."} for n in range(8)])
    status, _, err = run_cli(monkeypatch, capsys, "distill", str(tiny_checkpoint), str(tiny_checkpoint), "--traces", str(traces),
                             "--out", str(tmp_path / "s"), "--kd-weight", "0.5", "--max-steps", "3", "--batch-size", "4", "--lr", "1e-3")
    assert status == 0, err
    lines = [json.loads(line) for line in (tmp_path / "s" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and all(math.isfinite(m["loss"]) and math.isfinite(m["kd_kl"]) for m in lines)
    assert lines[0]["kd_kl"] < 1e-2  # the same weights at the start: only bf16 rounding differs


# ---------------------------------------------------------------- the fast engine with CUDA graphs


def fast_on_cuda(family: str, dtype=torch.float32):
    from test_fast_engine import build

    from r1cli.modeling import load_tokenizer
    from r1cli.toy.tokenizer import TOKENIZER_DIR

    tokenizer = load_tokenizer(str(TOKENIZER_DIR))
    return build(tokenizer, family).to("cuda", dtype), tokenizer


@pytest.mark.parametrize("family", ["qwen2", "llama", "qwen3", "llama-rope-llama3", "mistral-window"])
def test_fast_engine_greedy_on_cuda_graphs_equals_generate(family):
    from test_fast_engine import PROMPTS

    from r1cli.engines.base import SamplingOptions
    from r1cli.engines.fast import FastEngine

    model, tokenizer = fast_on_cuda(family)
    engine = FastEngine(model, tokenizer, batch_size=8)
    completions = engine.generate_ids(PROMPTS, SamplingOptions(temperature=0.0, max_new_tokens=14), n=2)
    assert engine.graphs.use_graphs and engine.graphs.graphs
    for prompt, (first, second) in zip(PROMPTS, completions):
        reference = model.generate(torch.tensor([prompt], device="cuda"), do_sample=False, max_new_tokens=14, min_new_tokens=14,
                                   pad_token_id=0, eos_token_id=None)[0, len(prompt):].tolist()
        assert first.token_ids == second.token_ids == reference


def test_fast_engine_on_cuda_graphs_equals_the_hf_engine_eos_stops_and_more_requests_than_slots():
    from test_fast_engine import PROMPTS, same

    from r1cli.engines.base import SamplingOptions
    from r1cli.engines.fast import FastEngine
    from r1cli.engines.hf import HFEngine

    model, tokenizer = fast_on_cuda("qwen2")
    model.generation_config.eos_token_id = list(range(100, 140))
    options = SamplingOptions(temperature=1.0, top_p=0.95, max_new_tokens=40, seed=3)
    hf = HFEngine(model, tokenizer, batch_size=32).generate_ids(PROMPTS, options, n=6)
    for slots in (3, 32):
        same(FastEngine(model, tokenizer, batch_size=slots).generate_ids(PROMPTS, options, n=6), hf)
    texts = [c.text for p in hf for c in p if len(c.text) > 6]
    stopped = SamplingOptions(temperature=1.0, max_new_tokens=40, seed=3, stop=(texts[0][3:6],))
    same(FastEngine(model, tokenizer, batch_size=5).generate_ids(PROMPTS, stopped, n=6),
         HFEngine(model, tokenizer).generate_ids(PROMPTS, stopped, n=6))


def test_fast_engine_in_bf16_matches_the_forward_within_bf16_tolerance_and_repeats_itself():
    from test_fast_engine import PROMPTS

    from r1cli.engines.base import SamplingOptions
    from r1cli.engines.fast import FastEngine
    from r1cli.engines.fast.model import Decoder, RopeTable

    model, tokenizer = fast_on_cuda("qwen2", torch.bfloat16)
    engine = FastEngine(model, tokenizer)
    decoder = Decoder(engine.weights, RopeTable(model, 64, torch.bfloat16, torch.device("cuda")))
    ids = torch.tensor([PROMPTS[1]], device="cuda")
    ours = decoder.prefill(ids, torch.tensor([ids.shape[1]], device="cuda"), lambda *a: None)[0]
    with torch.no_grad():
        theirs = model(ids).logits[0, -1].float()
    assert (ours - theirs).abs().max() <= 0.02 * theirs.abs().max()
    options = SamplingOptions(temperature=1.0, max_new_tokens=32, seed=11)
    first = engine.generate_ids(PROMPTS, options, n=4)
    again = FastEngine(model, tokenizer).generate_ids(PROMPTS, options, n=4)
    assert [[c.token_ids for c in p] for p in first] == [[c.token_ids for c in p] for p in again]


def test_fast_engine_refresh_keeps_captured_graphs_current():
    from test_fast_engine import PROMPTS

    from r1cli.engines.base import SamplingOptions
    from r1cli.engines.fast import FastEngine

    model, tokenizer = fast_on_cuda("llama")
    engine = FastEngine(model, tokenizer, batch_size=8)
    greedy = SamplingOptions(temperature=0.0, max_new_tokens=12)
    before = engine.generate_ids(PROMPTS, greedy)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-2)
    ids = torch.tensor([PROMPTS[1]], device="cuda")
    model(ids, labels=ids).loss.backward()
    optimizer.step()
    engine.refresh_weights(model)
    after = engine.generate_ids(PROMPTS, greedy)
    reference = [model.generate(torch.tensor([p], device="cuda"), do_sample=False, max_new_tokens=12, min_new_tokens=12,
                                pad_token_id=0, eos_token_id=None)[0, len(p):].tolist() for p in PROMPTS]
    assert [p[0].token_ids for p in after] == reference != [p[0].token_ids for p in before]


def test_triton_noise_is_the_keyed_noise_bit_for_bit():
    from r1cli.engines import noise_triton
    from r1cli.engines.sampling import keyed_uniform, row_hashes, token_hashes
    from r1cli.seeding import derive_seed

    assert noise_triton.available()
    keys = torch.tensor([derive_seed(1, "r", i) for i in range(7)], device="cuda")
    steps = torch.tensor([0, 3, 7, 100, 5, 2**33, 9], device="cuda")
    tokens = token_hashes(151_936, "cuda")
    uniform = noise_triton.log_exponential(row_hashes(keys, steps), tokens, uniform_only=True)
    assert torch.equal(uniform, keyed_uniform(keys, steps, 151_936, tokens))
    noise = noise_triton.log_exponential(row_hashes(keys, steps), tokens)
    reference = torch.log(-torch.log(keyed_uniform(keys, steps, 151_936, tokens)))
    assert torch.allclose(noise, reference, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("qk_norm", [False, True])
def test_rope_into_cache_kernel_equals_the_torch_ops_in_bf16(qk_norm):
    from r1cli.engines.fast import kernels
    from r1cli.engines.fast.model import rms_norm, rotate

    assert kernels.available()
    torch.manual_seed(0)
    bf16, heads, kv_heads, dim, slots, width, rows = torch.bfloat16, 14, 2, 64, 9, 96, 7
    qkv = torch.randn(rows, (heads + 2 * kv_heads) * dim, device="cuda", dtype=bf16) * 3
    positions = torch.tensor([0, 5, 95, 17, 17, 40, 1], device="cuda")
    angles = torch.randn(width, dim // 2, device="cuda") * 4
    angles = torch.cat((angles, angles), -1)
    cos, sin = angles.cos().to(bf16), angles.sin().to(bf16)
    signed_sin = torch.cat((-sin[:, : dim // 2], sin[:, dim // 2 :]), -1)
    norm = torch.randn(heads + kv_heads, dim, device="cuda", dtype=bf16) if qk_norm else None
    k_cache, v_cache = torch.randn(slots, kv_heads, width, dim, device="cuda", dtype=bf16), torch.randn(slots, kv_heads, width, dim, device="cuda", dtype=bf16)
    k_expected, v_expected = k_cache.clone(), v_cache.clone()
    q = kernels.rope_into_cache(qkv, positions, cos, signed_sin, norm, 1e-6, k_cache, v_cache, heads, kv_heads)
    # The torch ops of Decoder._qkv and the cache writes of Decoder.decode.
    qk = qkv[:, : (heads + kv_heads) * dim].unflatten(-1, (heads + kv_heads, dim))
    if qk_norm:
        qk = rms_norm(qk, None, 1e-6) * norm
    qk = rotate(qk, cos[positions][:, None, :], signed_sin[positions][:, None, :])
    rows_index = torch.arange(rows, device="cuda")
    k_expected[rows_index, :, positions] = qk[:, heads:]
    v_expected[rows_index, :, positions] = qkv[:, (heads + kv_heads) * dim :].unflatten(-1, (kv_heads, dim))
    assert q.shape == (rows, heads, 1, dim) and q.is_contiguous()
    assert torch.equal(v_cache, v_expected)  # V copied, and nothing else of either cache touched
    if qk_norm:  # rsqrt may differ in its last fp32 place: at most one bf16 step, rarely
        for ours, theirs in ((q[:, :, 0], qk[:, :heads]), (k_cache, k_expected)):
            assert (ours != theirs).float().mean() < 0.01
            assert torch.allclose(ours.float(), theirs.float(), rtol=2**-7, atol=1e-6)
    else:
        assert torch.equal(q[:, :, 0], qk[:, :heads]) and torch.equal(k_cache, k_expected)


def test_silu_mul_kernel_equals_torch_in_bf16():
    from r1cli.engines.fast import kernels

    gate_up = torch.randn(33, 2 * 4864, device="cuda", dtype=torch.bfloat16) * 4
    gate, up = gate_up.chunk(2, dim=-1)
    ours, theirs = kernels.silu_mul(gate_up), torch.nn.functional.silu(gate) * up
    assert (ours != theirs).float().mean() < 1e-3
    assert torch.allclose(ours.float(), theirs.float(), rtol=2**-7, atol=1e-6)


@pytest.mark.parametrize("family", ["qwen2", "llama", "qwen3"])
def test_fast_engine_kernels_give_the_torch_steps_completions_in_bf16(family):
    from test_fast_engine import PROMPTS

    from r1cli.engines.base import SamplingOptions
    from r1cli.engines.fast import FastEngine

    model, tokenizer = fast_on_cuda(family, torch.bfloat16)
    fused, plain = FastEngine(model, tokenizer, batch_size=8), FastEngine(model, tokenizer, batch_size=8, use_kernels=False)
    for options in (SamplingOptions(temperature=0.0, max_new_tokens=24), SamplingOptions(temperature=1.0, max_new_tokens=24, seed=5)):
        ours, theirs = fused.generate_ids(PROMPTS, options, n=3), plain.generate_ids(PROMPTS, options, n=3)
        assert fused.decoder.fused and not plain.decoder.fused and fused.graphs.graphs
        assert [[c.token_ids for c in p] for p in ours] == [[c.token_ids for c in p] for p in theirs]
        for a, b in zip((c for p in ours for c in p), (c for p in theirs for c in p)):
            assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) < 0.05
