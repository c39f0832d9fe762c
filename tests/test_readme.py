"""The README's commands, run as a reader would: each ```bash block in order, from a checkout, on
the toy world (30 minutes on 2 busy cores). A block preceded by `<!-- not run by
tests/test_readme.py: WHY -->` needs what a test does not have (a GPU, the hub, a real model) or is
run elsewhere (the demo: tests/test_demo.py)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(?:<!-- not run by tests/test_readme\.py: (?P<why>[^\n]*?) -->\n)?```bash\n(?P<code>.*?)\n```", re.S)


def blocks() -> list[tuple[int, str | None, str]]:
    """(line, why it is not run or None, code) of each bash block of README.md, in order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return [(text[: m.start()].count("\n") + 1, m.group("why"), m.group("code")) for m in BLOCK.finditer(text)]


def demo_world_commands() -> list[str]:
    """The toy world's commands of the demo ("What ran": its data and two bases), which the examples read."""
    demo = next(code for _, why, code in blocks() if code.lstrip().startswith("# The toy world"))
    return [line.split("  #")[0] for line in demo.splitlines() if line.startswith("r1 toy ")]


def test_every_block_is_run_or_says_why_not():
    found = blocks()
    assert len(found) >= 10
    skipped = [(line, why) for line, why, _ in found if why is not None]
    assert all(why.strip() for _, why in skipped) and len(skipped) < len(found) / 2
    assert len(demo_world_commands()) == 3


@pytest.mark.slow
def test_the_readme_commands_run_in_order(tmp_path):
    # A checkout as the README assumes one: r1 on PATH, its files at hand, ../shared/data beside it.
    checkout = tmp_path / "r1"
    checkout.mkdir()
    for name in ("r1cli", "recipes", "pipelines", "Makefile"):
        (checkout / name).symlink_to(ROOT / name)
    if SHARED_DATA.is_dir():
        (tmp_path / "shared").mkdir()
        (tmp_path / "shared" / "data").symlink_to(SHARED_DATA)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "r1").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m r1cli "$@"\n')
    (bin_dir / "r1").chmod(0o755)
    environment = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1",
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}

    def run(line: int, code: str) -> None:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=checkout, env=environment, capture_output=True, text=True,
                              timeout=3600)
        assert done.returncode == 0, f"README.md:{line}: exit {done.returncode}\n{code}\n{done.stderr[-3000:]}"
        for out in re.findall(r"--out (\S+)", code):  # every output a block names is there afterwards
            assert out == "-" or (checkout / out).exists(), f"README.md:{line}: {out} was not written"

    # The demo's files the examples read: its toy world and bases as the demo makes them, and the
    # base standing in for the demo's R1 model (a teacher whose correct traces distillation keeps).
    run(0, "\n".join(demo_world_commands()))
    shutil.copytree(checkout / "runs" / "demo" / "base", checkout / "runs" / "demo" / "r1")
    for line, why, code in blocks():
        if why is None:
            run(line, code)
