"""Pinned numbers: three steps of tiny `r1 sft` and `r1 grpo` runs on the CPU in fp32, fixed
seeds, every logged loss, reward and gradient norm compared with recorded values.

These hold behaviour still while code moves: a flipped sign, a stale weight, a skipped step or
a changed seed stream changes them. (Negating GRPO's advantages, for one, changes the rewards,
gradient norms and KL of steps 2 and 3.) Recorded with torch 2.13 (CPU) and transformers 5.23;
if a deliberate change moves them, re-record them in the same commit and say why.
"""

from __future__ import annotations

import json

import pytest
from conftest import write_jsonl

from r1cli.commands.grpo import grpo
from r1cli.commands.sft import sft

RTOL = 1e-4
PROMPTS = [{"prompt": f"Ann has {n} pens, gets {m}. How many pens now?", "answer": str(n + m)} for n in range(2, 9) for m in (1, 2, 3)]

SFT_STEPS = [  # loss, grad_norm, lr
    (6.924748799887048, 1.6317201852798462, 0.0005),
    (6.890116613051471, 1.5775706768035889, 0.001),
    (6.839876062729779, 1.6948158740997314, 0.0001),
]
GRPO_STEPS = [  # loss, reward, grad_norm, kl: grpo loss, beta 0.04, clip-higher, temperature 0.7
    (1.862645149230957e-09, 2.375, 0.6566861271858215, 0.0),
    (1.638755202293396e-05, 1.75, 0.6325601935386658, 0.00040899962186813354),
    (3.411620855331421e-05, 2.375, 0.6475273966789246, 0.0008528097532689571),
]
DAPO_STEPS = [  # loss, reward, grad_norm, clipped_low, clipped_high: dapo, mu 2, M 2, unscaled, T 1.2, top-p 0.9
    (-0.03122720494866371, 1.75, 0.8018970191478729, 0.0, 0.001953125),
    (0.014660641551017761, 2.0625, 0.6552435755729675, 0.0, 0.0),
    (0.07147292734589428, 2.0, 0.8419429063796997, 0.0, 0.0),
]


def logged(run, *keys):
    return [tuple(m[key] for key in keys) for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def assert_pinned(actual, expected):
    assert len(actual) == len(expected)
    for step, (got, want) in enumerate(zip(actual, expected), start=1):
        assert got == pytest.approx(want, rel=RTOL, abs=1e-7), f"step {step}: {got} != {want}"


@pytest.fixture
def varied(tmp_path, monkeypatch) -> str:
    """A reward that differs between the completions of one prompt, so every group carries signal."""
    (tmp_path / "varied_reward.py").write_text("def score(record):\n    return float(sum(map(ord, record['completion'])) % 5)\n")
    monkeypatch.chdir(tmp_path)
    return "varied_reward:score"


def test_sft_three_steps(tmp_path, tiny_config, chat_records):
    data = write_jsonl(tmp_path / "d.jsonl", chat_records)
    sft(str(tiny_config), [str(data)], tmp_path / "sft", max_steps=3, lr=1e-3, batch_size=4, warmup=1, seed=0,
        device="cpu", dtype="fp32", save_every=0)
    assert_pinned(logged(tmp_path / "sft", "loss", "grad_norm", "lr"), SFT_STEPS)


def test_grpo_three_steps(tmp_path, tiny_checkpoint, varied):
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    grpo(str(tiny_checkpoint), str(prompts), tmp_path / "grpo", [varied, "repetition=0.5"], steps=3, prompts_per_step=4,
         num_generations=4, max_new_tokens=16, overlong_length=12, overlong_buffer=8, temperature=0.7, lr=1e-3, beta=0.04,
         epsilon_high=0.28, device="cpu", dtype="fp32", save_every=0, log_samples_every=0, seed=0)
    assert_pinned(logged(tmp_path / "grpo", "loss", "reward", "grad_norm", "kl"), GRPO_STEPS)


def test_grpo_three_steps_dapo_with_several_updates(tmp_path, tiny_checkpoint, varied):
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    grpo(str(tiny_checkpoint), str(prompts), tmp_path / "dapo", [varied], steps=3, prompts_per_step=4, num_generations=4,
         max_new_tokens=16, temperature=1.2, top_p=0.9, lr=1e-3, beta=0.0, loss="dapo", iterations=2, minibatches=2,
         scale_rewards="none", device="cpu", dtype="fp32", save_every=0, log_samples_every=0, seed=3)
    assert_pinned(logged(tmp_path / "dapo", "loss", "reward", "grad_norm", "clipped_low", "clipped_high"), DAPO_STEPS)
