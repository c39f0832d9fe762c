"""Hub names without the hub: with HF_HUB_OFFLINE set, or where the endpoint does not answer, a
model or dataset that is in no local cache fails at once with one line (no minute of retries)."""

from __future__ import annotations

import time

import pytest
from conftest import run_cli, write_jsonl

from r1cli import hub
from r1cli.data.records import read_records
from r1cli.errors import UserError
from r1cli.modeling import load_tokenizer


@pytest.fixture
def unreachable_hub(monkeypatch):
    """Online as far as the settings go, with an endpoint that refuses every connection."""
    import datasets.config
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(hub, "_access", [])
    return constants


@pytest.fixture
def offline_hub(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "_access", [])


def test_offline_a_hub_model_or_dataset_not_in_the_cache_fails_at_once(offline_hub):
    started = time.time()
    with pytest.raises(UserError, match=r"^someone/no-such-model: not a local path, and no model of that name is in the local "
                                        r"Hugging Face cache \(HF_HUB_OFFLINE is set"):
        load_tokenizer("someone/no-such-model")
    with pytest.raises(UserError, match=r"^someone/no-such-data: not a local path, and no dataset of that name is in the local"):
        list(read_records("someone/no-such-data"))
    assert time.time() - started < 10


def test_an_unreachable_hub_is_asked_once_then_the_process_works_offline(unreachable_hub):
    started = time.time()
    with pytest.raises(UserError, match=r"^someone/no-such-model: .* \(http://127.0.0.1:9 cannot be reached \(ConnectError"):
        load_tokenizer("someone/no-such-model")
    assert unreachable_hub.HF_HUB_OFFLINE is True  # the libraries read their caches from now on, without retries
    with pytest.raises(UserError, match=r"^someone/no-such-data: not a local path, and no dataset of that name is in the local"):
        list(read_records("someone/no-such-data"))
    assert time.time() - started < 10  # it was about 50 s of retries per name


def test_the_cli_says_it_in_one_line(tmp_path, offline_hub, monkeypatch, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "hi"}])
    status, _, err = run_cli(monkeypatch, capsys, "sample", "someone/no-such-model", str(prompts), "--out", str(tmp_path / "s.jsonl"))
    assert status == 2 and err.count("error:") == 1 and len(err.strip().splitlines()) == 1, err
    assert "someone/no-such-model: not a local path" in err and not (tmp_path / "s.jsonl").exists()
