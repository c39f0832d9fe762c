import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from r1cli.data.templates import R1_ZERO_TEMPLATE, format_prompt
from r1cli.engines.base import SamplingOptions
from r1cli.engines.hf import HFEngine
from r1cli.engines.sampling import filter_logits

PROMPTS = ["Tom has 3 pens, gets 1.", "小明有5个球，又买了2个，然后丢了1个。现在有几个球？", "Hi"]


@pytest.fixture
def model_and_tokenizer(tiny_checkpoint):
    return AutoModelForCausalLM.from_pretrained(tiny_checkpoint).eval(), AutoTokenizer.from_pretrained(tiny_checkpoint)


def test_greedy_batched_left_padded_equals_transformers_generate(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    texts = [format_prompt(p, tokenizer, "chat") for p in PROMPTS]
    ours = HFEngine(model, tokenizer, batch_size=3).generate(texts, SamplingOptions(temperature=0, max_new_tokens=12))
    for text, (completion,) in zip(texts, ours):
        inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        reference = model.generate(**inputs, do_sample=False, max_new_tokens=12, eos_token_id=None)[0, inputs["input_ids"].shape[1]:]
        assert completion.token_ids == reference.tolist()[: len(completion.token_ids)]


def test_logprobs_are_the_temperature_scaled_logprobs_of_the_sampled_tokens(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    texts = [format_prompt(p, tokenizer, "chat") for p in PROMPTS]
    results = HFEngine(model, tokenizer, batch_size=2).generate(texts, SamplingOptions(temperature=0.7, max_new_tokens=10, seed=3), n=2)
    for text, completions in zip(texts, results):
        prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        for completion in completions:
            ids = torch.tensor([prompt_ids + completion.token_ids])
            with torch.no_grad():
                logits = model(ids).logits[0, len(prompt_ids) - 1 : -1] / 0.7
            expected = logits.log_softmax(-1).gather(-1, ids[0, len(prompt_ids):, None]).squeeze(-1)
            assert torch.allclose(torch.tensor(completion.logprobs), expected, atol=1e-4)


def test_top_p_and_top_k_keep_exactly_the_right_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.05, 0.3, 0.15]]))
    assert torch.isfinite(filter_logits(logits, 0, 0.8)).tolist() == [[True, False, True, False]]
    assert torch.isfinite(filter_logits(logits, 0, 0.81)).tolist() == [[True, False, True, True]]
    assert torch.isfinite(filter_logits(logits, 2, 1.0)).tolist() == [[True, False, True, False]]


def test_finish_reasons_stop_strings_and_seeds(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    engine = HFEngine(model, tokenizer)
    text = format_prompt("Hi", tokenizer, "chat")
    (greedy,), = engine.generate([text], SamplingOptions(temperature=0, max_new_tokens=6))
    assert greedy.finish_reason == "length" and len(greedy.token_ids) == 6
    end = greedy.token_ids[2]
    engine.eos = {end}  # make that greedy token an end of sequence: generation stops at its first occurrence
    (stopped,), = engine.generate([text], SamplingOptions(temperature=0, max_new_tokens=6))
    assert stopped.finish_reason == "stop" and stopped.token_ids == greedy.token_ids[: greedy.token_ids.index(end) + 1]
    engine.eos = set()
    stop = tokenizer.decode(greedy.token_ids[1:3])
    (cut,), = engine.generate([text], SamplingOptions(temperature=0, max_new_tokens=6, stop=(stop,)))
    assert cut.finish_reason == "stop" and cut.text == greedy.text[: greedy.text.find(stop) + len(stop)]
    first = engine.generate([text], SamplingOptions(temperature=1.0, max_new_tokens=8, seed=1), n=4)
    again = engine.generate([text], SamplingOptions(temperature=1.0, max_new_tokens=8, seed=1), n=4)
    other = engine.generate([text], SamplingOptions(temperature=1.0, max_new_tokens=8, seed=2), n=4)
    assert [c.token_ids for c in first[0]] == [c.token_ids for c in again[0]] != [c.token_ids for c in other[0]]


def test_prompt_templates(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    assert format_prompt("2+2?", tokenizer, "r1-zero") == R1_ZERO_TEMPLATE.format(prompt="2+2?")
    assert R1_ZERO_TEMPLATE.endswith("User: {prompt}. Assistant:")
    chat = format_prompt("2+2?", tokenizer, "chat", system="Think first.")
    assert chat == "<|system|>Think first.<|end|><|user|>2+2?<|end|><|assistant|>"


def test_a_completion_depends_on_its_own_seed_not_on_its_batch(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    ids = [tokenizer(format_prompt(p, tokenizer, "chat"), add_special_tokens=False)["input_ids"] for p in PROMPTS]
    options = SamplingOptions(temperature=1.0, top_p=0.9, max_new_tokens=10)
    together = HFEngine(model, tokenizer, batch_size=6).generate_ids(ids, options, seeds=[[11, 12], [21, 22], [31, 32]])
    alone = HFEngine(model, tokenizer, batch_size=1).generate_ids([ids[1]], options, seeds=[[22]])
    reordered = HFEngine(model, tokenizer, batch_size=4).generate_ids([ids[2], ids[1]], options, seeds=[[32], [21, 22]])
    assert alone[0][0].token_ids == together[1][1].token_ids
    assert [c.token_ids for c in reordered[1]] == [c.token_ids for c in together[1]]
    assert reordered[0][0].token_ids == together[2][1].token_ids
    assert together[1][0].token_ids != together[1][1].token_ids  # other seeds, other draws


def test_keyed_sampling_draws_from_the_filtered_distribution():
    from r1cli.engines.sampling import sample_tokens
    from r1cli.seeding import derive_seed

    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])
    rows = 40_000
    keys = torch.tensor([derive_seed(5, "row", i) for i in range(rows)])
    for options in (SamplingOptions(temperature=0.7), SamplingOptions(temperature=1.0, top_k=3), SamplingOptions(temperature=1.3, top_p=0.8)):
        tokens, logprobs = sample_tokens(logits.repeat(rows, 1), options, keys, step=3)
        expected = filter_logits(logits[None] / options.temperature, options.top_k, options.top_p).softmax(-1)[0]
        frequencies = torch.bincount(tokens, minlength=5).float() / rows
        assert torch.allclose(frequencies, expected, atol=0.01), (options, frequencies, expected)
        # The log-probability returned is the sampled token's under the temperature-scaled distribution.
        assert torch.allclose(logprobs, (logits / options.temperature).log_softmax(-1)[tokens])
