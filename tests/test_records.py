import io
import json

import pytest
from conftest import shared_path, write_jsonl

from r1cli.data.records import (
    Record,
    prompt_id,
    read_all,
    read_records,
    to_prompt_record,
    training_kind,
    write_records,
)
from r1cli.errors import UserError


def test_reads_real_gsm8k_with_other_field_names():
    records = [to_prompt_record(r, "question", "answer") for r in read_records(shared_path("gsm8k", "test"))]
    assert len(records) == 1319
    first = records[0]
    assert first["prompt"].startswith("Janet") and first["answer"].endswith("#### 18")
    assert "question" not in first and first["id"] == prompt_id(first["prompt"])
    assert first.where.endswith("test.jsonl:1")


def test_ids_are_stable_and_kept_when_given(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "2+2?", "answer": 4, "source": "x"}, {"id": 7, "prompt": "3+3?"}])
    first, second = (to_prompt_record(r) for r in read_records(path))
    again = to_prompt_record(next(read_records(path)))
    assert first["id"] == again["id"] and first["id"].startswith("p-")
    assert first["source"] == "x"  # unknown fields pass through
    assert second["id"] == "7" and "answer" not in second


def test_stdin_and_stdout(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO('{"text": "a"}\n\n{"text": "b"}\n'))
    records = list(read_records("-"))
    assert [r["text"] for r in records] == ["a", "b"] and records[1].where == "<stdin>:3"
    write_records("-", [{"x": "中"}])
    assert capsys.readouterr().out == '{"x": "中"}\n'


def test_parquet_and_json_array_through_datasets(tmp_path):
    import datasets

    rows = [{"prompt": "a", "answer": "1"}, {"prompt": "b", "answer": "2"}]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "p.parquet"))
    (tmp_path / "p.json").write_text(json.dumps(rows))
    for name in ("p.parquet", "p.json"):
        assert [dict(r) for r in read_records(tmp_path / name)] == rows


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"text": "ok"}\n{"text": \n', "bad.jsonl:2: not valid JSON"),
        ('{"text": "ok"}\n[1, 2]\n', "bad.jsonl:2: expected a JSON object, got list"),
        ("", "bad.jsonl: no records (the input is empty)"),
    ],
)
def test_bad_files_name_file_and_line(tmp_path, content, message):
    (tmp_path / "bad.jsonl").write_text(content)
    with pytest.raises(UserError) as error:
        read_all([tmp_path / "bad.jsonl"])
    assert message in str(error.value)


def test_missing_and_wrong_fields_name_field_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "q", "completion": "a"}, {"question": "q"}])
    records = list(read_records(path))
    assert training_kind(records[0]) == "prompt_completion"
    with pytest.raises(UserError, match=r"d.jsonl:2: not a training record: needs 'messages'.*fields present: question"):
        training_kind(records[1])
    with pytest.raises(UserError, match=r"d.jsonl:2: missing field 'prompt'"):
        to_prompt_record(records[1])
    bad_role = Record.at({"messages": [{"role": "robot", "content": "x"}]}, "f.jsonl:9")
    with pytest.raises(UserError, match=r"f.jsonl:9: messages\[0\] has role 'robot'; valid roles: system, user"):
        training_kind(bad_role)


def test_failed_write_leaves_no_file(tmp_path):
    target = tmp_path / "out.jsonl"

    def records():
        yield {"a": 1}
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_records(target, records())
    assert not target.exists() and list(tmp_path.iterdir()) == []
    assert write_records(target, [{"a": 1}, {"b": 2}]) == 2
    assert target.read_text().splitlines() == ['{"a": 1}', '{"b": 2}']


# ---------------------------------------------------------------- datasets: save_to_disk, folders, the hub


ROWS = [{"prompt": f"Ann has {n} pens, gets 2. How many pens now?", "answer": str(n + 2)} for n in range(6)]


def saved_splits(tmp_path):
    """A save_to_disk DatasetDict (train: 4 rows, test: 2) and a save_to_disk Dataset."""
    import datasets

    whole = datasets.Dataset.from_list(ROWS)
    datasets.DatasetDict({"train": whole.select(range(4)), "test": whole.select(range(4, 6))}).save_to_disk(str(tmp_path / "dict"))
    whole.save_to_disk(str(tmp_path / "single"))
    return tmp_path / "dict", tmp_path / "single"


def canonical_sha256(rows):
    import hashlib

    return hashlib.sha256(b"".join(json.dumps(r, sort_keys=True, ensure_ascii=False).encode() + b"\n" for r in rows)).hexdigest()


def test_save_to_disk_dataset_and_dataset_dict(tmp_path):
    from r1cli.data.records import describe_input, input_sha256
    from r1cli.options import DataOptions

    splits, single = saved_splits(tmp_path)
    records = list(read_records(single))
    assert [dict(r) for r in records] == ROWS and records[2].where == f"{single}:row 3"
    test = list(read_records(splits, DataOptions(split="test")))
    assert [dict(r) for r in test] == ROWS[4:] and test[0].where == f"{splits}[test]:row 1"
    with pytest.raises(UserError, match=r"holds the splits train, test; choose one with --split"):
        list(read_records(splits))
    with pytest.raises(UserError, match=r"--split validation: no such split; it holds train, test"):
        list(read_records(splits, DataOptions(split="validation")))
    # The content hash is of the chosen rows, computed here independently.
    assert input_sha256(splits, DataOptions(split="train")) == canonical_sha256(ROWS[:4])
    assert input_sha256(single) == canonical_sha256(ROWS)
    assert describe_input(splits, DataOptions(split="test")) == {
        "path": str(splits.resolve()), "split": "test", "subset": None, "rows": 2, "sha256": canonical_sha256(ROWS[4:])}


def test_a_folder_of_data_files_loads_through_load_dataset(tmp_path):
    import datasets

    from r1cli.options import DataOptions

    folder = tmp_path / "gsm-like"
    (folder / "data").mkdir(parents=True)
    datasets.Dataset.from_list(ROWS[:4]).to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    datasets.Dataset.from_list(ROWS[4:]).to_parquet(str(folder / "data" / "test-00000-of-00001.parquet"))
    assert [dict(r) for r in read_records(folder, DataOptions(split="test"))] == ROWS[4:]
    assert [dict(r) for r in read_records(folder, DataOptions(split="train[:2]"))] == ROWS[:2]  # datasets' own split syntax
    with pytest.raises(UserError, match="holds the splits train, test; choose one with --split"):
        list(read_records(folder))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty: is a directory, and not a dataset"):
        list(read_records(tmp_path / "empty"))


def test_a_file_is_read_whole_when_split_is_given(tmp_path, capsys):
    from r1cli.options import DataOptions

    path = write_jsonl(tmp_path / "p.jsonl", ROWS)
    assert [dict(r) for r in read_records(path, DataOptions(split="test"))] == ROWS
    assert "a file has no splits" in capsys.readouterr().err


def test_a_missing_data_file_is_not_taken_for_a_hub_dataset(tmp_path):
    from r1cli.hub import is_hub_name

    assert is_hub_name("openai/gsm8k") and is_hub_name("HuggingFaceH4/MATH-500")
    assert not any(map(is_hub_name, ("runs/data.jsonl", "gsm8k", "./a/b", "/abs/x", "a/b/c", "x/y.parquet")))
    with pytest.raises(UserError, match="runs/data.jsonl: no such file"):
        list(read_records("runs/data.jsonl"))


def test_dataset_values_json_lacks_become_iso_text_or_one_clear_error(tmp_path):
    """A dates column reads (and hashes) as ISO text, the same every time; a bytes column is one
    line naming its row and column, not a traceback when r1 later writes or hashes the record."""
    import datetime

    import datasets

    from r1cli.data.records import input_sha256

    when = [datetime.datetime(2024, 1, 2, 3, 4, 5), datetime.datetime(2025, 6, 7, 8, 9, 10)]
    datasets.Dataset.from_dict({"prompt": ["a", "b"], "answer": ["1", "2"], "when": when}).save_to_disk(str(tmp_path / "dated"))
    records = list(read_records(str(tmp_path / "dated")))
    assert [r["when"] for r in records] == ["2024-01-02T03:04:05", "2025-06-07T08:09:10"]
    assert input_sha256(str(tmp_path / "dated")) == input_sha256(str(tmp_path / "dated"))
    datasets.Dataset.from_dict({"prompt": ["a"], "blob": [b"\x00\x01"]}).save_to_disk(str(tmp_path / "binary"))
    for call in (lambda: list(read_records(str(tmp_path / "binary"))), lambda: input_sha256(str(tmp_path / "binary"))):
        with pytest.raises(UserError, match=r"binary:row 1: field 'blob' holds a bytes"):
            call()


def test_a_hub_models_fingerprint_is_the_same_before_and_after_its_first_download(tmp_path, monkeypatch):
    """The identity of a run on a hub model is taken before the model loads; were it the name's
    hash on the first run and the snapshot's afterwards, a killed first run could not resume."""
    import huggingface_hub

    from r1cli import hub
    from r1cli.data.outputs import model_fingerprint

    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    (snapshot / "config.json").write_text('{"model_type": "qwen2"}')
    (snapshot / "model.safetensors").write_bytes(b"weights")
    cached = {"done": False}

    def fake_snapshot_download(name, local_files_only=False, allow_patterns=None):
        if local_files_only and not cached["done"]:
            raise FileNotFoundError(name)
        cached["done"] = True
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setattr(hub, "access", lambda: hub.HubAccess(True))
    first = model_fingerprint("someone/tiny")  # the first run: not cached yet
    cached["done"] = True  # the run then loads the model, which caches it
    assert model_fingerprint("someone/tiny") == first  # the rerun resumes
    monkeypatch.setattr(hub, "access", lambda: hub.HubAccess(False, "offline"))
    cached["done"] = False
    assert model_fingerprint("someone/other") != first  # offline and not cached: the name stands for itself
