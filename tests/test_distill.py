import json

import pytest
import torch
from conftest import run_cli, write_jsonl

from r1cli.modeling import load_model
from r1cli.train.logprobs import decoder_hidden, output_head
from r1cli.train.teacher import Teacher

PROMPTS = [{"prompt": f"Ann has {n} pens, gets 2. How many pens now?", "answer": str(n + 2)} for n in range(8)]


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def trace(n: int, answer: int, formatted: bool = True) -> dict:
    reasoning = f"{n} plus 2 is {answer}."
    completion = f"<think>{reasoning}</think> The answer is \\boxed{{{answer}}}." if formatted else f"{reasoning} \\boxed{{{answer}}}"
    return {"id": f"p{n}", "prompt": PROMPTS[n]["prompt"], "answer": str(n + 2), "completion": completion}


def distill_args(teacher, student, out, *extra):
    return ["distill", str(teacher), str(student), *extra, "--out", str(out), "--max-steps", "2", "--batch-size", "4",
            "--lr", "1e-3", "--max-new-tokens", "8", "--device", "cpu"]


def test_samples_filters_and_trains_keeping_each_stage_file(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    out = tmp_path / "student"
    # A random teacher is never right, so keep every trace here: the stages, not the filter, are under test.
    keep_all = ["--reward", "format", "--min", "format=0", "--no-require-format"]
    status, _, err = run_cli(monkeypatch, capsys, *distill_args(tiny_checkpoint, tiny_checkpoint, out, str(prompts), "--n", "2", *keep_all))
    assert status == 0, err
    traces = lines(out / "traces.jsonl")
    assert len(traces) == 16 and {t["sample"] for t in traces} == {0, 1}
    assert len(lines(out / "kept.jsonl")) == 16 and lines(out / "kept.jsonl")[0]["messages"][-1]["role"] == "assistant"
    lineage = json.loads((out / "r1.json").read_text())
    assert lineage["command"] == "distill" and lineage["step"] == 2 and lineage["options"]["n"] == 2
    load_model(str(out))  # the student is a loadable checkpoint

    # Rerun: every stage is found finished; the traces are not sampled again.
    stamp = (out / "traces.jsonl").stat().st_mtime_ns
    status, _, err = run_cli(monkeypatch, capsys, *distill_args(tiny_checkpoint, tiny_checkpoint, out, str(prompts), "--n", "2", *keep_all))
    assert status == 0 and "nothing to do" in err and "not filtering again" in err and "already complete" in err
    assert (out / "traces.jsonl").stat().st_mtime_ns == stamp


def test_distils_given_traces_keeping_only_correct_formatted_ones(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    traces = write_jsonl(tmp_path / "t.jsonl", [trace(0, 2), trace(1, 3), trace(2, 4, formatted=False), trace(3, 9), trace(4, 6)])
    out = tmp_path / "student"
    status, _, err = run_cli(monkeypatch, capsys, *distill_args(tiny_checkpoint, tiny_checkpoint, out, "--traces", str(traces)))
    assert status == 0, err
    kept = lines(out / "kept.jsonl")
    assert sorted(r["id"] for r in kept) == ["p0", "p1", "p4"]  # p2 unformatted, p3 wrong
    assert not (out / "traces.jsonl").exists()
    summary = json.loads((out / "kept.jsonl.summary.json").read_text())
    assert summary["dropped"] == {"accuracy<1": 1, "format": 1}


def test_no_trace_surviving_the_filter_is_one_clear_error(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    traces = write_jsonl(tmp_path / "t.jsonl", [trace(0, 5), trace(1, 7)])
    status, _, err = run_cli(monkeypatch, capsys, *distill_args(tiny_checkpoint, tiny_checkpoint, tmp_path / "s", "--traces", str(traces)))
    assert status == 2 and "no trace passed the filter" in err and "Traceback" not in err


def test_needs_prompts_or_traces(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    status, _, err = run_cli(monkeypatch, capsys, *distill_args(tiny_checkpoint, tiny_checkpoint, tmp_path / "s"))
    assert status == 2 and "PROMPTS" in err and "--traces" in err


def test_kd_weight_adds_the_teachers_kl_and_logs_it(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    traces = write_jsonl(tmp_path / "t.jsonl", [trace(n, n + 2) for n in range(6)])
    out = tmp_path / "student"
    status, _, err = run_cli(monkeypatch, capsys, *distill_args(tiny_checkpoint, tiny_checkpoint, out, "--traces", str(traces), "--kd-weight", "0.5"))
    assert status == 0, err
    steps = lines(out / "metrics.jsonl")
    # Student and teacher start as the same weights: no divergence at the first step, some after an update.
    assert steps[0]["kd_kl"] == pytest.approx(0.0, abs=1e-6) and steps[1]["kd_kl"] > 1e-6


def test_kd_kl_matches_an_independent_computation(tiny_checkpoint):
    student, tokenizer = load_model(str(tiny_checkpoint), seed=0)
    teacher = Teacher(str(tiny_checkpoint), weight=1.0)
    teacher.prepare(tokenizer, str(tiny_checkpoint), torch.device("cpu"), torch.float32)
    with torch.no_grad():
        for parameter in teacher.network.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    input_ids = torch.tensor([tokenizer.encode("Ann has 3 pens, gets 2.")])
    mask = torch.ones(1, input_ids.shape[1] - 1, dtype=torch.bool)
    mask[0, :2] = False
    student_logits = student(input_ids=input_ids).logits[:, :-1]
    inputs, scored_BL = {"input_ids": input_ids}, torch.nn.functional.pad(mask, (0, 1))  # position p scores token p + 1
    got = teacher.kl_sum(decoder_hidden(student, inputs)[scored_BL], output_head(student), inputs, scored_BL)
    vocab = len(tokenizer)
    p = teacher.network(input_ids=input_ids).logits[:, :-1][mask][:, :vocab].softmax(-1).double()
    q = student_logits[mask][:, :vocab].softmax(-1).double()
    assert got.item() == pytest.approx((p * (p.log() - q.log())).sum().item(), rel=1e-4)


def test_kd_weight_with_another_tokenizer_is_one_clear_error(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    _, tokenizer = load_model(str(tiny_checkpoint))
    other = tmp_path / "other"
    import shutil

    shutil.copytree(tiny_checkpoint, other)
    tokenizer.add_tokens(["<extra-token>"])
    tokenizer.save_pretrained(other)
    traces = write_jsonl(tmp_path / "t.jsonl", [trace(0, 2)])
    status, _, err = run_cli(monkeypatch, capsys, *distill_args(other, tiny_checkpoint, tmp_path / "s", "--traces", str(traces), "--kd-weight", "1"))
    assert status == 2 and "share a tokenizer" in err and "Traceback" not in err


def test_the_teachers_template_is_not_the_students(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS[:2])
    out = tmp_path / "student"
    keep_all = ["--reward", "format", "--min", "format=0", "--no-require-format"]
    status, _, err = run_cli(monkeypatch, capsys, *distill_args(tiny_checkpoint, tiny_checkpoint, out, str(prompts), "--n", "1", "--template", "r1-zero", *keep_all))
    assert status == 0, err
    options = json.loads((out / "r1.json").read_text())["options"]
    assert options["template"] == "r1-zero" and options["student_template"] == "auto"
