import subprocess
import sys

from conftest import run_cli


def test_help_lists_the_commands_that_exist(monkeypatch, capsys):
    status, out, _ = run_cli(monkeypatch, capsys, "--help")
    assert status == 0
    commands = out.split("Commands:")[1]
    assert "sft" in commands and "toy" in commands
    status, out, _ = run_cli(monkeypatch, capsys, "sft", "--help")
    assert status == 0 and "--max-length" in out and "--lora-r" in out and "--packing" in out


def test_python_dash_m_runs_the_same_cli():
    result = subprocess.run([sys.executable, "-m", "r1cli", "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("r1 ")
