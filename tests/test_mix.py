import io
import json
from collections import Counter

import pytest
from conftest import run_cli, write_jsonl

from r1cli.recipes.mix import largest_remainder


def sources(tmp_path, sizes):
    paths = []
    for name, size in sizes.items():
        paths.append(write_jsonl(tmp_path / f"{name}.jsonl", [{"text": f"{name} {i}"} for i in range(size)]))
    return paths


def read(path):
    return [json.loads(line)["text"] for line in path.read_text().splitlines()]


def test_largest_remainder_against_a_direct_computation():
    assert largest_remainder(10, [3, 1]) == [8, 2]  # 7.5 / 2.5: tie on remainders goes to the first
    assert largest_remainder(7, [1, 1, 1]) == [3, 2, 2]
    assert largest_remainder(100, [0.75, 0.25]) == [75, 25]
    assert sum(largest_remainder(1001, [0.2, 0.3, 0.5])) == 1001


def test_total_is_exact_split_by_weight_with_replacement_only_beyond_a_source(tmp_path, monkeypatch, capsys):
    reasoning, general = sources(tmp_path, {"reasoning": 50, "general": 10})
    out = tmp_path / "mix.jsonl"
    status, _, err = run_cli(monkeypatch, capsys, "mix", f"{reasoning}:0.75", f"{general}:0.25", "--out", str(out), "--total", "80", "--seed", "3")
    assert status == 0, err
    texts = read(out)
    counts = Counter(t.split()[0] for t in texts)
    assert counts == {"reasoning": 60, "general": 20}
    reasoning_drawn = Counter(t for t in texts if t.startswith("reasoning"))
    assert len(reasoning_drawn) == 50 and sum(reasoning_drawn.values()) == 60  # all 50 once, 10 more with replacement
    general_drawn = Counter(t for t in texts if t.startswith("general"))
    assert len(general_drawn) == 10 and sum(general_drawn.values()) == 20
    assert "reasoning.jsonl: 60 (75.0%) of 50, 10 repeated" in err


def test_without_total_every_record_once_shuffled_by_the_seed(tmp_path, monkeypatch, capsys):
    paths = sources(tmp_path, {"a": 20, "b": 30})
    outs = {}
    for seed in (1, 1, 2):
        out = tmp_path / f"mix{seed}.jsonl"
        assert run_cli(monkeypatch, capsys, "mix", *map(str, paths), "--out", str(out), "--seed", str(seed))[0] == 0
        outs.setdefault(seed, []).append(read(out))
    everything = sorted([f"a {i}" for i in range(20)] + [f"b {i}" for i in range(30)])
    assert sorted(outs[1][0]) == everything and outs[1][0] == outs[1][1] != outs[2][0]
    assert outs[1][0] != [f"a {i}" for i in range(20)] + [f"b {i}" for i in range(30)]


def test_dedupe_stdin_and_bad_records(tmp_path, monkeypatch, capsys):
    a = write_jsonl(tmp_path / "a.jsonl", [{"text": "same"}, {"text": "same"}, {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "r"}]}])
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b'{"text": "same"}\n{"prompt": "p", "completion": "c"}\n')))
    status, out, _ = run_cli(monkeypatch, capsys, "mix", str(a), "-", "--out", "-", "--unique")
    assert status == 0 and len(out.splitlines()) == 3
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "ok"}, {"completion": "no prompt"}])
    status, _, err = run_cli(monkeypatch, capsys, "mix", str(a), str(bad), "--out", str(tmp_path / "o.jsonl"))
    assert status == 2 and "bad.jsonl:2: not a training record" in err and not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize("spec, message", [("nowhere.jsonl", "nowhere.jsonl: no such file"), ("{a}:-1", "a weight must be a finite number >= 0")])
def test_bad_sources(tmp_path, monkeypatch, capsys, spec, message):
    (a,) = sources(tmp_path, {"a": 3})
    status, _, err = run_cli(monkeypatch, capsys, "mix", spec.format(a=a), "--out", str(tmp_path / "o.jsonl"))
    assert status == 2 and message in err


def test_mixes_prompt_records_for_grpo_but_not_with_training_records(tmp_path, monkeypatch, capsys):
    reasoning = write_jsonl(tmp_path / "r.jsonl", [{"id": f"r{i}", "prompt": f"q{i}", "answer": str(i)} for i in range(30)])
    general = write_jsonl(tmp_path / "g.jsonl", [{"id": f"g{i}", "prompt": f"say {i}", "reference": str(i)} for i in range(10)])
    out = tmp_path / "prompts.jsonl"
    status, _, err = run_cli(monkeypatch, capsys, "mix", f"{reasoning}:3", f"{general}:1", "--total", "20", "--out", str(out))
    assert status == 0, err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert Counter(r["id"][0] for r in records) == {"r": 15, "g": 5}
    assert all(("answer" in r) == r["id"].startswith("r") and ("reference" in r) == r["id"].startswith("g") for r in records)

    training = sources(tmp_path, {"sft": 5})[0]
    status, _, err = run_cli(monkeypatch, capsys, "mix", str(reasoning), str(training), "--out", str(out))
    assert status == 2 and "cannot mix prompt records with training records" in err


def test_parquet_and_json_array_inputs_mix_as_jsonl_does(tmp_path, monkeypatch, capsys):
    import datasets

    rows = [{"text": f"p {i}"} for i in range(6)]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "a.parquet"))
    (tmp_path / "b.json").write_text(json.dumps([{"text": f"j {i}"} for i in range(4)]))
    jsonl = sources(tmp_path, {"c": 5})[0]
    out = tmp_path / "mix.jsonl"
    status, _, err = run_cli(monkeypatch, capsys, "mix", f"{tmp_path / 'a.parquet'}:2", str(tmp_path / "b.json"), str(jsonl),
                             "--total", "16", "--out", str(out))
    assert status == 0, err
    drawn = Counter(text.split()[0] for text in read(out))
    assert drawn == {"p": 8, "j": 4, "c": 4} and "a.parquet: 8" in err
    (tmp_path / "bad.json").write_text(json.dumps([{"text": "ok"}, {"nothing": 1}]))
    status, _, err = run_cli(monkeypatch, capsys, "mix", str(tmp_path / "bad.json"), "--out", str(tmp_path / "x.jsonl"))
    assert status == 2 and "bad.json:row 2" in err and len(err.strip().splitlines()) == 1


def test_datasets_mix_as_files_do(tmp_path, monkeypatch, capsys):
    """A save_to_disk DatasetDict (its --split) and TRL conversational records beside a JSONL file."""
    import datasets

    def conversational(name, i):
        return {"prompt": [{"role": "user", "content": f"{name} {i}"}], "completion": [{"role": "assistant", "content": "ok"}]}

    datasets.DatasetDict({"train": datasets.Dataset.from_list([conversational("d", i) for i in range(6)]),
                          "test": datasets.Dataset.from_list([conversational("t", i) for i in range(3)])}).save_to_disk(str(tmp_path / "dict"))
    jsonl = write_jsonl(tmp_path / "c.jsonl", [{"messages": [{"role": "user", "content": f"c {i}"}, {"role": "assistant", "content": "ok"}]}
                                                for i in range(4)])
    out = tmp_path / "mix.jsonl"
    status, _, err = run_cli(monkeypatch, capsys, "mix", f"{tmp_path / 'dict'}:3", f"{jsonl}:1", "--split", "train", "--total", "8", "--out", str(out))
    assert status == 0, err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    firsts = Counter((r.get("prompt") or r.get("messages"))[0]["content"].split()[0] for r in records)
    assert firsts == {"d": 6, "c": 2}
    status, _, err = run_cli(monkeypatch, capsys, "mix", str(tmp_path / "dict"), "--out", str(tmp_path / "x.jsonl"))
    assert status == 2 and "holds the splits train, test; choose one with --split" in err
