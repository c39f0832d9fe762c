"""`--config FILE`: options from YAML or JSON, the command line over them, a run's r1.json replays it."""

from __future__ import annotations

import json

from conftest import run_cli, write_jsonl

PROMPTS = [{"prompt": f"{n} plus 1?", "answer": str(n + 1)} for n in range(6)]
SMALL = {"steps": 2, "prompts_per_step": 2, "num_generations": 2, "max_new_tokens": 6, "device": "cpu", "save_every": 0,
         "log_samples_every": 0, "reward": ["format", "repetition"]}


def options_of(run) -> dict:
    return json.loads((run / "r1.json").read_text())["options"]


def metrics_of(run) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if "seconds" not in k and "per_s" not in k}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_json_and_yaml_files_set_options_and_the_command_line_wins(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    (tmp_path / "a.json").write_text(json.dumps({**SMALL, "lr": 0.002, "max-prompt-length": 64}))
    status, _, err = run_cli(monkeypatch, capsys, "grpo", str(tiny_checkpoint), str(prompts), "--out", str(tmp_path / "a"),
                             "--config", str(tmp_path / "a.json"), "--lr", "0.003")
    assert status == 0, err
    options = options_of(tmp_path / "a")
    assert options["lr"] == 0.003 and options["max_prompt_length"] == 64 and options["steps"] == 2
    assert options["reward"] == ["format", "repetition"]
    # YAML, the arguments in the file too; a list given on the command line replaces the file's.
    (tmp_path / "b.yaml").write_text(f"model: {tiny_checkpoint}\nprompts: {prompts}\nout: {tmp_path / 'b'}\n"
                                     + "".join(f"{k}: {json.dumps(v)}\n" for k, v in SMALL.items()) + "mask_truncated: true\n")
    status, _, err = run_cli(monkeypatch, capsys, "grpo", "--config", str(tmp_path / "b.yaml"), "--reward", "format")
    assert status == 0, err
    options = options_of(tmp_path / "b")
    assert options["reward"] == ["format"] and options["mask_truncated"] is True and options["model"] == str(tiny_checkpoint)


def test_a_runs_r1_json_replays_the_run(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    (tmp_path / "c.json").write_text(json.dumps({**SMALL, "lr": 0.01}))
    assert run_cli(monkeypatch, capsys, "grpo", str(tiny_checkpoint), str(prompts), "--out", str(tmp_path / "first"),
                   "--config", str(tmp_path / "c.json"))[0] == 0
    status, _, err = run_cli(monkeypatch, capsys, "grpo", "--config", str(tmp_path / "first" / "r1.json"), "--out", str(tmp_path / "again"))
    assert status == 0, err
    first, again = options_of(tmp_path / "first"), options_of(tmp_path / "again")
    assert {k: v for k, v in first.items() if k != "out"} == {k: v for k, v in again.items() if k != "out"}
    assert metrics_of(tmp_path / "first") == metrics_of(tmp_path / "again")


def test_bad_config_files_are_one_line(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    cases = {
        "unknown.json": (json.dumps({"learning_rate": 1}), "'learning_rate' is not an option of `r1 grpo`"),
        "broken.json": ("{", "not valid JSON"),
        "broken.yaml": ("a: [", "not valid YAML"),
        "list.json": ("[1, 2]", "expected a mapping"),
        "flag.json": (json.dumps({"mask_truncated": "yes"}), "'mask_truncated' must be true or false"),
        "range.json": (json.dumps({"steps": 0}), "--steps"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        status, _, err = run_cli(monkeypatch, capsys, "grpo", str(tiny_checkpoint), str(prompts), "--out", str(tmp_path / "x"),
                                 "--reward", "format", "--config", str(tmp_path / name))
        assert status == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (name, err)
    status, _, err = run_cli(monkeypatch, capsys, "sft", "--config", str(tmp_path / "missing.json"))
    assert status == 2 and "no such file" in err
    lineage = tmp_path / "r1.json"
    lineage.write_text(json.dumps({"command": "sft", "options": {"lr": 1e-3}}))
    status, _, err = run_cli(monkeypatch, capsys, "grpo", "--config", str(lineage))
    assert status == 2 and "a run of `r1 sft`, not of `r1 grpo`" in err
    assert not (tmp_path / "x").exists()


def test_every_stage_command_takes_config(monkeypatch, capsys):
    for name in ("sft", "grpo", "sample", "filter", "mix", "distill", "eval", "plot", "summary"):
        status, out, _ = run_cli(monkeypatch, capsys, name, "--help")
        assert status == 0 and "--config" in out, name


def test_trl_spellings_are_aliases_of_the_same_options(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    common = [str(tiny_checkpoint), str(prompts), "--reward", "format", "--steps", "1", "--prompts-per-step", "2", "--num-generations", "2",
              "--device", "cpu", "--save-every", "0", "--log-samples-every", "0"]
    assert run_cli(monkeypatch, capsys, "grpo", *common, "--out", str(tmp_path / "ours"), "--max-new-tokens", "5", "--loss", "dapo",
                   "--grad-accum", "2")[0] == 0
    assert run_cli(monkeypatch, capsys, "grpo", *common, "--out", str(tmp_path / "trl"), "--max-completion-length", "5",
                   "--loss-type", "dapo", "--gradient-accumulation-steps", "2")[0] == 0
    ours, trl = options_of(tmp_path / "ours"), options_of(tmp_path / "trl")
    assert {k: v for k, v in ours.items() if k != "out"} == {k: v for k, v in trl.items() if k != "out"}
    assert trl["max_new_tokens"] == 5 and trl["loss"] == "dapo" and trl["grad_accum"] == 2
    assert metrics_of(tmp_path / "ours") == metrics_of(tmp_path / "trl")
    status, out, _ = run_cli(monkeypatch, capsys, "sft", "--help")
    assert "--per-device-train-batch-size" in out and out.count("--gradient-accumulation-steps") == 1


def test_adam_betas_and_epsilon_reach_the_optimizer(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    import torch

    from r1cli.train import optim

    made = []
    real = optim.make_optimizer
    monkeypatch.setattr("r1cli.recipes.sft.make_optimizer", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "1+1?", "completion": "2"}] * 4)
    status, _, err = run_cli(monkeypatch, capsys, "sft", str(tiny_checkpoint), str(data), "--out", str(tmp_path / "s"), "--max-steps", "1",
                             "--batch-size", "2", "--device", "cpu", "--adam-betas", "0.8", "0.99", "--adam-epsilon", "1e-6")
    assert status == 0, err
    group = made[0].param_groups[0]
    assert group["betas"] == (0.8, 0.99) and group["eps"] == 1e-6 and isinstance(made[0], torch.optim.AdamW)
    assert options_of(tmp_path / "s")["adam_betas"] == [0.8, 0.99]
    status, _, err = run_cli(monkeypatch, capsys, "sft", str(tiny_checkpoint), str(data), "--out", str(tmp_path / "t"), "--max-steps", "1",
                             "--device", "cpu", "--adam-betas", "1.5", "0.9")
    assert status == 2 and "--adam-betas 1.5 0.9: each must be in [0, 1)" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "t").exists()


def test_bad_adam_betas_in_grpo_leave_nothing(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    status, _, err = run_cli(monkeypatch, capsys, "grpo", str(tiny_checkpoint), str(prompts), "--out", str(tmp_path / "g"), "--reward", "format",
                             "--prompts-per-step", "2", "--device", "cpu", "--adam-betas", "0.9", "1")
    assert status == 2 and "--adam-betas 0.9 1.0: each must be in [0, 1)" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "g").exists()



def test_a_key_may_be_any_spelling_of_its_option(tmp_path):
    import pytest
    import typer

    from r1cli import config_files
    from r1cli.cli import app
    from r1cli.errors import UserError

    group = typer.main.get_command(app)
    (tmp_path / "f.yaml").write_text("min: [accuracy=1]\nrequire_format: false\n")
    expanded = config_files.expand(["filter", "s.jsonl", "--out", "k.jsonl", "--config", str(tmp_path / "f.yaml")], group)
    assert expanded == ["filter", "s.jsonl", "--out", "k.jsonl", "--min", "accuracy=1", "--no-require-format"]
    (tmp_path / "g.yaml").write_text("max_completion_length: 64\n")  # TRL's name of --max-new-tokens
    assert config_files.expand(["sample", "m", "p", "--out", "o", "--config", str(tmp_path / "g.yaml")], group)[-2:] == ["--max-new-tokens", "64"]
    (tmp_path / "h.yaml").write_text("max_completion_length: 64\nmax_new_tokens: 32\n")
    with pytest.raises(UserError, match="'max_completion_length' and 'max_new_tokens' are the same option; give it once"):
        config_files.expand(["sample", "m", "p", "--out", "o", "--config", str(tmp_path / "h.yaml")], group)
