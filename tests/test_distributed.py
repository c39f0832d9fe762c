"""`r1 sft` under torchrun: two CPU processes (gloo) train exactly as one does on the same global
batch, write one loadable checkpoint, and resume across world sizes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import run_cli, write_jsonl
from safetensors.torch import load_file

TORCHRUN = Path(sys.executable).with_name("torchrun")
# Rows dealt unevenly (3 a micro-batch: 2 and 1) and split to one row a pass by the token budget,
# so the ranks run different numbers of real passes (the shorter one pads with zero-weight passes).
SFT = ["--batch-size", "6", "--grad-accum", "2", "--max-tokens-per-batch", "48", "--max-length", "64", "--device", "cpu",
       "--dtype", "fp32", "--lr", "1e-3", "--warmup", "0"]

pytestmark = pytest.mark.skipif(not TORCHRUN.is_file(), reason=f"{TORCHRUN} is missing")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun_command(*argv: str, processes: int = 2) -> list[str]:
    return [str(TORCHRUN), "--nproc_per_node", str(processes), "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
            "-m", "r1cli", *argv]


def torchrun(*argv: str, processes: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(torchrun_command(*argv, processes=processes), capture_output=True, text=True, env=env, timeout=300)


def kill_one_rank_mid_run(argv: list[str], run: Path) -> None:
    """Launch ARGV under torchrun on two processes, SIGKILL rank 1 once a checkpoint is complete, and
    check that every rank is gone and the run not marked finished."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen(torchrun_command(*argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + 120
    while not list((run / "checkpoints").glob("step-*/r1.json")) and time.time() < deadline and launcher.poll() is None:
        time.sleep(0.2)
    ranks = [int(pid) for pid in Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()]
    assert len(ranks) == 2, ranks
    os.kill(ranks[1], signal.SIGKILL)
    launcher.communicate(timeout=120)
    assert launcher.returncode != 0
    for pid in ranks:  # every rank is gone
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert not (run / "r1.json").exists()


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(directory / "model.safetensors")


def assert_same_weights(a: Path, b: Path, tolerance: float = 1e-5) -> None:
    left, right = weights(a), weights(b)
    assert sorted(left) == sorted(right)
    worst = max((left[name].float() - right[name].float()).abs().max().item() for name in left)
    assert worst <= tolerance, worst
    assert any((left[name] != 0).any() for name in left)


@pytest.fixture
def train_file(tmp_path: Path, chat_records) -> Path:
    return write_jsonl(tmp_path / "train.jsonl", chat_records)


def test_two_processes_train_as_one_and_write_one_loadable_checkpoint(tmp_path, tiny_config, train_file, monkeypatch, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    status, _, err = run_cli(monkeypatch, capsys, "sft", str(tiny_config), str(train_file), "--out", str(one), "--max-steps", "3",
                             "--save-every", "2", *SFT)
    assert status == 0, err
    done = torchrun("sft", str(tiny_config), str(train_file), "--out", str(two), "--max-steps", "3", "--save-every", "2", *SFT)
    assert done.returncode == 0, done.stderr[-3000:]
    # Final weights (the tied embedding and head included) equal one process's, and the lines match.
    assert_same_weights(one, two)
    lines = [[json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] for run in (one, two)]
    assert [line["step"] for line in lines[1]] == [1, 2, 3]
    for a, b in zip(*lines):
        assert abs(a["loss"] - b["loss"]) < 1e-5 and abs(a["grad_norm"] - b["grad_norm"]) < 1e-4
    # Rank 0 alone prints: the summary line once.
    assert done.stderr.count(f"wrote {two}") == 1 and done.stderr.count("sft: 12 rows") == 1
    assert json.loads((two / "r1.json").read_text())["world_size"] == 2
    assert json.loads((one / "r1.json").read_text())["world_size"] == 1
    # The intermediate checkpoint holds the sharded state; the final one loads with plain transformers.
    assert (two / "checkpoints" / "step-000002" / "state" / "dcp" / ".metadata").is_file()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(two)
    tokenizer = AutoTokenizer.from_pretrained(two)
    prompt = tokenizer("Ann has 3 pens", return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] == prompt["input_ids"].shape[1] + 4
    assert not list(tmp_path.glob(".two.tmp-*")) and not list((two / "checkpoints").glob(".*"))


def test_an_error_on_every_rank_is_said_once(tmp_path, tiny_config):
    done = torchrun("sft", str(tiny_config), str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "run"), *SFT)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {tmp_path / 'missing.jsonl'}: no such file"], errors
    assert not (tmp_path / "run" / "r1.json").exists()


@pytest.mark.slow
def test_untied_head_gradient_matches_one_process(tmp_path, tiny_config, train_file, monkeypatch, capsys):
    config = json.loads(tiny_config.read_text())
    untied = tmp_path / "untied.json"
    untied.write_text(json.dumps({**config, "tie_word_embeddings": False}))
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_cli(monkeypatch, capsys, "sft", str(untied), str(train_file), "--out", str(one), "--max-steps", "2", "--save-every", "0", *SFT)[0] == 0
    done = torchrun("sft", str(untied), str(train_file), "--out", str(two), "--max-steps", "2", "--save-every", "0", *SFT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "lm_head.weight" in weights(two)
    assert_same_weights(one, two)


@pytest.mark.slow
def test_saved_on_two_processes_resumes_on_one(tmp_path, tiny_config, train_file, monkeypatch, capsys):
    reference, run = tmp_path / "reference", tmp_path / "run"
    assert run_cli(monkeypatch, capsys, "sft", str(tiny_config), str(train_file), "--out", str(reference), "--max-steps", "4",
                   "--save-every", "2", *SFT)[0] == 0
    done = torchrun("sft", str(tiny_config), str(train_file), "--out", str(run), "--max-steps", "4", "--save-every", "2", *SFT)
    assert done.returncode == 0, done.stderr[-3000:]
    # Undo the final checkpoint: the run stops after its step-2 checkpoint, as if killed.
    (run / "r1.json").unlink()
    (run / "model.safetensors").unlink()
    status, _, err = run_cli(monkeypatch, capsys, "sft", str(tiny_config), str(train_file), "--out", str(run), "--max-steps", "4",
                             "--save-every", "2", *SFT)
    assert status == 0, err
    assert "resuming from" in err and "step 2" in err
    assert_same_weights(reference, run)
    assert json.loads((run / "r1.json").read_text())["world_size"] == 1


@pytest.mark.slow
def test_killing_one_rank_stops_every_rank_and_the_rerun_resumes(tmp_path, tiny_config, train_file, monkeypatch, capsys):
    run, reference = tmp_path / "run", tmp_path / "reference"
    argv = ["sft", str(tiny_config), str(train_file), "--out", str(run), "--max-steps", "40", "--save-every", "2", *SFT]
    kill_one_rank_mid_run(argv, run)
    for checkpoint in (run / "checkpoints").glob("step-*"):  # what looks complete is
        if (checkpoint / "r1.json").exists():
            assert (checkpoint / "state" / "dcp" / ".metadata").is_file() and (checkpoint / "model.safetensors").is_file()
    done = torchrun(*argv)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from" in done.stderr
    assert run_cli(monkeypatch, capsys, *argv[:4], str(reference), *argv[5:])[0] == 0
    assert_same_weights(reference, run)


@pytest.mark.slow
def test_saved_on_one_process_resumes_on_two(tmp_path, tiny_config, train_file, monkeypatch, capsys):
    reference, run = tmp_path / "reference", tmp_path / "run"
    argv = ["sft", str(tiny_config), str(train_file), "--out", str(run), "--max-steps", "4", "--save-every", "2", *SFT]
    assert run_cli(monkeypatch, capsys, *argv[:4], str(reference), *argv[5:])[0] == 0
    assert run_cli(monkeypatch, capsys, *argv)[0] == 0
    (run / "r1.json").unlink()  # the run stops after its step-2 checkpoint, as if killed
    (run / "model.safetensors").unlink()
    done = torchrun(*argv)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from" in done.stderr and "step 2" in done.stderr
    assert_same_weights(reference, run)
    assert json.loads((run / "r1.json").read_text())["world_size"] == 2
