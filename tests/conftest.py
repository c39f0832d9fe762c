"""Shared fixtures: tiny real models over the shipped toy tokenizer, built in temporary directories."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from r1cli.toy.tokenizer import TOKENIZER_DIR

# The public benchmarks beside the checkout (../shared/data), or wherever R1_SHARED_DATA points.
SHARED_DATA = Path(os.environ.get("R1_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")


def shared_path(name: str, split: str = "test") -> Path:
    """A public benchmark's file in SHARED_DATA; the test is skipped (with the reason) when absent."""
    path = SHARED_DATA / name / f"{split}.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} is missing (the public benchmarks live in ../shared/data, or set R1_SHARED_DATA)")
    return path


def shared_records(name: str, split: str = "test") -> list[dict]:
    """The rows of a public benchmark in SHARED_DATA (skipping the test when absent)."""
    return [json.loads(line) for line in shared_path(name, split).read_text(encoding="utf-8").splitlines() if line.strip()]


def write_tiny_config(path: Path) -> Path:
    """A two-layer Qwen2 config JSON naming the toy tokenizer, at PATH."""
    path.write_text(
        json.dumps(
            {
                "model_type": "qwen2",
                "tokenizer": str(TOKENIZER_DIR),
                "hidden_size": 32,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "intermediate_size": 64,
                "max_position_embeddings": 512,
                "tie_word_embeddings": True,
            }
        )
    )
    return path


def write_tiny_checkpoint(directory: Path, config: Path) -> Path:
    """CONFIG's model, randomly initialised (seed 0), as a checkpoint DIRECTORY as `r1 sft` would write one."""
    import torch

    from r1cli.modeling import load_model
    from r1cli.train.checkpoint import write_loadable

    model, tokenizer = load_model(str(config), seed=0)
    write_loadable(directory, model, tokenizer, torch.float32)
    return directory


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    """A two-layer Qwen2 config JSON naming the toy tokenizer: `r1 sft` initialises it randomly."""
    return write_tiny_config(tmp_path / "tiny.json")


@pytest.fixture
def tiny_checkpoint(tmp_path: Path, tiny_config: Path) -> Path:
    """A randomly initialised tiny checkpoint directory, as `r1 sft` would write one."""
    return write_tiny_checkpoint(tmp_path / "tiny-ckpt", tiny_config)


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def chat_records() -> list[dict]:
    return [
        {"messages": [{"role": "user", "content": f"Ann has {n} pens, gets 2. How many pens now?"},
                      {"role": "assistant", "content": f"<think>{n} plus 2 is {n + 2}.</think> The answer is \\boxed{{{n + 2}}}."}]}
        for n in range(1, 13)
    ]


def run_cli(monkeypatch, capsys, *argv: str) -> tuple[int, str, str]:
    """Run `r1 ARGV...` in-process as a user would; return (exit status, stdout, stderr)."""
    from r1cli import cli

    monkeypatch.setattr(sys, "argv", ["r1", *argv])
    try:
        cli.main()
        status = 0
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    captured = capsys.readouterr()
    return status, captured.out, captured.err
