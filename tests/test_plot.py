from conftest import run_cli, write_jsonl

from r1cli.report.plot import moving_average


def test_writes_a_png_with_a_panel_per_metric(tmp_path, monkeypatch, capsys):
    a = write_jsonl(tmp_path / "a.jsonl", [{"step": s, "reward": s / 10, "kl": 0.01 * s} for s in range(1, 30)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"step": s, "reward": 1 - s / 10, "completion_length": 40 + s} for s in range(1, 30)])
    out = tmp_path / "plots" / "curves.png"
    status, _, err = run_cli(monkeypatch, capsys, "plot", str(a), str(b), "--out", str(out), "--label", "zero", "--label", "r1")
    assert status == 0, err
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    assert "4 panels, 2 runs" in err and not list(out.parent.glob(".*tmp*"))


def test_label_count_must_match_the_files(tmp_path, monkeypatch, capsys):
    a = write_jsonl(tmp_path / "a.jsonl", [{"step": 1, "reward": 0.5}])
    status, _, err = run_cli(monkeypatch, capsys, "plot", str(a), "--out", str(tmp_path / "c.png"), "--label", "x", "--label", "y")
    assert status == 2 and "--label given 2 times for 1 metrics files" in err


def test_a_bad_metrics_line_names_file_and_line(tmp_path, monkeypatch, capsys):
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1, "reward": 0.5}\n{"step": 2, "rew\n')
    status, _, err = run_cli(monkeypatch, capsys, "plot", str(path), "--out", str(tmp_path / "c.png"))
    assert status == 2 and f"{path}:2" in err


def test_moving_average_is_a_trailing_mean():
    assert moving_average([1, 2, 3, 4, 5], 2) == [1, 1.5, 2.5, 3.5, 4.5]
    assert moving_average([4.0, 0.0], 1) == [4.0, 0.0]


def test_default_panels_follow_what_the_runs_logged():
    from r1cli.report.plot import default_metrics

    grpo = {"reward", "rewards/accuracy", "rewards/format", "accuracy", "kl", "completion_length", "loss"}
    assert default_metrics(grpo) == ["reward", "rewards/accuracy", "rewards/format", "kl", "completion_length"]
    assert default_metrics({"loss", "lr", "grad_norm"}) == ["loss", "lr", "grad_norm"]
    assert default_metrics({"loss", "lr", "grad_norm", "eval_loss"})[-1] == "eval_loss"
    assert default_metrics({"reward", "kl"}) == ["reward", "accuracy", "kl", "completion_length"]


def test_an_sft_run_plots_loss_lr_and_grad_norm(tmp_path, monkeypatch, capsys):
    run = write_jsonl(tmp_path / "m.jsonl", [{"step": s, "loss": 3 / s, "lr": 1e-3, "grad_norm": 1.0} for s in range(1, 20)])
    status, _, err = run_cli(monkeypatch, capsys, "plot", str(run), "--out", str(tmp_path / "sft.png"))
    assert status == 0 and "3 panels, 1 runs" in err, err
