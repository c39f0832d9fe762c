"""`make demo` end to end (about 17 minutes on 2 cores): what its summary must show."""

import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_make_demo_tells_the_r1_story(tmp_path):
    run_dir = tmp_path / "demo"
    subprocess.run(["make", "-C", str(REPO), "demo", f"RUN_DIR={run_dir}"], check=True, timeout=1800)
    summary = json.loads((run_dir / "summary.json").read_text())
    board = summary["checkpoints"]
    assert {"base", "r1-zero", "r1", "student-base", "student-distill"} <= set(board)
    assert board["r1-zero"]["pass@1"] >= board["base"]["pass@1"] + 0.25
    # R1-Zero's own format reward can already reach 100%; R1 cannot be above a perfect score.
    assert board["r1"]["format_rate"] >= 0.95
    assert board["r1"]["format_rate"] > board["r1-zero"]["format_rate"] or board["r1"]["format_rate"] == 1.0
    assert board["r1"]["language_consistency"] >= 0.95 and board["r1"]["language_consistency"] > board["r1-zero"]["language_consistency"]
    assert board["student-distill"]["pass@1"] >= board["student-base"]["pass@1"] + 0.20
    assert 0 < summary["wall_seconds"] <= 15 * 60
    assert "| r1 |" in (run_dir / "summary.md").read_text()
    assert (run_dir / "curves.png").read_bytes().startswith(b"\x89PNG")
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    for run in ("base", "cold-start", "r1-zero", "r1-reasoning", "r1-sft", "r1", "student-base", "student-distill"):
        assert f'<section class="stage" id="run-{run}"' in page
    assert page.count('<details class="step"') >= 3 and "<script" not in page
