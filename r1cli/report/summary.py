"""`r1 summary`: the `overall` blocks of several `r1 eval` reports as one JSON file and one table."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from r1cli.console import log
from r1cli.data.outputs import check_file_output
from r1cli.data.records import read_json_file, write_json, write_text
from r1cli.errors import UserError

COLUMNS = [  # (report key, column title, as percent)
    ("pass@1", "pass@1", True),
    ("maj@k", "maj@k", True),
    ("pass@k", "pass@k", True),
    ("format_rate", "format", True),
    ("language_consistency", "language consistency", True),
    ("mean_completion_tokens", "tokens", False),
]


@dataclass(frozen=True)
class SummaryJob:
    reports: list[str]
    out: Path
    markdown: Path | None = None
    since: float | None = None


def write_summary(job: SummaryJob) -> None:
    """Collect each REPORT's overall block under its NAME; print and optionally write the table."""
    reports, out, markdown, since = job.reports, job.out, job.markdown, job.since
    checkpoints = {}
    inputs = [spec.partition("=")[2] for spec in reports]
    check_file_output(str(out), inputs)
    if markdown is not None:
        check_markdown(markdown, out, inputs)
    if since is not None and not (math.isfinite(since) and since <= time.time()):
        raise UserError(f"--since {since}: must be a moment in the past, in Unix seconds (e.g. $(date +%s) at the start)")
    for spec in reports:
        name, separator, path = spec.partition("=")
        if not separator or not name or not path:
            raise UserError(f"{spec!r}: expected NAME=REPORT.json, e.g. base=runs/demo/eval/base.json")
        if name in checkpoints:
            raise UserError(f"{spec!r}: the name {name!r} is given twice (a row each needs its own name)")
        report = read_json_file(Path(path))
        if not isinstance(report, dict) or not isinstance(report.get("overall"), dict):
            raise UserError(f"{path}: not an `r1 eval` report (no 'overall' block)")
        checkpoints[name] = check_overall(report["overall"], path)
    result = {"wall_seconds": None if since is None else round(time.time() - since, 1), "checkpoints": checkpoints}
    table = markdown_table(checkpoints)  # before anything is written: a report it cannot read writes nothing
    write_json(out, result)
    if markdown:
        wall = "" if since is None else f"\n\nWall time: {result['wall_seconds'] / 60:.1f} minutes.\n"
        write_text(markdown, table + wall)
    log(table)
    log(f"wrote {out}" + (f" and {markdown}" if markdown else ""))


def check_markdown(markdown: Path, out: Path, inputs: list[str]) -> None:
    """--markdown is a file of its own: not a directory, not a report being read, not --out."""
    if markdown.is_dir():
        raise UserError(f"--markdown {markdown}: is a directory; give a file name")
    for source in inputs:
        if _same_file(markdown, Path(source)):
            raise UserError(f"--markdown {markdown}: is also an input ({source}); writing it would destroy what is being read")
    if _same_file(markdown, out):
        raise UserError(f"--markdown {markdown}: is the --out file too; give them different names")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_overall(block: dict, path: str) -> dict:
    """The metrics the table reads are numbers (or null, for a metric with nothing to average),
    and every pass@K / maj@K names an integer K: checked before anything is written."""
    for key, value in block.items():
        metric, at, k = key.partition("@")
        if at and metric in ("pass", "maj") and not k.isdigit():
            raise UserError(f"{path}: overall.{key}: not pass@K or maj@K with K a number")
        if (at or key in {column for column, _, _ in COLUMNS}) and value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UserError(f"{path}: overall.{key} must be a number, got {json.dumps(value)[:40]}")
    return block


def markdown_table(checkpoints: dict[str, dict]) -> str:
    """One row per checkpoint; k is the largest k the reports share (pass@k, maj@k)."""
    header, rows = table_cells(checkpoints)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n\n" + TABLE_NOTE


TABLE_NOTE = "(percentages; tokens = mean completion tokens)"


def table_cells(checkpoints: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    """The table's header and rows as text (what summary.md and `r1 report` show alike)."""
    ks = [max((int(key[5:]) for key in block if key.startswith("pass@")), default=1) for block in checkpoints.values()]
    k = min(ks, default=1)
    header = ["checkpoint"] + [title.replace("@k", f"@{k}") for _, title, _ in COLUMNS]
    rows = []
    for name, block in checkpoints.items():
        cells = [name]
        for key, _, percent in COLUMNS:
            value = block.get(key.replace("@k", f"@{k}"))
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                cells.append("–")
            else:
                cells.append(f"{100 * value:.1f}" if percent else f"{value:.1f}")
        rows.append(cells)
    return header, rows
