"""The shape of the code: commands are faces over recipes, options mean one thing everywhere,
recipes read top to bottom."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import typer

from r1cli.cli import app

PACKAGE = Path(__file__).resolve().parents[1] / "r1cli"
# Options whose default is the stage's own (the papers' values): the meaning and help are shared.
STAGE_DEFAULTS = {"n", "temperature", "top_p", "lr", "warmup", "schedule", "epochs", "generation_batch_size", "require_format"}
# What a command reads and writes: the help says what it is for that command.
OWN_FILES = {"out", "data", "model", "prompts", "samples", "reward"}


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_no_command_imports_another_and_nothing_below_imports_a_command():
    commands = sorted((PACKAGE / "commands").glob("*.py"))
    assert len(commands) >= 9
    for path in PACKAGE.rglob("*.py"):
        if path.name == "cli.py":
            continue  # the registry of faces
        used = {name for name in imports_of(path) if name.startswith("r1cli.commands")}
        assert used == set(), f"{path.relative_to(PACKAGE)} imports {sorted(used)}"


def click_commands():
    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            continue  # `r1 toy`: the toy world's helpers, whose options (sizes, the world's seed) are its own
        else:
            yield name, command


def test_each_option_means_one_thing_in_every_command():
    seen: dict[str, tuple[str, str, object]] = {}
    differences = []
    for command_name, command in click_commands():
        for parameter in command.params:
            help_text = getattr(parameter, "help", None) or ""
            if parameter.name in OWN_FILES:
                continue
            if parameter.name in seen:
                first, first_help, first_default = seen[parameter.name]
                if help_text != first_help:
                    differences.append(f"--{parameter.name}: help differs between {first} and {command_name}")
                if parameter.name not in STAGE_DEFAULTS and parameter.default != first_default:
                    differences.append(f"--{parameter.name}: default differs between {first} and {command_name}")
            else:
                seen[parameter.name] = (command_name, help_text, parameter.default)
    assert differences == []


def test_the_grpo_loop_unpacks_no_positional_tuples_and_recipes_stay_short():
    source = (PACKAGE / "recipes" / "grpo.py").read_text(encoding="utf-8")
    loop = source[source.index("def run_grpo("):source.index("\ndef ", source.index("def run_grpo(") + 1)]
    assert re.findall(r"^\s*(?:for\s+)?\w+\s*,\s*[\w.]+[^=\n]*(?:=|\bin\b)", loop, re.MULTILINE) == []
    for path in sorted((PACKAGE / "recipes").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef):
                assert node.end_lineno - node.lineno + 1 <= 60, f"{path.name}: {node.name} is {node.end_lineno - node.lineno + 1} lines"


def test_the_toy_base_names_its_optimizer_steps_as_sft_does():
    group = typer.main.get_command(app)
    toy_base, sft = group.commands["toy"].commands["base"], group.commands["sft"]
    visible = {p.name: p for p in toy_base.params if not getattr(p, "hidden", False)}
    # --steps is `r1 grpo`'s GRPO steps (each --iterations x --minibatches optimizer steps); the older spelling stays, hidden.
    assert "steps" not in visible and {p.name for p in toy_base.params} >= {"steps", "max_steps"}
    sft_help = next(p.help for p in sft.params if p.name == "max_steps")
    assert sft_help.startswith("Optimizer steps") and visible["max_steps"].help.startswith("Optimizer steps")
