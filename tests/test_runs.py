"""Reruns neither reuse nor destroy data: identity checks, locks, own-input refusals, cleanup."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest
import torch
from conftest import run_cli, write_jsonl

from r1cli.data import outputs as runs
from r1cli.modeling import load_model
from r1cli.train.checkpoint import write_loadable

PROMPTS = [{"prompt": f"Ann has {n} pens, gets 2. How many pens now?", "answer": str(n + 2)} for n in range(6)]


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def sample_args(model, prompts, out, *extra):
    return ["sample", str(model), str(prompts), "--out", str(out), "--max-new-tokens", "10", "--device", "cpu",
            "--temperature", "1.3", "--top-p", "1", *extra]


@pytest.fixture
def other_checkpoint(tmp_path, tiny_config):
    """A second tiny model: same architecture and tokenizer, other weights."""
    model, tokenizer = load_model(str(tiny_config), seed=1)
    write_loadable(tmp_path / "other-ckpt", model, tokenizer, torch.float32)
    return tmp_path / "other-ckpt"


def by_pair(records):
    return {(r["id"], r["sample"]): r["completion"] for r in records}


# ---------------------------------------------------------------- sample


def test_a_resumed_sampling_run_equals_an_uninterrupted_one(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    whole, cut = tmp_path / "whole.jsonl", tmp_path / "cut.jsonl"
    assert run_cli(monkeypatch, capsys, *sample_args(tiny_checkpoint, prompts, whole, "--n", "4"))[0] == 0
    assert run_cli(monkeypatch, capsys, *sample_args(tiny_checkpoint, prompts, cut, "--n", "4"))[0] == 0
    # A kill after 9 of 24 lines, one of them cut, then the same command: the missing 15 are drawn again.
    kept = cut.read_text().splitlines()
    (tmp_path / "cut.jsonl.partial").write_text("\n".join(kept[:9]) + "\n" + kept[9][:30])
    cut.unlink()
    assert run_cli(monkeypatch, capsys, *sample_args(tiny_checkpoint, prompts, cut, "--n", "4", "--generation-batch-size", "3"))[0] == 0
    assert by_pair(lines(cut)) == by_pair(lines(whole)) and len(lines(cut)) == 24
    assert len(set(by_pair(lines(whole)).values())) > 12  # sampled at T=1.3: the completions differ


def test_more_samples_extend_a_finished_file_with_the_same_first_ones(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    two, four = tmp_path / "two.jsonl", tmp_path / "four.jsonl"
    assert run_cli(monkeypatch, capsys, *sample_args(tiny_checkpoint, prompts, two, "--n", "2"))[0] == 0
    assert run_cli(monkeypatch, capsys, *sample_args(tiny_checkpoint, prompts, four, "--n", "4"))[0] == 0
    assert run_cli(monkeypatch, capsys, *sample_args(tiny_checkpoint, prompts, two, "--n", "4"))[0] == 0
    assert by_pair(lines(two)) == by_pair(lines(four))
    status, _, err = run_cli(monkeypatch, capsys, *sample_args(tiny_checkpoint, prompts, two, "--n", "3"))
    assert status == 2 and "holds 4 samples per prompt, more than --n 3" in err


def test_another_model_or_other_options_are_refused_not_mixed_in(tmp_path, tiny_checkpoint, other_checkpoint, monkeypatch, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    out = tmp_path / "s.jsonl"
    assert run_cli(monkeypatch, capsys, *sample_args(tiny_checkpoint, prompts, out, "--n", "2"))[0] == 0
    before = out.read_bytes()
    status, _, err = run_cli(monkeypatch, capsys, *sample_args(other_checkpoint, prompts, out, "--n", "3"))
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "was made with other settings (model: another model" in err and "--overwrite" in err
    status, _, err = run_cli(monkeypatch, capsys, *sample_args(tiny_checkpoint, prompts, out, "--n", "2", "--temperature", "0.7"))
    assert status == 2 and "--temperature: 1.3 there, 0.7 now" in err
    other_prompts = write_jsonl(tmp_path / "q.jsonl", PROMPTS[:3])
    status, _, err = run_cli(monkeypatch, capsys, *sample_args(tiny_checkpoint, other_prompts, out, "--n", "2"))
    assert status == 2 and "prompts: other contents" in err
    assert out.read_bytes() == before
    # --overwrite samples the other model from scratch.
    assert run_cli(monkeypatch, capsys, *sample_args(other_checkpoint, prompts, out, "--n", "2", "--overwrite"))[0] == 0
    assert by_pair(lines(out)) != by_pair([json.loads(line) for line in before.decode().splitlines()])


def test_a_moved_prompt_file_still_resumes(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    out = tmp_path / "s.jsonl"
    assert run_cli(monkeypatch, capsys, *sample_args(tiny_checkpoint, prompts, out))[0] == 0
    moved = tmp_path / "elsewhere" / "prompts.jsonl"
    moved.parent.mkdir()
    shutil.move(prompts, moved)
    monkeypatch.chdir(tmp_path)
    status, _, err = run_cli(monkeypatch, capsys, *sample_args(tiny_checkpoint, moved, "s.jsonl"))
    assert status == 0 and "nothing to do" in err


@pytest.mark.parametrize("existing", ["file", "directory", "partial"])
def test_an_output_r1_did_not_write_is_left_alone(tmp_path, tiny_checkpoint, monkeypatch, capsys, existing):
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    out = tmp_path / "s.jsonl"
    if existing == "directory":
        out.mkdir()
        (out / "mine.txt").write_text("keep me")
    elif existing == "file":
        out.write_text("my notes\n")
    else:
        (tmp_path / "s.jsonl.partial").write_text("my notes\n")
    for extra in ([], ["--overwrite"]):
        status, _, err = run_cli(monkeypatch, capsys, *sample_args(tiny_checkpoint, prompts, out, *extra))
        assert status == 2 and len(err.strip().splitlines()) == 1, err
        assert ("is a directory" if existing == "directory" else "was not written by r1 sample") in err
    if existing == "directory":
        assert (out / "mine.txt").read_text() == "keep me"
    elif existing == "file":
        assert out.read_text() == "my notes\n"
    else:
        assert (tmp_path / "s.jsonl.partial").read_text() == "my notes\n" and not out.exists()


def test_an_output_never_replaces_its_own_input(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    before = prompts.read_bytes()
    samples = write_jsonl(tmp_path / "s.jsonl", [{**p, "completion": "<think>x</think> 4"} for p in PROMPTS])
    cases = [
        sample_args(tiny_checkpoint, prompts, prompts),
        ["filter", str(samples), "--out", str(samples), "--min", "accuracy=0"],
        ["mix", str(samples), "--out", str(samples)],
        ["eval", "--samples", str(samples), "--out", str(samples)],
        ["sft", str(tiny_checkpoint), str(samples), "--out", str(tiny_checkpoint)],
    ]
    for args in cases:
        status, _, err = run_cli(monkeypatch, capsys, *args)
        assert status == 2 and ("is also an input" in err or "holds an input" in err), (args[0], err)
    assert prompts.read_bytes() == before and len(lines(samples)) == len(PROMPTS)
    assert (tiny_checkpoint / "config.json").exists() and not (tiny_checkpoint / "r1.json").exists()


def test_a_corrupt_line_in_the_partial_file_is_sampled_again(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    out = tmp_path / "s.jsonl"
    assert run_cli(monkeypatch, capsys, *sample_args(tiny_checkpoint, prompts, out, "--n", "2"))[0] == 0
    whole = out.read_text().splitlines()
    partial = tmp_path / "s.jsonl.partial"
    partial.write_bytes(("\n".join(whole[:3]) + "\n{not json\n\xff\xfe\n" + "\n".join(whole[3:5]) + "\n").encode("utf-8", "surrogateescape"))
    out.unlink()
    status, _, err = run_cli(monkeypatch, capsys, *sample_args(tiny_checkpoint, prompts, out, "--n", "2"))
    assert status == 0 and "corrupt or repeated line(s) dropped" in err
    assert by_pair(lines(out)) == by_pair([json.loads(line) for line in whole])


# ---------------------------------------------------------------- one writer, nothing left behind


def test_a_second_writer_is_refused_while_the_first_holds_the_output(tmp_path, tiny_checkpoint, tiny_config, chat_records, monkeypatch, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    data = write_jsonl(tmp_path / "d.jsonl", chat_records)
    out, run = tmp_path / "s.jsonl", tmp_path / "run"
    with runs.exclusive(out), runs.exclusive(run):
        status, _, err = run_cli(monkeypatch, capsys, *sample_args(tiny_checkpoint, prompts, out))
        assert status == 2 and f"another r1 process (pid {os.getpid()}) is writing it" in err
        status, _, err = run_cli(monkeypatch, capsys, "sft", str(tiny_config), str(data), "--out", str(run), "--max-steps", "1")
        assert status == 2 and "another r1 process" in err
    assert not out.exists() and not (run / "metrics.jsonl").exists()
    assert run_cli(monkeypatch, capsys, *sample_args(tiny_checkpoint, prompts, out))[0] == 0  # released


def test_two_identical_runs_at_once_write_the_output_once(tmp_path, tiny_checkpoint):
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS * 4)
    out = tmp_path / "s.jsonl"
    command = [sys.executable, "-m", "r1cli", *sample_args(tiny_checkpoint, prompts, out, "--n", "8", "--max-new-tokens", "48")]
    first = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (tmp_path / ".s.jsonl.lock").exists():
        assert first.poll() is None and time.time() < deadline
        time.sleep(0.01)
    second = subprocess.run(command, capture_output=True, text=True, timeout=120)
    first.communicate(timeout=300)
    assert second.returncode == 2 and "another r1 process" in second.stderr
    assert first.returncode == 0
    pairs = [(r["id"], r["sample"]) for r in lines(out)]
    assert len(pairs) == len(set(pairs)) == 6 * 8


def test_temporaries_of_a_killed_write_are_removed_by_the_next(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    stale = tmp_path / ".s.jsonl.tmp-999999"
    stale.write_text("half")
    stale_dir = tmp_path / ".run.tmp-999999"
    stale_dir.mkdir()
    assert run_cli(monkeypatch, capsys, *sample_args(tiny_checkpoint, prompts, tmp_path / "s.jsonl"))[0] == 0
    assert not stale.exists() and stale_dir.exists()  # another output's temporaries are not this one's
    with runs.exclusive(tmp_path / "run"):
        pass
    assert not stale_dir.exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals are Linux's")
def test_scoring_workers_die_with_a_killed_r1(tmp_path):
    marker = f"r1-pool-{uuid.uuid4().hex}"
    script = (
        "import time\nfrom r1cli.rewards.registry import Scorer, parse_rewards\n"
        "scorer = Scorer(parse_rewards(['accuracy']), workers=2)\n"
        "records = [{'prompt': 'q', 'answer': '2', 'completion': '<think>x</think> \\\\boxed{2}'}] * 16\n"
        "scorer.score(records)\nprint('scored', flush=True)\ntime.sleep(60)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "R1_TEST_MARKER": marker},
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "scored"
    assert len(_marked(marker)) >= 2  # the process and its workers
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.time() + 10
    while _marked(marker) and time.time() < deadline:
        time.sleep(0.1)
    assert _marked(marker) == []


def _marked(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as handle:
                    if marker.encode() in handle.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


# ---------------------------------------------------------------- eval, distill, sft


def test_eval_of_another_model_into_the_same_report_is_refused(tmp_path, tiny_checkpoint, other_checkpoint, monkeypatch, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    args = ["--out", str(tmp_path / "r.json"), "--n", "2", "--max-new-tokens", "6", "--device", "cpu"]
    assert run_cli(monkeypatch, capsys, "eval", str(tiny_checkpoint), str(prompts), *args)[0] == 0
    status, _, err = run_cli(monkeypatch, capsys, "eval", str(other_checkpoint), str(prompts), *args)
    assert status == 2 and "r.samples.jsonl was made with other settings (model: another model" in err
    assert run_cli(monkeypatch, capsys, "eval", str(other_checkpoint), str(prompts), *args, "--overwrite")[0] == 0


def test_distill_from_another_teacher_is_refused(tmp_path, tiny_checkpoint, other_checkpoint, monkeypatch, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    args = ["--out", str(tmp_path / "student"), "--n", "1", "--max-steps", "1", "--batch-size", "2", "--max-new-tokens", "6",
            "--device", "cpu", "--reward", "format", "--min", "format=0", "--no-require-format"]
    assert run_cli(monkeypatch, capsys, "distill", str(tiny_checkpoint), str(tiny_checkpoint), str(prompts), *args)[0] == 0
    status, _, err = run_cli(monkeypatch, capsys, "distill", str(other_checkpoint), str(tiny_checkpoint), str(prompts), *args)
    assert status == 2 and "traces.jsonl was made with other settings (model: another model" in err


def test_sft_overwrite_removes_only_what_r1_wrote(tmp_path, tiny_config, chat_records, monkeypatch, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", chat_records)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    for extra in ([], ["--overwrite"]):
        status, _, err = run_cli(monkeypatch, capsys, "sft", str(tiny_config), str(data), "--out", str(foreign), "--max-steps", "1", *extra)
        assert status == 2 and "is not an r1 run directory" in err
    assert (foreign / "thesis.tex").read_text() == "keep me"
    run = tmp_path / "run"
    assert run_cli(monkeypatch, capsys, "sft", str(tiny_config), str(data), "--out", str(run), "--max-steps", "1")[0] == 0
    (run / "notes.txt").write_text("mine")
    status, _, err = run_cli(monkeypatch, capsys, "sft", str(tiny_config), str(data), "--out", str(run), "--max-steps", "2", "--overwrite")
    assert status == 2 and "holds notes.txt, which r1 did not write" in err
    (run / "notes.txt").unlink()
    assert run_cli(monkeypatch, capsys, "sft", str(tiny_config), str(data), "--out", str(run), "--max-steps", "2", "--overwrite")[0] == 0
    assert json.loads((run / "r1.json").read_text())["step"] == 2


def test_a_moved_run_or_a_relative_out_resumes(tmp_path, tiny_config, chat_records, monkeypatch, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", chat_records)
    args = ["--max-steps", "4", "--save-every", "2", "--batch-size", "4", "--lr", "1e-3"]
    whole = tmp_path / "whole"
    assert run_cli(monkeypatch, capsys, "sft", str(tiny_config), str(data), "--out", str(whole), *args)[0] == 0
    # An interrupted run: its checkpoint at step 2 and the metrics so far, moved elsewhere.
    first = tmp_path / "first"
    assert run_cli(monkeypatch, capsys, "sft", str(tiny_config), str(data), "--out", str(first), *args)[0] == 0
    for name in os.listdir(first):
        if name not in ("checkpoints", "metrics.jsonl"):
            path = first / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    moved = tmp_path / "somewhere" / "else"
    moved.parent.mkdir()
    shutil.move(first, moved)
    monkeypatch.chdir(tmp_path / "somewhere")
    status, _, err = run_cli(monkeypatch, capsys, "sft", str(tiny_config), str(data), "--out", "else", *args)
    assert status == 0 and "resuming from" in err, err
    def trajectory(run):
        return [(m["step"], round(m["loss"], 6), m["lr"], round(m["grad_norm"], 6)) for m in lines(run / "metrics.jsonl")]

    assert trajectory(moved) == trajectory(whole) and len(trajectory(whole)) == 4


def test_a_crafted_pickle_in_resumable_state_is_refused(tmp_path, tiny_config, chat_records, monkeypatch, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", chat_records)
    run = tmp_path / "run"
    args = ["sft", str(tiny_config), str(data), "--out", str(run), "--max-steps", "4", "--save-every", "2", "--batch-size", "4"]
    assert run_cli(monkeypatch, capsys, *args)[0] == 0
    (run / "r1.json").unlink()  # as if killed after step 2's checkpoint
    ran = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(ran), "w"))

    state = next((run / "checkpoints").glob("step-*")) / "state" / "optimizer.pt"
    torch.save({"optimizer": Payload()}, state)
    status, _, err = run_cli(monkeypatch, capsys, *args)
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "optimizer.pt: not resumable state r1 wrote" in err
    assert not ran.exists()  # the pickle's code never ran
