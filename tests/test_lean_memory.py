"""One `r1 grpo` step with Qwen's 151,936-token vocabulary fits in under 2 GB of resident memory
on the CPU (it took 12.5 GB with full logits: bench/lean_training.py cpu-memory)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import write_jsonl

from r1cli.toy.tokenizer import TOKENIZER_DIR

pytestmark = pytest.mark.slow

PEAK_LIMIT = 2 * 2**30


def test_a_big_vocabulary_grpo_step_peaks_under_two_gigabytes(tmp_path):
    model = {"model_type": "qwen2", "tokenizer": str(TOKENIZER_DIR), "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "intermediate_size": 128, "max_position_embeddings": 1024, "vocab_size": 151936,
             "tie_word_embeddings": True}
    (tmp_path / "model.json").write_text(json.dumps(model))
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"Ann has {n} pens, gets 1. How many?", "answer": str(n + 1)} for n in range(8)])
    command = [sys.executable, "-m", "r1cli", "grpo", str(tmp_path / "model.json"), str(prompts), "--out", str(tmp_path / "run"),
               "--reward", "format", "--steps", "1", "--prompts-per-step", "4", "--num-generations", "8", "--max-new-tokens", "128",
               "--beta", "0.04", "--device", "cpu", "--save-every", "0"]
    # A fresh process measures it, so that no other test's child counts toward the peak.
    probe = "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    result = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    peak = int(result.stdout.split()[-1]) * 1024
    line = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert line["completion_length"] > 100  # the step really trained on long completions
    assert peak < PEAK_LIMIT, f"peak resident memory {peak / 2**30:.2f} GiB"
