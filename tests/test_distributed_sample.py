"""`r1 sample`, `r1 eval` and `r1 distill` under torchrun: two CPU processes (gloo) split the
prompts, and what they write equals what one process writes; a run stopped on one rank resumes.

The arguments after `-m r1cli` start with `--`: torchrun's own parser would otherwise take
`--n` for an abbreviation of its `--nnodes` / `--nproc-per-node`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import run_cli, write_jsonl
from test_distributed import SFT, TORCHRUN, assert_same_weights, torchrun, torchrun_command

pytestmark = pytest.mark.skipif(not TORCHRUN.is_file(), reason=f"{TORCHRUN} is missing")

PROMPTS = [{"prompt": f"Ann has {n} pens, gets 2. How many pens now?", "answer": str(n + 2), "level": n % 3} for n in range(9)]
SAMPLING = ["--max-new-tokens", "8", "--device", "cpu", "--generation-batch-size", "4"]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def sample_args(model, prompts, out, *extra: str) -> list[str]:
    return ["sample", str(model), str(prompts), "--out", str(out), "--n", "3", *SAMPLING, *extra]


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "p.jsonl", PROMPTS)


def test_two_processes_sample_what_one_does_and_a_rerun_is_one_processes(tmp_path, tiny_checkpoint, prompts, monkeypatch, capsys):
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    status, _, err = run_cli(monkeypatch, capsys, *sample_args(tiny_checkpoint, prompts, one))
    assert status == 0, err
    done = torchrun("--", *sample_args(tiny_checkpoint, prompts, two))
    assert done.returncode == 0, done.stderr[-3000:]
    # One file, record for record one process's (in prompt order), and nothing of the parts left.
    assert two.read_text() == one.read_text() and len(lines(two)) == 27
    assert not (tmp_path / "two.jsonl.parts").exists() and not (tmp_path / "two.jsonl.partial").exists()
    assert not list(tmp_path.glob(".two.jsonl.tmp-*"))
    assert json.loads((tmp_path / "two.jsonl.r1.json").read_text())["complete"] is True
    assert done.stderr.count(f"wrote {two} (27 samples)") == 1  # rank 0 alone logs
    # A rerun finds it complete, as one process would; with other options it is refused in one line.
    again = torchrun("--", *sample_args(tiny_checkpoint, prompts, two))
    assert again.returncode == 0 and "is complete (27 samples); nothing to do" in again.stderr
    assert two.read_text() == one.read_text()
    refused = torchrun("--", *sample_args(tiny_checkpoint, prompts, two, "--temperature", "0.7"))
    assert refused.returncode != 0
    assert errors(refused.stderr) == [f"error: {two} was made with other settings (--temperature: 0.6 there, 0.7 now): "
                                      "use --overwrite to sample it again, or another --out"]
    assert two.read_text() == one.read_text()
    # A user's --shard splits further: rank r takes every 2nd prompt of shard 1/2.
    status, _, err = run_cli(monkeypatch, capsys, *sample_args(tiny_checkpoint, prompts, tmp_path / "one-half.jsonl", "--shard", "1/2"))
    assert status == 0, err
    half = torchrun("--", *sample_args(tiny_checkpoint, prompts, tmp_path / "two-half.jsonl", "--shard", "1/2"))
    assert half.returncode == 0, half.stderr[-3000:]
    assert (tmp_path / "two-half.jsonl").read_text() == (tmp_path / "one-half.jsonl").read_text()
    assert [r["prompt"] for r in lines(tmp_path / "two-half.jsonl")[::3]] == [p["prompt"] for p in PROMPTS[1::2]]


def test_what_a_run_under_torchrun_cannot_do_is_refused_before_anything(tmp_path, tiny_checkpoint, prompts, monkeypatch, capsys):
    from r1cli.train import distributed

    monkeypatch.setattr(distributed, "_WORLD", distributed.World(rank=0, world_size=2))  # as torchrun's rank 0 (refused before any collective)
    file = str(tmp_path / "s.jsonl")
    for source, out, extra, message in ((prompts, "-", [], "--out - under torchrun: give a file (each process samples its share into it)"),
                                        ("-", file, [], "PROMPTS - under torchrun: give a file (every process reads it)"),
                                        (prompts, file, ["--engine", "vllm"], "--engine vllm under torchrun: not supported yet")):
        status, stdout, err = run_cli(monkeypatch, capsys, *sample_args(tiny_checkpoint, source, out, *extra))
        assert status == 2 and stdout == "" and err.startswith(f"error: {message}") and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.glob("*s.jsonl*"))


def test_one_process_resumes_the_parts_an_interrupted_run_left(tmp_path, tiny_checkpoint, prompts, monkeypatch, capsys):
    reference, out = tmp_path / "reference.jsonl", tmp_path / "s.jsonl"
    assert run_cli(monkeypatch, capsys, *sample_args(tiny_checkpoint, prompts, reference))[0] == 0
    assert run_cli(monkeypatch, capsys, *sample_args(tiny_checkpoint, prompts, out))[0] == 0
    # As a run under torchrun leaves the file when killed: no file, the ranks' parts (one line cut), the record incomplete.
    whole = out.read_text().splitlines()
    out.unlink()
    (tmp_path / "s.jsonl.parts").mkdir()
    (tmp_path / "s.jsonl.parts" / "rank-0.jsonl").write_text("\n".join(whole[0:10:2]) + "\n")
    (tmp_path / "s.jsonl.parts" / "rank-1.jsonl").write_text("\n".join(whole[1:10:2]) + "\n" + whole[11][:30])
    record = json.loads((tmp_path / "s.jsonl.r1.json").read_text())
    (tmp_path / "s.jsonl.r1.json").write_text(json.dumps({**record, "complete": False}))
    status, _, err = run_cli(monkeypatch, capsys, *sample_args(tiny_checkpoint, prompts, out))
    assert status == 0, err
    assert "1 cut, corrupt or repeated line(s) dropped" in err and "sample: 6 prompts" in err  # prompts 0-2 were whole
    resumed = out.read_text().splitlines()
    assert resumed[:10] == [whole[i] for i in (*range(0, 10, 2), *range(1, 10, 2))]  # the parts' samples kept as written
    assert sorted(resumed) == sorted(reference.read_text().splitlines())  # nothing lost, nothing twice
    assert not (tmp_path / "s.jsonl.parts").exists()


@pytest.mark.slow
def test_killing_one_rank_mid_sampling_then_rerunning_loses_and_repeats_nothing(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS * 3 + [{"prompt": f"{n} plus 1?", "answer": str(n + 1)} for n in range(24)])
    out, reference = tmp_path / "s.jsonl", tmp_path / "reference.jsonl"
    argv = ["sample", str(tiny_checkpoint), str(prompts), "--out", str(out), "--n", "8", "--max-new-tokens", "48",
            "--generation-batch-size", "8", "--device", "cpu"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen(torchrun_command("--", *argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    part = tmp_path / "s.jsonl.parts" / "rank-1.jsonl"
    deadline = time.time() + 120
    while not (part.exists() and part.stat().st_size > 0):
        assert launcher.poll() is None and time.time() < deadline, "finished before it could be killed"
        time.sleep(0.05)
    ranks = [int(pid) for pid in Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()]
    assert len(ranks) == 2, ranks
    os.kill(ranks[1], signal.SIGKILL)
    launcher.wait(timeout=120)
    assert launcher.returncode != 0 and not out.exists()
    done = torchrun("--", *argv)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = re.search(r"sample: (\d+) prompts to sample", done.stderr)
    assert resumed and int(resumed.group(1)) < 33  # the samples the killed run wrote are kept
    pairs = [(r["id"], r["sample"]) for r in lines(out)]
    assert len(pairs) == len(set(pairs)) == 33 * 8
    assert run_cli(monkeypatch, capsys, *argv[:4], str(reference), *argv[5:])[0] == 0
    assert out.read_text() == reference.read_text()


def eval_args(model, data, out, *extra: str) -> list[str]:
    return ["eval", str(model), str(data), "--out", str(out), "--n", "3", "--reward", "letters:share", "--by", "level", *SAMPLING, *extra]


def numbers(report: Path) -> dict:
    value = json.loads(report.read_text())
    return {"overall": value["overall"], "by": value["by"]}


def test_two_processes_evaluate_as_one(tmp_path, tiny_checkpoint, prompts, monkeypatch, capsys):
    # A reward of every completion's text (a random model's answers are all wrong): any other completion changes it.
    (tmp_path / "letters.py").write_text("def share(record):\n    text = record['completion']\n"
                                         "    return sum(c.isalpha() for c in text) / max(1, len(text))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    status, _, err = run_cli(monkeypatch, capsys, *eval_args(tiny_checkpoint, prompts, one))
    assert status == 0, err
    done = torchrun("--", *eval_args(tiny_checkpoint, prompts, two))
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "two.samples.jsonl").read_text() == (tmp_path / "one.samples.jsonl").read_text()
    assert numbers(two) == numbers(one)
    report = numbers(two)
    assert report["overall"]["n_samples"] == 27 and sorted(report["by"]) == ["level=0", "level=1", "level=2"]
    assert 0 < report["overall"]["rewards"]["letters:share"] < 1
    assert done.stderr.count(f"wrote {two}") == 1 and done.stderr.count("r1 eval") == 1  # rank 0 alone scores and reports


def graded(prompt: int, sample: int, correct: bool) -> dict:
    answer = prompt + 2
    return {"id": f"p{prompt}", "sample": sample, "prompt": PROMPTS[prompt]["prompt"], "answer": str(answer), "level": prompt % 3,
            "completion": f"<think>{prompt} plus 2.</think> \\boxed{{{answer if correct else answer + 1}}}"}


def test_eval_of_shard_files_equals_eval_of_the_whole_and_records_each(tmp_path, monkeypatch, capsys):
    records = [graded(p, s, correct=(p + s) % 3 != 0) for p in range(6) for s in range(4)]
    whole = write_jsonl(tmp_path / "whole.jsonl", records)
    first = write_jsonl(tmp_path / "shard0.jsonl", [r for r in records if int(r["id"][1:]) % 2 == 0])
    second = write_jsonl(tmp_path / "shard1.jsonl", [r for r in records if int(r["id"][1:]) % 2 == 1])
    base = ["eval", "--k", "1,4", "--by", "level"]
    assert run_cli(monkeypatch, capsys, *base, "--samples", str(whole), "--out", str(tmp_path / "whole.json"))[0] == 0
    status, _, err = run_cli(monkeypatch, capsys, *base, "--samples", str(first), "--samples", str(second), "--out", str(tmp_path / "shards.json"))
    assert status == 0, err
    assert numbers(tmp_path / "shards.json") == numbers(tmp_path / "whole.json")
    # By hand: each prompt is right in the samples s with (p + s) % 3 != 0; pass@1 is the mean of their shares.
    shares = [sum((p + s) % 3 != 0 for s in range(4)) / 4 for p in range(6)]
    assert numbers(tmp_path / "shards.json")["overall"]["pass@1"] == pytest.approx(sum(shares) / 6, abs=1e-12)
    from r1cli.data.records import file_sha256

    provenance = json.loads((tmp_path / "shards.json").read_text())["provenance"]
    assert provenance["samples"] == [{"path": str(path.resolve()), "sha256": file_sha256(path)} for path in (first, second)]


def test_eval_of_r1_sample_shards_records_how_they_were_drawn(tmp_path, tiny_checkpoint, prompts, monkeypatch, capsys):
    shards = [tmp_path / f"s{index}.jsonl" for index in range(2)]
    for index, shard in enumerate(shards):
        assert run_cli(monkeypatch, capsys, *sample_args(tiny_checkpoint, prompts, shard, "--shard", f"{index}/2"))[0] == 0
    status, _, err = run_cli(monkeypatch, capsys, "eval", "--samples", str(shards[0]), "--samples", str(shards[1]), "--out", str(tmp_path / "r.json"))
    assert status == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["overall"]["n_prompts"] == 9 and report["overall"]["n_samples"] == 27
    provenance = report["provenance"]
    # What both shards' records give alike (all but --shard), the model's path and fingerprint among it.
    assert provenance["sampling"] == {"temperature": 0.6, "top_p": 0.95, "top_k": 0, "max_new_tokens": 8, "stop": []}
    assert provenance["seed"] == 0 and provenance["engines"] == ["hf"] and provenance["template"] == "auto"
    fingerprint = json.loads((tmp_path / "s0.jsonl.r1.json").read_text())["identity"]["models"]["model"]
    assert provenance["model"]["path"] == str(tiny_checkpoint.resolve()) and provenance["model"]["fingerprint"] == fingerprint
    assert [entry["path"] for entry in provenance["samples"]] == [str(shard.resolve()) for shard in shards]


def test_eval_of_a_sample_in_two_files_is_one_clear_error(tmp_path, monkeypatch, capsys):
    first = write_jsonl(tmp_path / "a.jsonl", [graded(0, 0, True), graded(0, 1, False)])
    second = write_jsonl(tmp_path / "b.jsonl", [graded(1, 0, True), graded(0, 1, True)])
    status, _, err = run_cli(monkeypatch, capsys, "eval", "--samples", str(first), "--samples", str(second), "--out", str(tmp_path / "r.json"))
    assert status == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [f"error: {second}:2: sample 1 of prompt 'p0' is also in {first}:2; "
                                        "give each sample once across --samples files"]
    assert not (tmp_path / "r.json").exists()
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    status, _, err = run_cli(monkeypatch, capsys, "eval", "--samples", str(first), "--samples", str(empty), "--out", str(tmp_path / "r.json"))
    assert status == 2 and f"{empty}: no records (the input is empty)" in err


def distill_args(model, prompts, out, *extra: str) -> list[str]:
    keep_all = ["--reward", "format", "--min", "format=0", "--no-require-format"]  # a random teacher is never right
    return ["distill", str(model), str(model), str(prompts), "--out", str(out), "--n", "2", "--max-new-tokens", "8", *keep_all,
            "--max-steps", "3", "--save-every", "0", *SFT, *extra]


def test_two_processes_distil_as_one(tmp_path, tiny_checkpoint, prompts, monkeypatch, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    status, _, err = run_cli(monkeypatch, capsys, *distill_args(tiny_checkpoint, prompts, one))
    assert status == 0, err
    done = torchrun("--", *distill_args(tiny_checkpoint, prompts, two))
    assert done.returncode == 0, done.stderr[-3000:]
    # The same traces, the same kept file (filtered once, by rank 0), and the same student within 1e-5.
    assert (two / "traces.jsonl").read_text() == (one / "traces.jsonl").read_text()
    assert (two / "kept.jsonl").read_text() == (one / "kept.jsonl").read_text() and len(lines(two / "kept.jsonl")) == 18
    assert done.stderr.count("filter: kept 18 of 18") == 1
    assert_same_weights(one, two)
    lineage = json.loads((two / "r1.json").read_text())
    assert lineage["command"] == "distill" and lineage["world_size"] == 2 and lineage["step"] == 3
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(two)  # the student loads with plain transformers
    # A rerun finds every stage finished.
    stamp = (two / "model.safetensors").stat().st_mtime_ns
    again = torchrun("--", *distill_args(tiny_checkpoint, prompts, two))
    assert again.returncode == 0 and "nothing to do" in again.stderr and "not filtering again" in again.stderr, again.stderr[-3000:]
    assert (two / "model.safetensors").stat().st_mtime_ns == stamp


def test_a_teacher_under_torchrun_is_refused_before_sampling(tmp_path, tiny_checkpoint, prompts):
    done = torchrun("--", *distill_args(tiny_checkpoint, prompts, tmp_path / "run", "--kd-weight", "0.5"))
    assert done.returncode != 0
    assert errors(done.stderr) == ["error: --kd-weight under torchrun: not supported yet (run it as one process)"]
    assert not (tmp_path / "run").exists()
