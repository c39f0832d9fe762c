import json
import time

from conftest import run_cli


def report(path, pass1, fmt, k=8):
    block = {"n_prompts": 10, "pass@1": pass1, f"pass@{k}": min(1, pass1 * 2), f"maj@{k}": pass1, "format_rate": fmt,
             "language_consistency": 0.5, "mean_completion_tokens": 31.25}
    path.write_text(json.dumps({"overall": block, "by": {}}))
    return block


def test_collects_overall_blocks_and_writes_a_table(tmp_path, monkeypatch, capsys):
    base = report(tmp_path / "base.json", 0.25, 0.625)
    tuned = report(tmp_path / "tuned.json", 0.5, 1.0)
    out, md = tmp_path / "summary.json", tmp_path / "summary.md"
    since = time.time() - 90
    status, _, err = run_cli(monkeypatch, capsys, "summary", f"base={tmp_path / 'base.json'}", f"tuned={tmp_path / 'tuned.json'}",
                             "--out", str(out), "--markdown", str(md), "--since", str(since))
    assert status == 0, err
    summary = json.loads(out.read_text())
    assert summary["checkpoints"] == {"base": base, "tuned": tuned} and list(summary["checkpoints"]) == ["base", "tuned"]
    assert 89 <= summary["wall_seconds"] < 200
    table = md.read_text()
    assert "| checkpoint | pass@1 | maj@8 | pass@8 | format | language consistency | tokens |" in table
    assert "| base | 25.0 | 25.0 | 50.0 | 62.5 | 50.0 | 31.2 |" in table and "| tuned | 50.0 | 50.0 | 100.0 | 100.0 |" in table


def test_bad_arguments_are_one_clear_line(tmp_path, monkeypatch, capsys):
    status, _, err = run_cli(monkeypatch, capsys, "summary", "base.json", "--out", str(tmp_path / "s.json"))
    assert status == 2 and "expected NAME=REPORT.json" in err
    (tmp_path / "x.json").write_text('{"pass@1": 1}')
    status, _, err = run_cli(monkeypatch, capsys, "summary", f"x={tmp_path / 'x.json'}", "--out", str(tmp_path / "s.json"))
    assert status == 2 and "not an `r1 eval` report" in err
