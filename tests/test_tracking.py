"""`--report-to`: TensorBoard's event files read back equal metrics.jsonl; W&B and Trackio (fakes
that record their calls, tests/fakes) get the same lines and the run's options as config; a
resumed run continues its tracker's run; a missing package is one line."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, write_jsonl

from r1cli.commands.grpo import grpo
from r1cli.commands.sft import sft
from r1cli.train.tracking import TRACKING_FILE

FAKES = Path(__file__).parent / "fakes"
SFT = {"lr": 3e-3, "warmup": 0, "batch_size": 4, "max_length": 128, "save_every": 0, "device": "cpu"}
GRPO = {"prompts_per_step": 4, "num_generations": 4, "max_new_tokens": 8, "lr": 1e-3, "device": "cpu", "save_every": 0,
        "log_samples_every": 0}
PROMPTS = [{"prompt": f"Ann has {n} pens, gets {m}. How many?", "answer": str(n + m)} for n in range(2, 6) for m in (1, 2)]


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def numbers(line: dict) -> dict:
    return {k: v for k, v in line.items() if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


def fake(monkeypatch, name: str):
    """The fake module NAME from tests/fakes, as the real one, for this test only."""
    path = FAKES / name / "__init__.py"
    spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=[str(path.parent)])
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


def tensorboard_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_events_hold_the_metrics_lines_and_the_options(tmp_path, tiny_config, chat_records):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = write_jsonl(tmp_path / "d.jsonl", chat_records)
    run = tmp_path / "tb"
    sft(str(tiny_config), [str(data)], run, max_steps=3, report_to="tensorboard", **SFT)
    lines = metrics(run)
    scalars = tensorboard_scalars(run)
    assert set(scalars) == set().union(*(numbers(line) for line in lines)) and "loss" in scalars
    for tag, points in scalars.items():  # TensorBoard keeps float32 scalars
        assert points == [(line["step"], float(np.float32(line[tag]))) for line in lines if tag in line]
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    text = events.Tensors("options/text_summary")[0].tensor_proto.string_val[0].decode()
    assert json.loads(text.removeprefix("```json\n").removesuffix("\n```")) == json.loads((run / "r1.json").read_text())["options"]


def test_a_resumed_run_logs_each_step_once_and_may_start_reporting(tmp_path, tiny_config, chat_records):
    data = write_jsonl(tmp_path / "d.jsonl", chat_records)
    options = {**SFT, "max_steps": 4, "save_every": 2}
    killed = tmp_path / "killed"
    sft(str(tiny_config), [str(data)], killed, report_to="tensorboard", **options)
    (killed / "r1.json").unlink()  # as if killed after step 4's line: the rerun resumes at step 2
    sft(str(tiny_config), [str(data)], killed, report_to="tensorboard", **options)
    assert [line["step"] for line in metrics(killed)] == [1, 2, 3, 4]
    assert [step for step, _ in tensorboard_scalars(killed)["loss"]] == [1, 2, 3, 4]  # steps 3 and 4 of the first run purged
    assert [value for _, value in tensorboard_scalars(killed)["loss"]] == [float(np.float32(m["loss"])) for m in metrics(killed)]

    # --report-to may change on resume: a run without a tracker continues with one.
    later = tmp_path / "later"
    sft(str(tiny_config), [str(data)], later, **options)
    (later / "r1.json").unlink()
    sft(str(tiny_config), [str(data)], later, report_to="tensorboard", **options)
    assert [step for step, _ in tensorboard_scalars(later)["loss"]] == [3, 4]
    assert json.loads((later / "r1.json").read_text())["options"]["report_to"] == "tensorboard"


def test_wandb_gets_every_line_with_the_options_as_config_and_resumes_its_run(tmp_path, tiny_checkpoint, monkeypatch):
    wandb = fake(monkeypatch, "wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    run = tmp_path / "rl"
    options = {**GRPO, "save_every": 1, "keep_checkpoints": 2}
    grpo(str(tiny_checkpoint), str(prompts), run, ["format", "length"], steps=2, report_to="wandb", **options)
    first = [call for call in wandb.CALLS if call["call"] == "init"]
    assert len(first) == 1 and first[0]["mode"] == "offline"  # W&B's own settings are left to its environment
    assert first[0]["config"] == json.loads((run / "r1.json").read_text())["options"]
    run_id = json.loads((run / TRACKING_FILE).read_text())["id"]
    assert first[0]["id"] == run_id and first[0]["resume"] == "allow" and first[0]["name"] == "rl" and first[0]["dir"] == str(run)
    logged = [call for call in wandb.CALLS if call["call"] == "log"]
    assert [(c["step"], c["data"]) for c in logged] == [(line["step"], numbers(line)) for line in metrics(run)]
    assert wandb.CALLS[-1] == {"call": "finish", "id": run_id}

    wandb.CALLS.clear()
    # As if killed after step 2's line, before its checkpoint: resumed from step 1, the same W&B run continues.
    (run / "r1.json").unlink()
    shutil.rmtree(run / "checkpoints" / "step-000002")
    grpo(str(tiny_checkpoint), str(prompts), run, ["format", "length"], steps=2, report_to="wandb", **options)
    assert [c["id"] for c in wandb.CALLS if c["call"] == "init"] == [run_id]
    assert [c["step"] for c in wandb.CALLS if c["call"] == "log"] == [2]


def test_trackio_gets_every_line_and_prints_nothing_on_stdout(tmp_path, tiny_config, chat_records, monkeypatch, capsys):
    trackio = fake(monkeypatch, "trackio")
    data = write_jsonl(tmp_path / "d.jsonl", chat_records)
    status, out, err = run_cli(monkeypatch, capsys, "sft", str(tiny_config), str(data), "--out", str(tmp_path / "t"), "--max-steps", "2",
                               "--report-to", "trackio", "--save-every", "0", "--device", "cpu", "--max-length", "128", "--batch-size", "4")
    assert status == 0, err
    assert out == "" and "Trackio project initialized" in err  # r1's stdout is for data
    run = tmp_path / "t"
    init = trackio.CALLS[0]
    assert init["call"] == "init" and init["project"] == "r1" and init["resume"] == "allow"
    assert init["name"] == f"t-{json.loads((run / TRACKING_FILE).read_text())['id']}"
    assert init["config"] == json.loads((run / "r1.json").read_text())["options"]
    assert [(c["step"], c["metrics"]) for c in trackio.CALLS if c["call"] == "log"] == [(m["step"], numbers(m)) for m in metrics(run)]


@pytest.mark.parametrize("command", ["sft", "grpo", "distill"])
def test_a_missing_tracker_is_one_line_naming_the_pip_command(tmp_path, tiny_checkpoint, monkeypatch, capsys, command):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    prompts = str(write_jsonl(tmp_path / "p.jsonl", PROMPTS))
    argv = {"sft": ["sft", str(tiny_checkpoint), prompts], "grpo": ["grpo", str(tiny_checkpoint), prompts, "--reward", "format"],
            "distill": ["distill", str(tiny_checkpoint), str(tiny_checkpoint), prompts]}[command]
    status, _, err = run_cli(monkeypatch, capsys, *argv, "--out", str(tmp_path / "o"), "--report-to", "wandb")
    assert status == 2 and err.strip().splitlines()[-1].endswith(
        "--report-to wandb needs the wandb package, which is not installed: pip install wandb (or, in r1's checkout: pip install -e '.[wandb]')")
    assert "Traceback" not in err and not (tmp_path / "o").exists()
    status, _, err = run_cli(monkeypatch, capsys, *argv, "--out", str(tmp_path / "o"), "--report-to", "mlflow")
    assert status == 2 and "--report-to 'mlflow' is not one of: none, tensorboard, wandb, trackio" in err
