"""recipes/: every stage config is read by its command as `--config` reads it (each key an option
of that command, each value one it takes); the pipelines that pass them run the demo with exactly
the options its table was measured with."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import typer
import yaml
from conftest import shared_records

from r1cli import config_files
from r1cli.cli import app

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))
GROUP = typer.main.get_command(app)
USAGE = re.compile(r"^r1 (\w+) .*--config (\S+)")



def measured_commands() -> list[list[str]]:
    """The demo's commands as README's "What ran" lists them, option by option, as its table was
    measured; the pipelines pass recipes/toy/*.yaml instead and must come to the same options."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme[readme.index("### What ran"):]
    block = block[block.index("```bash\n") + 8 : block.index("\n```", block.index("```bash\n"))]
    lines = [line.split("  #")[0] for line in block.replace("\\\n", " ").splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith("r1 ") and line.split()[1] not in ("toy", "summary", "plot")]


def effective(argv: list[str]) -> tuple[str, dict]:
    """(command and --out, every option's value) as the command would run with ARGV, --config expanded."""
    expanded = config_files.expand(argv, GROUP)
    command = GROUP.commands[expanded[0]]
    params = command.make_context(expanded[0], expanded[1:]).params
    return f"{expanded[0]} {params['out']}", {k: v for k, v in params.items() if k != "config"}


def usage(recipe: Path) -> tuple[str, str]:
    """The command and --config path of the `r1 COMMAND ... --config PATH` line every recipe opens with."""
    comments = "\n".join(line.lstrip("#").strip() for line in recipe.read_text(encoding="utf-8").splitlines() if line.startswith("#"))
    found = [m for m in map(USAGE.match, comments.replace("\\\n", " ").splitlines()) if m]
    assert found, f"{recipe}: no `# r1 COMMAND ... --config PATH` line says how it is used"
    return found[0].group(1), found[0].group(2)


@pytest.mark.parametrize("recipe", RECIPES, ids=[str(p.relative_to(ROOT)) for p in RECIPES])
def test_every_key_of_a_recipe_is_an_option_of_its_command(recipe):
    name, path = usage(recipe)
    assert path == str(recipe.relative_to(ROOT)) and name in GROUP.commands
    values = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    assert isinstance(values, dict) and values
    command = GROUP.commands[name]
    spellings = {flag.lstrip("-").replace("-", "_") for p in command.params for flag in p.opts if flag.startswith("--")}
    assert set(values) <= spellings | {p.name for p in command.params} - {"config"}, f"{recipe}: not options of r1 {name}"
    # Every value as the command line takes it (types, ranges, choices), with stand-ins for its paths.
    arguments = [p for p in command.params if p.param_type_name == "argument" and p.required]
    _, options = effective([name, *["x"] * len(arguments), "--out", "o", "--config", str(recipe)])
    for key, value in values.items():
        option = next(p for p in command.params if p.name == key or f"--{key.replace('_', '-')}" in p.opts)
        got = options[option.name]
        assert (list(got) if isinstance(got, (tuple, list)) else got) == value, f"{recipe}: {key}"


def pipeline_commands(*arguments: str) -> list[list[str]]:
    """The `r1` commands `make -n -B ARGUMENTS` prints, each as its argv (without `r1`)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    environment = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}  # no settings from the caller's environment
    printed = subprocess.run(["make", "-n", "-B", *arguments], cwd=ROOT, env=environment, capture_output=True, text=True, check=True).stdout
    lines = printed.replace("\\\n", " ").splitlines()
    return [shlex.split(line)[1:] for line in lines if line.startswith(".venv/bin/r1 ") and not line.startswith(".venv/bin/r1 toy")]


def test_the_demo_pipelines_run_the_measured_options():
    measured = dict(effective(argv) for argv in measured_commands())
    commands = pipeline_commands("demo")
    assert all("--config" in argv for argv in commands if argv[0] not in ("mix", "summary", "plot", "report"))  # the long lists live in recipes/toy
    run = dict(effective(argv) for argv in commands if argv[0] not in ("summary", "plot", "report"))
    assert len(run) == 15 and {key: run.get(key) for key in measured} == measured
    # README lists one of the five evaluations; the other four differ from it in what they read and write only.
    listed = next(options for key, options in measured.items() if key.startswith("eval "))
    for key, options in run.items():
        if key not in measured:
            assert key.startswith("eval ") and {**options, "model": None, "out": None} == {**listed, "model": None, "out": None}


def test_the_real_model_recipes_run_through_the_same_targets():
    settings = ["RECIPES=recipes/qwen2.5-1.5b-gsm8k", "RUN_DIR=runs/qwen", "BASE=Qwen/Qwen2.5-1.5B", "TEACHER=runs/qwen/r1-zero",
                "STUDENT=Qwen/Qwen2.5-0.5B-Instruct", "PROMPTS=../shared/data/gsm8k/train.jsonl", "EVAL_DATA=../shared/data/gsm8k/test.jsonl"]
    commands = pipeline_commands("r1-zero", "runs/qwen/eval/base.json", "runs/qwen/eval/r1-zero.json", "distill", *settings)
    run = dict(effective(argv) for argv in commands)
    grpo = run["grpo runs/qwen/r1-zero"]
    assert grpo["model"] == "Qwen/Qwen2.5-1.5B" and grpo["template"] == "r1-zero" and grpo["prompt_key"] == "question"
    assert (grpo["prompts_per_step"], grpo["num_generations"], grpo["lr"], grpo["beta"], grpo["temperature"]) == (32, 16, 1e-6, 0.001, 1.0)
    assert run["eval runs/qwen/eval/r1-zero.json"]["n"] == 16 and run["distill runs/qwen/student-distill"]["student"] == "Qwen/Qwen2.5-0.5B-Instruct"
    # Overrides still reach the command line over the file.
    longer = dict(effective(argv) for argv in pipeline_commands("r1-zero", *settings, "STEPS=50", "GRPO_ARGS=--lr 2e-6"))
    assert (longer["grpo runs/qwen/r1-zero"]["steps"], longer["grpo runs/qwen/r1-zero"]["lr"]) == (50, 2e-6)


def test_the_gsm8k_recipes_name_the_shared_data_fields():
    records = shared_records("gsm8k", "train")
    for recipe in (ROOT / "recipes" / "qwen2.5-1.5b-gsm8k").glob("*.yaml"):
        values = yaml.safe_load(recipe.read_text(encoding="utf-8"))
        assert all(isinstance(r[values["prompt_key"]], str) and "####" in r[values["answer_key"]] for r in records), recipe.name
