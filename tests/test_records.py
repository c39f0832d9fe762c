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
