"""Progress where stderr is not a terminal: plain lines as the run goes, not only at its end."""

from __future__ import annotations

import json

from conftest import run_cli, write_jsonl

from r1cli.console import PlainProgress, progress_bar


def test_off_a_terminal_progress_is_plain_lines_every_n_seconds(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    assert isinstance(progress_bar(), PlainProgress)  # pytest's stderr is not a terminal
    monkeypatch.setenv("R1_PROGRESS_SECONDS", "0")
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"{n} plus 1?", "answer": str(n + 1)} for n in range(4)])
    status, _, err = run_cli(monkeypatch, capsys, "grpo", str(tiny_checkpoint), str(prompts), "--out", str(tmp_path / "g"), "--reward", "format",
                             "--steps", "3", "--prompts-per-step", "2", "--num-generations", "2", "--max-new-tokens", "4", "--device", "cpu",
                             "--save-every", "0", "--log-samples-every", "0")
    assert status == 0, err
    lines = [line for line in err.splitlines() if line.startswith("grpo ") and "elapsed" in line]
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"]  # one per step (every 0 s), then the end
    assert "(33%)" in lines[0] and "eta 0:00:" in lines[0] and "reward" in lines[0]
    assert json.loads((tmp_path / "g" / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 3


def test_plain_progress_waits_its_interval(capsys):
    bar = PlainProgress(3600)
    with bar:
        task = bar.add_task("sample", total=10, status="")
        for _ in range(10):
            bar.update(task, advance=1, status="5 tokens/s")
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [lines[-1]] and lines[0].startswith("sample 10/10 (100%)") and lines[0].endswith("5 tokens/s")
