import json

import pytest
from conftest import run_cli, write_jsonl
from safetensors.torch import load_file

from r1cli.commands.grpo import grpo
from r1cli.errors import UserError
from r1cli.recipes import grpo as grpo_module

PROMPTS = [{"prompt": f"Ann has {n} pens, gets {m}. How many pens now?", "answer": str(n + m)} for n in range(2, 9) for m in (1, 2, 3)]
FAST = {"prompts_per_step": 4, "num_generations": 4, "max_new_tokens": 12, "lr": 1e-3, "device": "cpu", "save_every": 0,
        "log_samples_every": 0, "generation_batch_size": 16}


def weights(directory):
    return load_file(directory / "model.safetensors")


def metrics(directory):
    return [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]


def max_difference(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture
def prompts(tmp_path):
    return str(write_jsonl(tmp_path / "p.jsonl", PROMPTS))


@pytest.fixture
def varied(tmp_path, monkeypatch) -> str:
    """A reward that differs between completions of one prompt, so every group carries signal."""
    (tmp_path / "varied_reward.py").write_text("def score(record):\n    return float(sum(map(ord, record['completion'])) % 5)\n")
    monkeypatch.chdir(tmp_path)
    return "varied_reward:score"


def test_a_run_logs_every_metric_and_writes_a_loadable_checkpoint(tmp_path, tiny_checkpoint, prompts):
    grpo(str(tiny_checkpoint), prompts, tmp_path / "out", ["repetition", "length=0.5"], steps=3, **{**FAST, "log_samples_every": 2})
    lines = metrics(tmp_path / "out")
    assert [m["step"] for m in lines] == [1, 2, 3]
    expected = {"reward", "reward_std", "rewards/repetition", "rewards/length", "clipped_low", "clipped_high", "entropy",
                "completion_length", "completion_length_max", "truncated", "uniform_groups", "generate_tokens_per_s",
                "train_tokens_per_s", "generate_seconds", "score_seconds", "train_seconds", "completions", "grad_norm"}
    assert expected <= set(lines[0]) and lines[0]["completions"] == 16
    samples = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {2} and {"completion", "rewards", "reward"} <= set(samples[0])
    lineage = json.loads((tmp_path / "out" / "r1.json").read_text())
    assert lineage["command"] == "grpo" and lineage["step"] == 3 and lineage["metrics"]["reward"] == lines[-1]["reward"]
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "out")


def test_gradient_accumulation_does_not_change_the_run(tmp_path, tiny_checkpoint, prompts, varied):
    for accumulation in (1, 4):
        grpo(str(tiny_checkpoint), prompts, tmp_path / f"a{accumulation}", [varied], steps=2, grad_accum=accumulation,
             loss="dapo", **FAST)
    assert max_difference(weights(tmp_path / "a1"), weights(tmp_path / "a4")) < 1e-5
    assert max_difference(weights(tmp_path / "a1"), weights(tiny_checkpoint)) > 1e-4  # the policy did move
    assert [m["reward"] for m in metrics(tmp_path / "a1")] == [m["reward"] for m in metrics(tmp_path / "a4")]


def test_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path, tiny_checkpoint, prompts, varied, monkeypatch):
    options = {**FAST, "save_every": 2}
    grpo(str(tiny_checkpoint), prompts, tmp_path / "whole", [varied], steps=4, **options)
    real, calls = grpo_module.update_policy, {"n": 0}

    def dies_on_the_third_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(grpo_module, "update_policy", dies_on_the_third_step)
    with pytest.raises(KeyboardInterrupt):
        grpo(str(tiny_checkpoint), prompts, tmp_path / "resumed", [varied], steps=4, **options)
    monkeypatch.setattr(grpo_module, "update_policy", real)
    grpo(str(tiny_checkpoint), prompts, tmp_path / "resumed", [varied], steps=4, **options)
    assert max_difference(weights(tmp_path / "whole"), weights(tmp_path / "resumed")) < 1e-5
    assert max_difference(weights(tmp_path / "whole"), weights(tiny_checkpoint)) > 1e-4
    assert [m["step"] for m in metrics(tmp_path / "resumed")] == [1, 2, 3, 4]


def test_skip_uniform_groups_refills_the_step(tmp_path, tiny_checkpoint, monkeypatch):
    (tmp_path / "half_uniform.py").write_text(
        "def score(record):\n"
        "    # prompts with 'flat' score the same whatever the completion: their groups are uniform\n"
        "    return 0.0 if 'flat' in record['prompt'] else float(len(record['completion']) % 3)\n")
    monkeypatch.chdir(tmp_path)
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"{'flat' if i % 2 else 'open'} prompt {i}"} for i in range(40)])
    grpo(str(tiny_checkpoint), str(prompts), tmp_path / "out", ["half_uniform:score"], steps=3, skip_uniform_groups=True, **FAST)
    for line in metrics(tmp_path / "out"):
        # refilled to 4 groups of 4, after at least one uniform group was dropped (1 of 5 seen, or more)
        assert line["completions"] == 16 and line["uniform_groups"] >= 0.2


@pytest.mark.parametrize("lora_r", [0, 4])
def test_kl_to_the_reference_with_multiple_passes(tmp_path, tiny_checkpoint, prompts, varied, lora_r):
    grpo(str(tiny_checkpoint), prompts, tmp_path / "out", [varied], steps=2, beta=0.04, iterations=2, minibatches=2,
         lora_r=lora_r, **FAST)
    lines = metrics(tmp_path / "out")
    assert lines[1]["kl"] > 0 and all(line["kl"] >= 0 for line in lines)


def test_bad_options_are_one_line(tmp_path, tiny_checkpoint, prompts, monkeypatch, capsys):
    base = ["grpo", str(tiny_checkpoint), prompts, "--out", str(tmp_path / "o"), "--reward", "format"]
    for extra, message in ((["--loss", "ppo"], "--loss 'ppo' is not one of: grpo, dapo, dr_grpo"),
                           (["--scale-rewards", "std"], "--scale-rewards 'std' is not one of: group, batch, none"),
                           (["--lora-r", "4", "--beta", "0.1", "--ref-update-every", "5"], "--ref-update-every needs full fine-tuning"),
                           (["--reward", "fromat"], "unknown reward 'fromat'; valid: accuracy")):
        status, _, err = run_cli(monkeypatch, capsys, *base, *extra)
        assert status == 2 and message in err, err
    with pytest.raises(UserError, match="fewer than --prompts-per-step 100"):
        grpo(str(tiny_checkpoint), prompts, tmp_path / "o", ["format"], steps=1, **{**FAST, "prompts_per_step": 100})


@pytest.mark.slow
def test_r1_zero_on_the_toy_world_raises_reward_and_accuracy(tmp_path, monkeypatch, capsys):
    """A shortened R1-Zero: the toy base, GRPO with accuracy and format rewards, 40 steps."""
    assert run_cli(monkeypatch, capsys, "toy", "data", str(tmp_path / "data"))[0] == 0
    assert run_cli(monkeypatch, capsys, "toy", "base", str(tmp_path / "base"), "--data", str(tmp_path / "data" / "pretrain.jsonl"))[0] == 0
    grpo(str(tmp_path / "base"), str(tmp_path / "data" / "rl_prompts.jsonl"), tmp_path / "r1-zero", ["accuracy", "format"], steps=40,
         prompts_per_step=16, num_generations=8, max_new_tokens=96, lr=2e-4, save_every=0, log_samples_every=0, device="cpu")
    lines = metrics(tmp_path / "r1-zero")
    first, last = lines[:8], lines[-8:]

    def mean(rows, key):
        return sum(r[key] for r in rows) / len(rows)

    assert mean(last, "reward") > mean(first, "reward") + 0.3
    assert mean(last, "accuracy") > mean(first, "accuracy") + 0.05
    assert mean(last, "format") > 0.9


def test_completions_no_reward_applies_to_get_no_advantage_and_are_counted(tmp_path, tiny_checkpoint, monkeypatch):
    (tmp_path / "sometimes.py").write_text(
        "def score(record):\n"
        "    # no opinion on completions of odd character-sum: they must move nothing\n"
        "    total = sum(map(ord, record['completion']))\n"
        "    return None if total % 2 else float(total % 7)\n")
    monkeypatch.chdir(tmp_path)
    seen = []
    original = grpo_module.update_policy

    def spy(policy, rollouts, advantages_B, settings):
        seen.append(([r.reward for r in rollouts], advantages_B.tolist()))
        return original(policy, rollouts, advantages_B, settings)

    monkeypatch.setattr(grpo_module, "update_policy", spy)
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    grpo(str(tiny_checkpoint), str(prompts), tmp_path / "out", ["sometimes:score"], steps=2, **FAST)
    for (rewards, advantages), line in zip(seen, metrics(tmp_path / "out")):
        assert line["unscored"] == sum(r is None for r in rewards) and 0 < line["unscored"] < len(rewards)
        scored = [r for r in rewards if r is not None]
        assert line["reward"] == pytest.approx(sum(scored) / len(scored))
        for start in range(0, len(rewards), 4):  # groups of G = 4: mean and std over the scored members only
            group, got = rewards[start : start + 4], advantages[start : start + 4]
            valid = [r for r in group if r is not None]
            if len(valid) < 2:
                assert got == [0.0] * 4
                continue
            mean = sum(valid) / len(valid)
            std = (sum((r - mean) ** 2 for r in valid) / (len(valid) - 1)) ** 0.5
            assert got == pytest.approx([0.0 if r is None else (r - mean) / (std + 1e-4) for r in group], abs=1e-5)


@pytest.mark.parametrize("lora_r", [0, 4])
def test_the_fast_engine_trains_as_the_hf_engine_and_its_copy_never_goes_stale(tmp_path, tiny_checkpoint, prompts, varied, monkeypatch,
                                                                                 lora_r):
    """On the CPU in fp32 both engines sample the same rollouts, so the runs match; the engine's
    log-probs match the policy's before every update (a copy left stale would not)."""
    runs = {}
    for engine in ("hf", "fast"):
        grpo(str(tiny_checkpoint), prompts, tmp_path / engine, [varied], steps=3, engine=engine, lora_r=lora_r, **FAST)
        runs[engine] = metrics(tmp_path / engine)
    for hf_line, fast_line in zip(runs["hf"], runs["fast"]):
        assert fast_line["reward"] == hf_line["reward"] and fast_line["completion_length"] == hf_line["completion_length"]
        assert fast_line["loss"] == pytest.approx(hf_line["loss"], rel=1e-4, abs=1e-6)
        assert fast_line["engine_logprob_gap"] < 1e-4 and hf_line["engine_logprob_gap"] < 1e-4
    from r1cli.engines.fast import FastEngine

    monkeypatch.setattr(FastEngine, "refresh_weights", lambda self, model: None)  # what a forgotten refresh would do
    grpo(str(tiny_checkpoint), prompts, tmp_path / "stale", [varied], steps=3, engine="fast", lora_r=lora_r, **FAST)
    assert max(line["engine_logprob_gap"] for line in metrics(tmp_path / "stale")[1:]) > 1e-3
