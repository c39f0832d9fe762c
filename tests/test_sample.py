import json
import subprocess
import sys
import time

from conftest import run_cli, shared_path, write_jsonl

from r1cli.data.answers import split_completion

PROMPTS = [{"prompt": f"Ann has {n} pens, gets 2. How many pens now?", "answer": str(n + 2), "level": n % 3} for n in range(12)]


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def sample_args(checkpoint, prompts, out, *extra):
    return ["sample", str(checkpoint), str(prompts), "--out", str(out), "--max-new-tokens", "8", "--device", "cpu", *extra]


def test_writes_k_sample_records_per_prompt(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    status, _, err = run_cli(monkeypatch, capsys, *sample_args(tiny_checkpoint, prompts, tmp_path / "s.jsonl", "--n", "3"))
    assert status == 0, err
    records = lines(tmp_path / "s.jsonl")
    assert len(records) == 36 and not (tmp_path / "s.jsonl.partial").exists()
    assert sorted((r["id"], r["sample"]) for r in records) == sorted((r["id"], k) for r in records[::3] for k in range(3))
    for record in records:
        assert record["level"] in (0, 1, 2) and record["answer"]  # prompt fields pass through
        assert (record["reasoning"], record["response"]) == split_completion(record["completion"])
        assert record["finish_reason"] in ("stop", "length") and 1 <= record["completion_tokens"] <= 8


def test_resume_drops_a_cut_line_and_adds_only_missing_pairs(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    out = tmp_path / "s.jsonl"
    assert run_cli(monkeypatch, capsys, *sample_args(tiny_checkpoint, prompts, out, "--n", "2"))[0] == 0
    whole = out.read_text().splitlines()
    partial = tmp_path / "s.jsonl.partial"
    partial.write_text("\n".join(whole[:7]) + "\n" + whole[7][:25])  # 7 whole lines, then one cut by a kill
    out.unlink()
    assert run_cli(monkeypatch, capsys, *sample_args(tiny_checkpoint, prompts, out, "--n", "2"))[0] == 0
    resumed = out.read_text().splitlines()
    assert resumed[:7] == whole[:7]
    pairs = [(r["id"], r["sample"]) for r in map(json.loads, resumed)]
    assert len(pairs) == len(set(pairs)) == 24
    status, _, err = run_cli(monkeypatch, capsys, *sample_args(tiny_checkpoint, prompts, out, "--n", "2"))
    assert status == 0 and "is complete" in err and out.read_text().splitlines() == resumed


def test_sigkill_then_rerun_completes_without_duplicates(tmp_path, tiny_checkpoint):
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS * 5)  # duplicates share ids: one set of samples each
    out = tmp_path / "s.jsonl"
    command = [sys.executable, "-m", "r1cli", *sample_args(tiny_checkpoint, prompts, out, "--n", "40", "--generation-batch-size", "40", "--max-new-tokens", "64")]
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    partial = tmp_path / "s.jsonl.partial"
    deadline = time.time() + 120
    while not (partial.exists() and partial.stat().st_size > 0):
        assert process.poll() is None and time.time() < deadline, "finished before it could be killed"
        time.sleep(0.02)
    process.kill()
    process.wait()
    assert not out.exists()
    subprocess.run(command, check=True, stderr=subprocess.DEVNULL)
    pairs = [(r["id"], r["sample"]) for r in lines(out)]
    assert len(pairs) == len(set(pairs)) == 12 * 40


def test_shards_split_the_prompts_and_concatenate(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    for index in range(3):
        assert run_cli(monkeypatch, capsys, *sample_args(tiny_checkpoint, prompts, tmp_path / f"s{index}.jsonl", "--shard", f"{index}/3"))[0] == 0
    shards = [{r["prompt"] for r in lines(tmp_path / f"s{index}.jsonl")} for index in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4] and set.union(*shards) == {p["prompt"] for p in PROMPTS}
    assert {r["prompt"] for r in lines(tmp_path / "s1.jsonl")} == {PROMPTS[i]["prompt"] for i in (1, 4, 7, 10)}


def test_stdout_output_and_real_gsm8k_keys(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    gsm8k = tmp_path / "g.jsonl"
    gsm8k.write_text("".join(shared_path("gsm8k", "test").read_text().splitlines(keepends=True)[:3]))
    status, out, _ = run_cli(monkeypatch, capsys, *sample_args(tiny_checkpoint, gsm8k, "-", "--prompt-key", "question", "--template", "r1-zero"))
    records = [json.loads(line) for line in out.splitlines()]
    assert status == 0 and len(records) == 3
    assert records[0]["prompt"].startswith("Janet") and records[0]["answer"].endswith("#### 18") and "question" not in records[0]


def test_bad_input_is_one_line(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    bad = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "ok"}, {"question": "no prompt field"}])
    status, _, err = run_cli(monkeypatch, capsys, *sample_args(tiny_checkpoint, bad, tmp_path / "s.jsonl"))
    assert status == 2 and "p.jsonl:2: missing field 'prompt'" in err and len(err.strip().splitlines()) == 1
    good = write_jsonl(tmp_path / "g.jsonl", PROMPTS[:1])
    for flag, value, message in (("--shard", "3/2", "need 0 <= I < N"), ("--template", "nope", "not one of: auto, chat, r1-zero, plain"),
                                 ("--engine", "tgi", "not one of: auto, fast, hf, vllm")):
        status, _, err = run_cli(monkeypatch, capsys, *sample_args(tiny_checkpoint, good, tmp_path / "s.jsonl", flag, value))
        assert status == 2 and message in err, err


def test_trl_conversational_prompts_from_a_hub_style_folder(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    """Prompt-only conversational records ({"prompt": [messages]}) in a folder of Parquet files,
    as a hub dataset repository holds them, read with --split."""
    import datasets
    from transformers import AutoTokenizer

    from r1cli.data.templates import format_prompt

    rows = [{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": p["prompt"]}], "answer": p["answer"]}
            for p in PROMPTS]
    (tmp_path / "repo" / "data").mkdir(parents=True)
    datasets.Dataset.from_list(rows[:8]).to_parquet(str(tmp_path / "repo" / "data" / "train-00000-of-00001.parquet"))
    datasets.Dataset.from_list(rows[8:]).to_parquet(str(tmp_path / "repo" / "data" / "test-00000-of-00001.parquet"))
    out = tmp_path / "s.jsonl"
    status, _, err = run_cli(monkeypatch, capsys, *sample_args(tiny_checkpoint, tmp_path / "repo", out, "--split", "test", "--n", "2"))
    assert status == 0, err
    records = lines(out)
    assert [r["prompt"] for r in records[::2]] == [r["prompt"] for r in rows[8:]] and len(records) == 8
    # The chat template renders the messages as given (system turn included).
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    assert format_prompt(rows[8]["prompt"], tokenizer, "auto").startswith("<|system|>Be brief.")
    status, _, err = run_cli(monkeypatch, capsys, *sample_args(tiny_checkpoint, tmp_path / "repo", tmp_path / "t.jsonl"))
    assert status == 2 and "holds the splits train, test; choose one with --split" in err
