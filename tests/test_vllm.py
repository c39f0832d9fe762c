"""The vLLM engine: exercised only where vLLM is installed (not on r1's CI or GPU machine)."""

import json

import pytest
from conftest import run_cli, write_jsonl


def test_without_vllm_the_engine_says_how_to_install_it(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    try:
        import vllm  # noqa: F401

        pytest.skip("vLLM is installed here")
    except ImportError:
        pass
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "hi"}])
    status, _, err = run_cli(monkeypatch, capsys, "sample", str(tiny_checkpoint), str(prompts), "--out", str(tmp_path / "s.jsonl"), "--engine", "vllm")
    assert status == 2 and "--engine vllm needs vLLM, which is not installed: pip install 'r1cli[vllm]'" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.gpu
def test_vllm_samples_match_the_record_contract(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    pytest.importorskip("vllm")
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "hi", "answer": "1"}, {"prompt": "yo", "answer": "2"}])
    status, _, err = run_cli(monkeypatch, capsys, "sample", str(tiny_checkpoint), str(prompts), "--out", str(tmp_path / "s.jsonl"),
                             "--engine", "vllm", "--n", "3", "--max-new-tokens", "8")
    assert status == 0, err
    records = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert len(records) == 6 and sorted({r["sample"] for r in records}) == [0, 1, 2]
    assert all(1 <= r["completion_tokens"] <= 8 and r["finish_reason"] in ("stop", "length") for r in records)
