import json
import random
import re

import pytest
from conftest import run_cli
from transformers import AutoTokenizer

from r1cli.toy.tokenizer import TAG_TOKENS, TOKENIZER_DIR, build_tokenizer
from r1cli.toy.world import make_problem, make_world, noisy_completion

WORLD = make_world(0, pretrain=3000)
TOKENIZER = AutoTokenizer.from_pretrained(TOKENIZER_DIR)


def test_shipped_tokenizer_is_what_the_builder_makes():
    assert build_tokenizer().get_vocab() == TOKENIZER.get_vocab()


def test_a_checkpoint_tokenizes_exactly_as_the_shipped_tokenizer(tmp_path, tiny_config):
    """transformers picks the tokenizer class from a checkpoint's model_type (Qwen2Tokenizer for
    qwen2) and that class imposes its own pre-tokenizer: the toy tokenizer must survive it."""
    from r1cli.modeling import load_model
    from r1cli.train.checkpoint import write_loadable

    model, tokenizer = load_model(str(tiny_config))
    write_loadable(tmp_path / "ckpt", model, tokenizer, model.dtype)
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "ckpt")
    texts = [r["text"] for r in WORLD["pretrain"][:500]]
    assert reloaded(texts)["input_ids"] == TOKENIZER(texts)["input_ids"]


def test_tokenizer_round_trips_the_world_and_keeps_tags_whole():
    texts = [r["text"] for r in WORLD["pretrain"]] + [m["content"] for r in WORLD["cold_start"] for m in r["messages"]]
    for text in texts:
        assert TOKENIZER.decode(TOKENIZER(text, add_special_tokens=False)["input_ids"]) == text
    for tag in TAG_TOKENS:
        assert len(TOKENIZER(tag, add_special_tokens=False)["input_ids"]) == 1
    rendered = TOKENIZER.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert rendered == "<|user|>hi<|end|><|assistant|>" and TOKENIZER.eos_token == "<|end|>"


def test_eval_prompts_are_disjoint_from_everything_else_and_answers_are_right():
    eval_prompts = {r["prompt"] for r in WORLD["eval"]}
    others = {r["prompt"] for r in WORLD["rl_prompts"]} | {r["messages"][0]["content"] for r in WORLD["cold_start"]}
    others |= {t.split("<|end|>")[0].removeprefix("<|user|>") for t in (r["text"] for r in WORLD["pretrain"])}
    assert not eval_prompts & others
    assert {r["lang"] for r in WORLD["eval"]} == {"en", "zh"}
    for record in WORLD["eval"]:  # the gold is the prompt's arithmetic, recomputed from its text
        numbers = [int(n) for n in re.findall(r"\d+", record["prompt"])]
        signs = [1] + [-1 if re.search(rf"(gives away|loses|sells|送出|丢了|卖掉) ?{n}(?!\d)", record["prompt"]) else 1 for n in numbers[1:]]
        if len(set(numbers)) == len(numbers):
            assert sum(s * n for s, n in zip(signs, numbers)) == int(record["answer"])


def test_cold_start_is_clean_correct_cot_in_the_prompts_language():
    for record in WORLD["cold_start"]:
        reply = record["messages"][1]["content"]
        assert reply.startswith("<think>") and reply.count("</think>") == 1
        reasoning = reply.split("</think>")[0]
        has_chinese = bool(re.search(r"[\u4e00-\u9fff]", reasoning))
        has_english = bool(re.search(r"\b(plus|minus)\b", reasoning))
        assert (has_chinese, has_english) == ((True, False) if record["lang"] == "zh" else (False, True))
        *_, last_total = re.findall(r"(?:is |等于)(\d+)", reasoning)
        assert re.search(r"boxed\{(\d+)\}", reply).group(1) == last_total


def test_pretraining_completions_are_noisy_like_a_base_models():
    rng = random.Random(1)
    problems = [make_problem(rng, lang) for lang in ("en", "zh") * 500]
    samples = [(p, noisy_completion(p, rng)) for p in problems]
    right = sum(re.findall(r"boxed\{(-?\d+)\}", c)[-1] == str(p.answer) for p, c in samples) / len(samples)
    well_formed = sum(c.startswith("<think>") and "</think>" in c for _, c in samples) / len(samples)
    guesses = sum(c.startswith(("The answer", "答案")) for _, c in samples) / len(samples)

    def mixed(completion: str) -> bool:
        reasoning = completion.split("boxed")[0]
        return bool(re.search(r"[\u4e00-\u9fff]", reasoning)) and bool(re.search(r"\b(plus|minus)\b", reasoning))

    mixed_share = sum(mixed(c) for _, c in samples) / len(samples)
    assert 0.3 < right < 0.7 and 0.25 < well_formed < 0.6 and 0.2 < guesses < 0.4 and 0.15 < mixed_share < 0.5


def test_toy_data_writes_the_six_corpora(tmp_path, monkeypatch, capsys):
    status, _, _ = run_cli(monkeypatch, capsys, "toy", "data", str(tmp_path), "--seed", "3")
    assert status == 0
    counts = {p.stem: len(p.read_text().splitlines()) for p in tmp_path.glob("*.jsonl")}
    assert counts == {"pretrain": 24000, "cold_start": 300, "rl_prompts": 2000, "eval": 200, "general": 600, "general_prompts": 400}
    first = json.loads((tmp_path / "eval.jsonl").read_text().splitlines()[0])
    assert set(first) == {"id", "prompt", "answer", "lang"}
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["files"]["eval.jsonl"]["records"] == 200


@pytest.mark.slow
def test_toy_base_trains_in_three_minutes_and_leaves_headroom(tmp_path, monkeypatch, capsys):
    import time

    import torch
    from transformers import AutoModelForCausalLM

    started = time.time()
    status, _, err = run_cli(monkeypatch, capsys, "toy", "base", str(tmp_path / "base"))
    assert status == 0 and time.time() - started < 180, err
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "base").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "base")
    tokenizer.padding_side = "left"
    records = make_world(0)["eval"][:64]
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": r["prompt"]}], tokenize=False, add_generation_prompt=True) for r in records]
    inputs = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(0)
    output = model.generate(**inputs, do_sample=True, temperature=0.6, top_p=0.95, max_new_tokens=80, num_return_sequences=4)
    texts = tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    answers = [re.findall(r"boxed\{(-?\d+)\}", t.split("</think>")[-1] if "</think>" in t else ("" if "<think>" in t else t)) for t in texts]
    accuracy = sum(bool(a) and a[-1] == records[i // 4]["answer"] for i, a in enumerate(answers)) / len(texts)
    well_formed = sum(t.startswith("<think>") and "</think>" in t for t in texts) / len(texts)
    assert 0.05 < accuracy < 0.5  # it learned the task, and RL has room above it
    assert 0.2 < well_formed < 0.9
