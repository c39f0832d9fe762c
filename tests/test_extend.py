"""Extending a finished run: GRPO with a constant learning rate continues to more --steps and ends
where a straight run of that length ends; runs whose schedule depends on the total refuse in one
line saying how to continue instead."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import run_cli, write_jsonl
from safetensors.torch import load_file

from r1cli.commands.grpo import grpo
from r1cli.errors import UserError

FAST = {"prompts_per_step": 4, "num_generations": 4, "max_new_tokens": 12, "lr": 1e-3, "device": "cpu", "log_samples_every": 0,
        "generation_batch_size": 16, "beta": 0.04}
PROMPTS = [{"prompt": f"Ann has {n} pens, gets {m}. How many pens now?", "answer": str(n + m)} for n in range(2, 9) for m in (1, 2, 3)]
TIMINGS = ("seconds", "generate_seconds", "score_seconds", "train_seconds", "refresh_seconds", "generate_tokens_per_s", "train_tokens_per_s")


@pytest.fixture
def setup(tmp_path, monkeypatch):
    (tmp_path / "varied_reward.py").write_text("def score(record):\n    return float(sum(map(ord, record['completion'])) % 5)\n")
    monkeypatch.chdir(tmp_path)
    return str(write_jsonl(tmp_path / "p.jsonl", PROMPTS)), ["varied_reward:score"]


def lines(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def without_timings(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMINGS} for row in rows]


def assert_same_run(run, straight):
    got, want = load_file(run / "model.safetensors"), load_file(straight / "model.safetensors")
    assert max((got[k] - want[k]).abs().max().item() for k in want) < 1e-6
    assert [m["step"] for m in lines(run)] == [1, 2, 3, 4]
    assert without_timings(lines(run)) == without_timings(lines(straight))
    lineage = json.loads((run / "r1.json").read_text())
    assert lineage["step"] == 4 and lineage["options"]["steps"] == 4 and lineage["identity"] == json.loads((straight / "r1.json").read_text())["identity"]


def test_a_finished_constant_schedule_run_extended_equals_a_straight_run(tmp_path, tiny_checkpoint, setup, capsys):
    prompts, reward = setup
    grpo(str(tiny_checkpoint), prompts, tmp_path / "straight", reward, steps=4, **FAST)
    run = tmp_path / "extended"
    grpo(str(tiny_checkpoint), prompts, run, reward, steps=2, **FAST)
    assert (run / "checkpoints" / "step-000002" / "state").is_dir()  # an extendable run keeps its last step's state
    capsys.readouterr()
    grpo(str(tiny_checkpoint), prompts, run, reward, steps=4, **FAST)
    err = capsys.readouterr().err
    assert "extending the finished run of 2 steps to 4" in err and "resuming from" in err and "step-000002" in err
    assert_same_run(run, tmp_path / "straight")
    grpo(str(tiny_checkpoint), prompts, run, reward, steps=4, **FAST)
    assert "already complete; nothing to do" in capsys.readouterr().err
    with pytest.raises(UserError, match=r"holds a finished run of 4 steps, more than --steps 3: use --overwrite"):
        grpo(str(tiny_checkpoint), prompts, run, reward, steps=3, **FAST)


def test_a_run_without_state_at_its_end_replays_from_its_newest_checkpoint(tmp_path, tiny_checkpoint, setup):
    prompts, reward = setup
    grpo(str(tiny_checkpoint), prompts, tmp_path / "straight", reward, steps=4, **FAST)
    # As an older r1 left it: no checkpoint at its last step, and the total in its identity.
    run = tmp_path / "older"
    grpo(str(tiny_checkpoint), prompts, run, reward, steps=3, save_every=2, keep_checkpoints=2, **FAST)
    shutil.rmtree(run / "checkpoints" / "step-000003")
    for path in (run / "r1.json", run / "checkpoints" / "step-000002" / "state" / "progress.json"):
        record = json.loads(path.read_text())
        record["identity"]["options"]["steps"] = 3
        path.write_text(json.dumps(record))
    grpo(str(tiny_checkpoint), prompts, run, reward, steps=4, save_every=2, keep_checkpoints=2, **FAST)
    assert_same_run(run, tmp_path / "straight")

    # --save-every 0: no resumable state at all; the extension replays the run from its start.
    never = tmp_path / "never-saved"
    grpo(str(tiny_checkpoint), prompts, never, reward, steps=2, save_every=0, **FAST)
    assert not (never / "checkpoints").exists()
    grpo(str(tiny_checkpoint), prompts, never, reward, steps=4, save_every=0, **FAST)
    assert_same_run(never, tmp_path / "straight")


def test_an_unfinished_run_past_a_shorter_total_is_refused(tmp_path, tiny_checkpoint, setup):
    prompts, reward = setup
    run = tmp_path / "cut"
    grpo(str(tiny_checkpoint), prompts, run, reward, steps=3, save_every=1, **FAST)
    (run / "r1.json").unlink()  # as if killed after its checkpoint at step 3
    with pytest.raises(UserError, match=r"its newest checkpoint is at step 3, past --steps 2"):
        grpo(str(tiny_checkpoint), prompts, run, reward, steps=2, save_every=1, **FAST)


@pytest.mark.parametrize(("schedule", "warmup", "why"), [("cosine", 0, "its cosine learning-rate schedule is laid out over the total steps"),
                                                         ("constant", 0.5, "its warmup (--warmup 0.5) is a share of the total steps")])
def test_a_grpo_run_whose_schedule_depends_on_its_total_refuses_in_one_line(tmp_path, tiny_checkpoint, setup, monkeypatch, capsys,
                                                                             schedule, warmup, why):
    prompts, reward = setup
    run = tmp_path / "run"
    options = ["--prompts-per-step", "4", "--num-generations", "4", "--max-new-tokens", "8", "--device", "cpu", "--schedule", schedule,
               "--warmup", str(warmup), "--log-samples-every", "0"]
    assert run_cli(monkeypatch, capsys, "grpo", str(tiny_checkpoint), prompts, "--out", str(run), "--reward", reward[0], "--steps", "2", *options)[0] == 0
    status, _, err = run_cli(monkeypatch, capsys, "grpo", str(tiny_checkpoint), prompts, "--out", str(run), "--reward", reward[0], "--steps", "4", *options)
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert err.strip() == (f"error: {run} holds a finished run of 2 steps; a run of another length cannot continue it ({why}); "
                           f"continue from it as a new run instead: r1 grpo {run} {prompts} --out NEW_DIR ...")
    assert json.loads((run / "r1.json").read_text())["step"] == 2  # untouched


def test_sft_says_why_it_cannot_extend_and_how_to_continue(tmp_path, tiny_config, chat_records, monkeypatch, capsys):
    data = str(write_jsonl(tmp_path / "d.jsonl", chat_records))
    run = tmp_path / "sft"
    options = ["--batch-size", "4", "--max-length", "128", "--device", "cpu", "--save-every", "1"]
    assert run_cli(monkeypatch, capsys, "sft", str(tiny_config), data, "--out", str(run), "--max-steps", "2", *options)[0] == 0
    for longer in (["--max-steps", "4"], ["--epochs", "3"]):
        status, _, err = run_cli(monkeypatch, capsys, "sft", str(tiny_config), data, "--out", str(run), *longer, *options)
        assert status == 2 and err.strip() == (
            f"error: {run} holds a finished run of 2 steps; a run of another length cannot continue it (its cosine learning-rate "
            f"schedule is laid out over the total steps); continue from it as a new run instead: r1 sft {run} {data} --out NEW_DIR ...")
    # Another change is still named as such, not as a length.
    status, _, err = run_cli(monkeypatch, capsys, "sft", str(tiny_config), data, "--out", str(run), "--max-steps", "4", "--lr", "0.5", *options)
    assert status == 2 and "was made with other settings" in err
    # The way out it names works: a new run from the finished one.
    assert run_cli(monkeypatch, capsys, "sft", str(run), data, "--out", str(tmp_path / "more"), "--max-steps", "2", *options)[0] == 0
    assert json.loads((tmp_path / "more" / "r1.json").read_text())["parent"]["path"] == str(run)
