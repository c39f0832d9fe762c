import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from r1cli.modeling import load_model
from r1cli.train import checkpoint as ckpt


def test_loadable_weights_are_stored_and_reloaded_in_the_save_dtype(tmp_path, tiny_config):
    model, tokenizer = load_model(str(tiny_config), seed=3)  # fp32 master weights
    ckpt.write_checkpoint(tmp_path / "c", lambda d: ckpt.write_loadable(d, model, tokenizer, torch.bfloat16), {"step": 0})
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "c", dtype="auto")
    assert next(reloaded.parameters()).dtype == torch.bfloat16
    original = model.state_dict()
    for name, tensor in reloaded.state_dict().items():
        assert torch.equal(tensor, original[name].to(torch.bfloat16)), name
    assert json.loads((tmp_path / "c" / "r1.json").read_text()) == {"step": 0}


def test_a_failed_write_leaves_nothing_that_looks_like_a_checkpoint(tmp_path, tiny_config):
    model, tokenizer = load_model(str(tiny_config))

    def dies_half_way(directory):
        ckpt.write_loadable(directory, model, tokenizer, torch.float32)
        raise OSError("disk full")

    run = tmp_path / "run"
    with pytest.raises(OSError):
        ckpt.write_checkpoint(ckpt.checkpoint_dir(run, 5), dies_half_way, {"step": 5})
    assert list((run / "checkpoints").iterdir()) == []
    assert ckpt.latest_checkpoint(run) is None


def test_latest_checkpoint_skips_incomplete_ones_and_pruning_keeps_the_newest(tmp_path):
    for step, complete in ((10, True), (20, True), (30, False)):
        directory = ckpt.checkpoint_dir(tmp_path, step)
        (directory / ckpt.STATE).mkdir(parents=True)
        if complete:
            (directory / ckpt.LINEAGE).write_text("{}")
    assert ckpt.latest_checkpoint(tmp_path).name == "step-000020"
    ckpt.prune_checkpoints(tmp_path, keep=1)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-000020"]
