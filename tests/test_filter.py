import json

from conftest import run_cli, shared_records, write_jsonl


def gsm8k() -> list[dict]:
    return shared_records("gsm8k", "test")[:6]


def gold(row):
    return row["answer"].rsplit("####", 1)[1].strip().replace(",", "")


def samples_for(row, index):
    """One prompt's samples, each failing exactly one rule (or none)."""
    base = {"id": f"gsm8k-{index}", "prompt": row["question"], "answer": row["answer"], "source": "gsm8k"}
    right = f"\\boxed{{{gold(row)}}}"
    return [
        {**base, "completion": f"<think>Add the amounts step by step.</think> So {right}."},  # kept
        {**base, "completion": f"<think>Add the amounts carefully, step by step.</think> Hence {right}."},  # kept, longer
        {**base, "completion": "<think>Add the amounts.</think> \\boxed{-1}"},  # wrong
        {**base, "completion": f"Add the amounts. {right}"},  # no think block
        {**base, "completion": f"<think>Add the amounts, 然后相加。</think> {right}"},  # mixed language
        {**base, "completion": f"<think>Add.\n```python\nprint(1)\n```</think> {right}"},  # code block
        {**base, "completion": f"<think>{'word ' * 200}</think> {right}"},  # over-long paragraph
        {**base, "completion": f"<think>Add the amounts step by step.</think>  So {right}."},  # duplicate of the first
    ]


def test_each_rule_drops_what_it_should_and_the_output_is_training_records(tmp_path, monkeypatch, capsys):
    rows = gsm8k()
    records = [s for i, row in enumerate(rows) for s in samples_for(row, i)]
    path = write_jsonl(tmp_path / "s.jsonl", records)
    out = tmp_path / "kept.jsonl"
    status, _, err = run_cli(monkeypatch, capsys, "filter", str(path), "--out", str(out), "--require-format", "--one-language",
                             "--no-code-blocks", "--max-paragraph-chars", "400", "--dedupe")
    assert status == 0, err
    summary = json.loads((tmp_path / "kept.jsonl.summary.json").read_text())
    assert summary.pop("options")["max_paragraph_chars"] == 400  # the options are recorded
    six = len(rows)
    assert summary == {"input": 8 * six, "kept": 2 * six, "prompts_kept": six, "dropped": {
        "accuracy<1": six, "format": six, "mixed_language": six, "code_block": six, "long_paragraph": six, "duplicate": six}}
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    first = kept[0]
    assert first["messages"] == [{"role": "user", "content": rows[0]["question"]},
                                 {"role": "assistant", "content": records[0]["completion"]}]
    assert first["id"] == "gsm8k-0" and first["source"] == "gsm8k" and first["rewards"]["accuracy"] == 1.0
    assert "completion" not in first and "prompt" not in first
    assert "dropped: accuracy<1 6" in err


def test_per_prompt_best_and_n_and_completion_only_records(tmp_path, monkeypatch, capsys):
    records = [{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}], "answer": "4", "completion": c}
               for c in ("<think>long long long</think> \\boxed{4}", "<think>short</think> \\boxed{4}", "<think>x</think> \\boxed{5}", "<think>mid mid</think> \\boxed{4}")]
    path = write_jsonl(tmp_path / "s.jsonl", records)
    for per_prompt, expected in (("best", ["<think>short</think> \\boxed{4}"]), ("2", ["<think>short</think> \\boxed{4}", "<think>mid mid</think> \\boxed{4}"])):
        status, out, _ = run_cli(monkeypatch, capsys, "filter", str(path), "--out", "-", "--reward", "accuracy", "--reward", "format=0.5",
                                 "--min", "accuracy=1", "--per-prompt", per_prompt)
        kept = [json.loads(line) for line in out.splitlines()]
        assert status == 0 and [k["messages"][-1]["content"] for k in kept] == expected
        assert kept[0]["messages"][0] == {"role": "system", "content": "Be brief."} and kept[0]["rewards"]["format"] == 1.0


def test_filter_bad_input(tmp_path, monkeypatch, capsys):
    path = write_jsonl(tmp_path / "s.jsonl", [{"prompt": "q", "completion": "a"}, {"prompt": "q"}])
    status, _, err = run_cli(monkeypatch, capsys, "filter", str(path), "--out", str(tmp_path / "o.jsonl"))
    assert status == 2 and "s.jsonl:2: missing field 'completion'" in err
    good = write_jsonl(tmp_path / "g.jsonl", [{"prompt": "q", "completion": "a"}])
    for args, message in ((["--reward", "accurate"], "unknown reward 'accurate'; valid: accuracy"),
                          (["--min", "format=1"], "--min format=…: format is not a reward being scored"),
                          (["--per-prompt", "most"], "--per-prompt 'most': expected all, best or a positive number"),
                          (["--reward", "format", "--min", "format"], "--min 'format': expected NAME=VALUE")):
        status, _, err = run_cli(monkeypatch, capsys, "filter", str(good), "--out", str(tmp_path / "o.jsonl"), *args)
        assert status == 2 and message in err, err
    assert not (tmp_path / "o.jsonl").exists()
