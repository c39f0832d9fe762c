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
