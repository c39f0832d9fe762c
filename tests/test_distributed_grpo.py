"""`r1 grpo` under torchrun: two CPU processes (gloo) each sample their share of every step's
prompts, update the sharded policy exactly as one process does on the same rollouts, write one
loadable checkpoint, and resume across world sizes."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import run_cli, write_jsonl, write_tiny_checkpoint, write_tiny_config
from safetensors.torch import load_file
from test_distributed import TORCHRUN, assert_same_weights, kill_one_rank_mid_run, torchrun

PROMPTS = [{"prompt": f"Ann has {n} pens, gets {m}. How many pens now?", "answer": str(n + m)} for n in range(2, 9) for m in (1, 2, 3)]
VARIED = "def score(record):\n    return float(sum(map(ord, record['completion'])) % 5)\n"  # differs between a group's completions
# Five prompts a step (three groups to rank 0, two to rank 1); a token budget that splits each rank's
# share of an update into a different number of passes (the shorter pads with zero-weight passes);
# two iterations of two minibatches (pi_old forwards, minibatches mixing both ranks' rollouts); a
# sharded reference refreshed from the policy every step, its weights in every checkpoint.
GRPO = ["--reward", "varied_reward:score", "--reward", "format=0.5", "--steps", "2", "--prompts-per-step", "5",
        "--num-generations", "4", "--max-new-tokens", "12", "--lr", "1e-3", "--device", "cpu", "--dtype", "fp32", "--beta", "0.04",
        "--ref-update-every", "1", "--iterations", "2", "--minibatches", "2", "--max-tokens-per-batch", "64", "--save-every", "1",
        "--keep-checkpoints", "2", "--log-samples-every", "1", "--generation-batch-size", "16"]
EXACT = ("reward", "reward_std", "accuracy", "format", "completion_length", "completions", "uniform_groups", "truncated", "unscored")
CLOSE = ("loss", "kl", "entropy", "grad_norm", "clipped_low", "clipped_high")

pytestmark = pytest.mark.skipif(not TORCHRUN.is_file(), reason=f"{TORCHRUN} is missing")


@dataclass
class Runs:
    """The same two-step run by one process and by two, in PLACE (where the reward module is)."""

    place: Path
    model: Path
    prompts: Path
    one: Path
    two: Path
    two_log: str


def grpo_argv(runs: Runs, out: Path, *extra: str) -> list[str]:
    return ["grpo", str(runs.model), str(runs.prompts), "--out", str(out), *GRPO, *extra]


def in_process(*argv: str) -> int:
    from r1cli import cli

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["r1", *argv])
        try:
            cli.main()
        except SystemExit as exit_:
            return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    return 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    place = tmp_path_factory.mktemp("grpo")
    (place / "varied_reward.py").write_text(VARIED)
    made = Runs(place, write_tiny_checkpoint(place / "tiny-ckpt", write_tiny_config(place / "tiny.json")),
                write_jsonl(place / "prompts.jsonl", PROMPTS), place / "one", place / "two", "")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(place)  # both runs import the reward module from the working directory
        assert in_process(*grpo_argv(made, made.one)) == 0
        done = torchrun(*grpo_argv(made, made.two))
    assert done.returncode == 0, done.stderr[-3000:]
    made.two_log = done.stderr
    return made


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_lines(a: list[dict], b: list[dict]) -> None:
    assert [line["step"] for line in a] == [line["step"] for line in b]
    for left, right in zip(a, b):
        for key in EXACT:
            assert left.get(key) == right.get(key), (left["step"], key)
        for key in CLOSE:
            assert (key in left) == (key in right), (left["step"], key)
            if key in left:
                assert right[key] == pytest.approx(left[key], rel=1e-4, abs=1e-6), (left["step"], key)


def drop_after_first_step(run: Path) -> None:
    """The run as if killed after its step-1 checkpoint: no final checkpoint, no step-2 one."""
    (run / "r1.json").unlink()
    (run / "model.safetensors").unlink()
    shutil.rmtree(run / "checkpoints" / "step-000002")


def test_two_processes_update_as_one_on_the_same_rollouts(runs):
    assert_same_weights(runs.one, runs.two)
    one, two = metrics(runs.one), metrics(runs.two)
    assert_same_lines(one, two)
    assert [line["completions"] for line in two] == [20, 20]  # every rank's, counted once
    assert two[1]["kl"] > 0 and two[1]["reward_std"] > 0
    # Rank 0 alone writes and prints: the plan and the summary once, its own groups' samples.
    assert runs.two_log.count(f"wrote {runs.two}") == 1 and runs.two_log.count("grpo: 21 prompts") == 1
    samples = [json.loads(line) for line in (runs.two / "samples.jsonl").read_text().splitlines()]
    assert [sample["step"] for sample in samples] == [1] * 4 + [2] * 4
    lineage = json.loads((runs.two / "r1.json").read_text())
    assert lineage["world_size"] == 2 and json.loads((runs.one / "r1.json").read_text())["world_size"] == 1
    # The intermediate checkpoints hold the sharded state and the refreshed reference, whole.
    state = runs.two / "checkpoints" / "step-000001" / "state"
    assert (state / "dcp" / ".metadata").is_file()
    reference = load_file(state / "reference.safetensors")
    assert sorted(reference) == sorted(load_file(runs.one / "checkpoints" / "step-000001" / "state" / "reference.safetensors"))
    assert json.loads((state / "progress.json").read_text())["prompts_consumed"] == 5
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(runs.two)
    tokenizer = AutoTokenizer.from_pretrained(runs.two)
    prompt = tokenizer("Ann has 3 pens", return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] == prompt["input_ids"].shape[1] + 4
    assert not list(runs.place.glob(".two.tmp-*")) and not list((runs.two / "checkpoints").glob(".*"))


def test_saved_on_two_processes_resumes_on_one(runs, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(runs.two, run)
    drop_after_first_step(run)
    monkeypatch.chdir(runs.place)
    status, _, err = run_cli(monkeypatch, capsys, *grpo_argv(runs, run))
    assert status == 0, err
    assert "resuming from" in err and "(step 1)" in err
    assert_same_weights(runs.one, run)
    assert_same_lines(metrics(runs.one), metrics(run))  # step 2's KL is to the reference saved at step 1
    assert json.loads((run / "r1.json").read_text())["world_size"] == 1


def test_saved_on_one_process_resumes_on_two(runs, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(runs.one, run)
    drop_after_first_step(run)
    monkeypatch.chdir(runs.place)
    done = torchrun(*grpo_argv(runs, run))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from" in done.stderr and "(step 1)" in done.stderr
    assert_same_weights(runs.one, run)
    assert_same_lines(metrics(runs.one), metrics(run))
    assert json.loads((run / "r1.json").read_text())["world_size"] == 2


def test_lora_under_torchrun_is_refused_in_one_line(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(runs.place)
    done = torchrun(*grpo_argv(runs, tmp_path / "run", "--lora-r", "4", "--ref-update-every", "0"))
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: --lora-r under torchrun: not supported yet (run it as one process)"], errors
    assert not (tmp_path / "run" / "r1.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("variant", [
    ["--loss", "dapo", "--engine", "fast", "--scale-rewards", "batch", "--grad-accum", "2", "--reward", "accuracy=0.5"],
    # One prompt a step: a rank holds no rollout at all, and runs zero-weight passes only.
    ["--loss", "dr_grpo", "--prompts-per-step", "1", "--minibatches", "1", "--beta", "0", "--ref-update-every", "0"],
])
def test_other_losses_and_the_fast_engine_update_as_one(runs, tmp_path, monkeypatch, variant):
    monkeypatch.chdir(runs.place)
    one, two = tmp_path / "one", tmp_path / "two"
    assert in_process(*grpo_argv(runs, one, *variant)) == 0
    done = torchrun(*grpo_argv(runs, two, *variant))
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_weights(one, two)
    assert_same_lines(metrics(one), metrics(two))


@pytest.mark.slow
def test_skipped_uniform_groups_are_refilled_as_one_process_does(runs, tmp_path, monkeypatch):
    (tmp_path / "half_uniform.py").write_text(
        "def score(record):\n"
        "    # prompts with 'flat' score the same whatever the completion: their groups are uniform\n"
        "    return 0.0 if 'flat' in record['prompt'] else float(len(record['completion']) % 3)\n")
    prompts = write_jsonl(tmp_path / "flat.jsonl", [{"prompt": f"{'flat' if i % 2 else 'open'} prompt {i}"} for i in range(40)])
    monkeypatch.chdir(tmp_path)
    argv = ["grpo", str(runs.model), str(prompts), "--reward", "half_uniform:score", "--skip-uniform-groups", "--steps", "3",
            "--prompts-per-step", "4", "--num-generations", "4", "--max-new-tokens", "12", "--lr", "1e-3", "--device", "cpu",
            "--save-every", "0", "--log-samples-every", "0"]
    assert in_process(*argv, "--out", str(tmp_path / "one")) == 0
    done = torchrun(*argv, "--out", str(tmp_path / "two"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_weights(tmp_path / "one", tmp_path / "two")
    lines = metrics(tmp_path / "two")
    assert_same_lines(metrics(tmp_path / "one"), lines)
    assert all(line["completions"] == 16 and line["uniform_groups"] > 0 for line in lines)


@pytest.mark.slow
def test_killing_one_rank_stops_every_rank_and_the_rerun_resumes(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(runs.place)
    run, reference = tmp_path / "run", tmp_path / "reference"
    argv = grpo_argv(runs, run, "--steps", "12", "--save-every", "2", "--log-samples-every", "0")
    kill_one_rank_mid_run(argv, run)
    for checkpoint in (run / "checkpoints").glob("step-*"):  # what looks complete is
        if (checkpoint / "r1.json").exists():
            state = checkpoint / "state"
            assert (state / "dcp" / ".metadata").is_file() and (state / "reference.safetensors").is_file()
            assert (checkpoint / "model.safetensors").is_file()
    done = torchrun(*argv)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from" in done.stderr
    assert in_process(*grpo_argv(runs, reference, "--steps", "12", "--save-every", "2", "--log-samples-every", "0")) == 0
    assert_same_weights(reference, run)
