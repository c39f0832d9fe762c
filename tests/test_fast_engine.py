"""The fast engine against transformers and the hf engine, eagerly on the CPU in fp32 (the same
code the GPU captures in graphs; tests/test_gpu.py repeats the checks there)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from r1cli.engines.base import SamplingOptions
from r1cli.engines.fast import FastEngine
from r1cli.engines.fast.model import Decoder, KVCache, RopeTable, unsupported_reason
from r1cli.engines.hf import HFEngine
from r1cli.engines.sampling import filter_logits, sample_tokens
from r1cli.modeling import load_tokenizer
from r1cli.seeding import derive_seed
from r1cli.toy.tokenizer import TOKENIZER_DIR

# Ragged prompts: lengths 3, 9, 1 and 5.
PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14, 15, 16], [17], [30, 31, 32, 33, 34]]

FAMILIES = {
    "qwen2": ("qwen2", {"tie_word_embeddings": True}),  # q/k/v bias, tied head
    "llama": ("llama", {"tie_word_embeddings": False}),  # no bias, untied head
    "qwen3": ("qwen3", {"tie_word_embeddings": True, "head_dim": 16}),  # q/k norm
    "llama-rope-llama3": ("llama", {"tie_word_embeddings": False, "rope_parameters": {
        "rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64}}),
    "mistral-window": ("mistral", {"tie_word_embeddings": False, "sliding_window": 6}),
}


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(str(TOKENIZER_DIR))


def build(tokenizer, family: str, seed: int = 0):
    model_type, extra = FAMILIES[family]
    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2, intermediate_size=96, max_position_embeddings=256,
                                  initializer_range=0.2, **extra)  # large weights: varied greedy tokens, not one repeated
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    if model_type == "qwen2":
        for layer in model.model.layers:  # random biases, so the q/k/v bias path is exercised
            for projection in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                torch.nn.init.normal_(projection.bias, std=0.5)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def hf_logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_greedy_equals_transformers_generate_token_for_token(tokenizer, family):
    model = build(tokenizer, family)
    if family == "llama-rope-llama3":
        assert model.model.rotary_emb.rope_type == "llama3"
    engine = FastEngine(model, tokenizer, batch_size=8)
    options = SamplingOptions(temperature=0.0, max_new_tokens=14)
    completions = engine.generate_ids(PROMPTS, options, n=2)
    for prompt, (first, second) in zip(PROMPTS, completions):
        reference = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=14, min_new_tokens=14,
                                   pad_token_id=0, eos_token_id=None)[0, len(prompt):].tolist()
        assert first.token_ids == second.token_ids
        assert first.token_ids == reference[: len(first.token_ids)]
        assert len(set(reference)) > 3  # a model that repeats one token would prove little


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_prefill_and_decode_logits_match_the_transformers_forward(tokenizer, family):
    model = build(tokenizer, family)
    engine = FastEngine(model, tokenizer)
    decoder = Decoder(engine.weights, RopeTable(model, 64, torch.float32, torch.device("cpu")))
    cache = KVCache(engine.spec, 2, 64, torch.float32, torch.device("cpu"))
    prompts = [PROMPTS[1], PROMPTS[0]]
    width = max(map(len, prompts))
    ids = torch.tensor([p + [0] * (width - len(p)) for p in prompts])

    def write(layer, k, v):
        cache.k[layer][:, :, :width], cache.v[layer][:, :, :width] = k, v

    logits = decoder.prefill(ids, torch.tensor([len(p) for p in prompts]), write)
    sequences = [list(p) for p in prompts]
    for row, prompt in enumerate(prompts):
        assert torch.allclose(logits[row], hf_logits(model, prompt)[-1], atol=1e-4)
    # Decode 10 tokens for both rows (each at its own position) and compare with a full forward.
    for _ in range(10):
        next_ids = logits.argmax(-1)
        for row, token in enumerate(next_ids.tolist()):
            sequences[row].append(token)
        positions = torch.tensor([len(s) - 1 for s in sequences])
        logits = decoder.decode(cache, 2, next_ids, positions)
        for row, sequence in enumerate(sequences):
            assert torch.allclose(logits[row], hf_logits(model, sequence)[-1], atol=1e-4), (family, len(sequence))


def test_sampled_logprobs_equal_a_fresh_forward(tokenizer):
    model = build(tokenizer, "qwen2")
    options = SamplingOptions(temperature=0.7, top_p=0.9, max_new_tokens=12, seed=4)
    for prompt, completions in zip(PROMPTS, FastEngine(model, tokenizer).generate_ids(PROMPTS, options, n=2)):
        for completion in completions:
            logits = hf_logits(model, prompt + completion.token_ids)[len(prompt) - 1 : -1]
            expected = (logits / 0.7).log_softmax(-1).gather(-1, torch.tensor(completion.token_ids)[:, None]).squeeze(-1)
            assert torch.allclose(torch.tensor(completion.logprobs), expected, atol=1e-4)


def test_per_row_steps_draw_from_the_filtered_distribution():
    """The fast engine samples each row at its own step (rows start at different times): the
    draws still follow the filtered distribution, and equal the one-step-for-all draws."""
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])
    rows = 40_000
    keys = torch.tensor([derive_seed(9, "row", i) for i in range(rows)])
    steps = torch.arange(rows) % 7
    for options in (SamplingOptions(temperature=1.0, top_k=3), SamplingOptions(temperature=1.3, top_p=0.8)):
        tokens, _ = sample_tokens(logits.repeat(rows, 1), options, keys, steps)
        expected = filter_logits(logits[None] / options.temperature, options.top_k, options.top_p).softmax(-1)[0]
        assert torch.allclose(torch.bincount(tokens, minlength=5).float() / rows, expected, atol=0.01)
        at_three = steps == 3
        same_step, _ = sample_tokens(logits.repeat(int(at_three.sum()), 1), options, keys[at_three], 3)
        assert torch.equal(tokens[at_three], same_step)


def test_refresh_weights_after_an_optimizer_step_leaves_nothing_stale(tokenizer):
    model = build(tokenizer, "llama")
    engine = FastEngine(model, tokenizer)
    decoder = Decoder(engine.weights, RopeTable(model, 32, torch.float32, torch.device("cpu")))
    prompt = torch.tensor([PROMPTS[1]])

    def engine_logits():
        return decoder.prefill(prompt, torch.tensor([prompt.shape[1]]), lambda *a: None)[0]

    before = engine_logits()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    model(prompt, labels=prompt).loss.backward()
    optimizer.step()
    model.eval()
    updated = hf_logits(model, PROMPTS[1])[-1]
    assert not torch.allclose(before, updated, atol=1e-3)  # the step moved the logits
    assert torch.allclose(engine_logits(), before)  # no refresh: the engine's copy is its own
    engine.refresh_weights(model)
    assert torch.allclose(engine_logits(), updated, atol=1e-4)


def test_refresh_weights_merges_lora_during_the_copy(tokenizer):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(build(tokenizer, "qwen2"), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.3)  # a trained adapter (B = 0 would change nothing)
    engine = FastEngine(model, tokenizer)
    decoder = Decoder(engine.weights, RopeTable(model, 32, torch.float32, torch.device("cpu")))
    logits = decoder.prefill(torch.tensor([PROMPTS[1]]), torch.tensor([len(PROMPTS[1])]), lambda *a: None)[0]
    with_adapter = hf_logits(model, PROMPTS[1])[-1]
    with model.disable_adapter():
        without = hf_logits(model, PROMPTS[1])[-1]
    assert torch.allclose(logits, with_adapter, atol=1e-4) and not torch.allclose(logits, without, atol=1e-2)
    assert not any(getattr(m, "merged", False) for m in model.modules())  # the policy itself stays unmerged


def eos_heavy(tokenizer, family="qwen2"):
    """A model with 40 end-of-sequence ids: completions stop at varied lengths."""
    model = build(tokenizer, family)
    model.generation_config.eos_token_id = list(range(100, 140))
    return model


def same(fast, hf):
    assert [[(c.token_ids, c.text, c.finish_reason) for c in p] for p in fast] == [[(c.token_ids, c.text, c.finish_reason) for c in p] for p in hf]
    for p, q in zip(fast, hf):
        for a, b in zip(p, q):
            assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4)


def test_eos_finish_reasons_and_texts_equal_the_hf_engine(tokenizer):
    model = eos_heavy(tokenizer)
    options = SamplingOptions(temperature=1.0, max_new_tokens=24, seed=1)
    fast = FastEngine(model, tokenizer, batch_size=16).generate_ids(PROMPTS, options, n=4)
    hf = HFEngine(model, tokenizer, batch_size=16).generate_ids(PROMPTS, options, n=4)
    same(fast, hf)
    reasons = [c.finish_reason for p in fast for c in p]
    lengths = {len(c.token_ids) for p in fast for c in p}
    assert "stop" in reasons and "length" in reasons and len(lengths) > 4


def test_stop_strings_equal_the_hf_engine(tokenizer):
    model = build(tokenizer, "llama")
    free = HFEngine(model, tokenizer).generate_ids(PROMPTS, SamplingOptions(temperature=1.0, max_new_tokens=30, seed=2), n=3)
    texts = [c.text for p in free for c in p]
    stops = (texts[0][len(texts[0]) // 2 :][:3], texts[5][len(texts[5]) // 3 :][:2])  # pieces of real completions
    options = SamplingOptions(temperature=1.0, max_new_tokens=30, seed=2, stop=stops)
    fast = FastEngine(model, tokenizer, batch_size=5).generate_ids(PROMPTS, options, n=3)
    hf = HFEngine(model, tokenizer).generate_ids(PROMPTS, options, n=3)
    same(fast, hf)
    cut = [c for p in fast for c in p if c.finish_reason == "stop"]
    assert cut and all(any(c.text.endswith(s) for s in stops) for c in cut)


@pytest.mark.parametrize("slots", [1, 3, 7])
def test_continuous_batching_with_more_requests_than_slots_returns_each_once_in_order(tokenizer, slots):
    model = eos_heavy(tokenizer, "llama")
    options = SamplingOptions(temperature=1.0, max_new_tokens=16, seed=5)
    seeds = [[derive_seed(0, "r", i, k) for k in range(count)] for i, count in enumerate([3, 1, 5, 2])]
    fast = FastEngine(model, tokenizer, batch_size=slots).generate_ids(PROMPTS, options, seeds=seeds)
    hf = HFEngine(model, tokenizer, batch_size=4).generate_ids(PROMPTS, options, seeds=seeds)
    assert [len(p) for p in fast] == [3, 1, 5, 2]
    same(fast, hf)


def test_one_engine_serves_calls_of_growing_length(tokenizer):
    model = build(tokenizer, "qwen3")
    engine = FastEngine(model, tokenizer, batch_size=4)
    hf = HFEngine(model, tokenizer)
    for max_new_tokens in (4, 300):  # the second needs a wider cache than the first made
        options = SamplingOptions(temperature=1.0, max_new_tokens=max_new_tokens, seed=7)
        same(engine.generate_ids(PROMPTS[:2], options, n=2), hf.generate_ids(PROMPTS[:2], options, n=2))
    assert engine.cache.width >= 300 + len(PROMPTS[1])


def test_other_architectures_fall_back_to_hf_with_one_line(tmp_path, capsys):
    import json

    from r1cli.engines.base import EngineSettings

    config = tmp_path / "gpt2.json"
    config.write_text(json.dumps({"model_type": "gpt2", "tokenizer": str(TOKENIZER_DIR), "n_embd": 32, "n_layer": 1, "n_head": 2,
                                  "n_positions": 64}))
    engine, _ = FastEngine.load(str(config), EngineSettings(device="cpu"))
    assert isinstance(engine, HFEngine)
    err = capsys.readouterr().err
    assert "model type 'gpt2'" in err and "generating with hf" in err and len(err.strip().splitlines()) == 1


def test_unsupported_rope_is_refused(tokenizer):
    model = build(tokenizer, "llama")
    model.model.rotary_emb.rope_type = "dynamic"
    assert "rope type 'dynamic'" in unsupported_reason(model)


def test_a_stop_string_of_a_partial_character_and_no_new_tokens_match_the_hf_engine(tokenizer):
    """Token 832 alone decodes to ' \\ufffd' (half a character), with 118 to ' 印': a look at a
    longer stretch must not hide a stop that the per-token check finds."""
    assert tokenizer.decode([832]).endswith("\ufffd") and "\ufffd" not in tokenizer.decode([832, 118])
    model = eos_heavy(tokenizer, "llama")
    model.generation_config.eos_token_id = list(range(100, 130))
    prompts = PROMPTS + [[40 + i for i in range(13)], [77, 78]]
    options = SamplingOptions(temperature=1.0, max_new_tokens=30, seed=31, stop=("\ufffd",))
    same(FastEngine(model, tokenizer, batch_size=1).generate_ids(prompts, options, n=3), HFEngine(model, tokenizer).generate_ids(prompts, options, n=3))
    nothing = SamplingOptions(temperature=1.0, max_new_tokens=0, seed=1)
    same(FastEngine(model, tokenizer).generate_ids(PROMPTS, nothing, n=2), HFEngine(model, tokenizer).generate_ids(PROMPTS, nothing, n=2))
