"""`r1 summary`: the `overall` blocks of several `r1 eval` reports as one JSON file and one table."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from r1cli.console import log
from r1cli.errors import UserError
from r1cli.records import read_json_file, write_json, write_text
from r1cli.runs import check_file_output

COLUMNS = [  # (report key, column title, as percent)
    ("pass@1", "pass@1", True),
    ("maj@k", "maj@k", True),
    ("pass@k", "pass@k", True),
    ("format_rate", "format", True),
    ("language_consistency", "language consistency", True),
    ("mean_completion_tokens", "tokens", False),
]


def summary(
    reports: Annotated[list[str], typer.Argument(help="NAME=REPORT.json (from `r1 eval --out`), one row each, in order.")],
    out: Annotated[Path, typer.Option("--out", help="Summary JSON: {wall_seconds, checkpoints: {NAME: overall block}}.")],
    markdown: Annotated[Path | None, typer.Option(help="Also write the table as Markdown to this file.")] = None,
    since: Annotated[float | None, typer.Option(help="Start of the run (Unix seconds): records wall_seconds = now - SINCE. [default: no wall_seconds]")] = None,
) -> None:
    """Collect each REPORT's overall block under its NAME; print and optionally write the table."""
    checkpoints = {}
    check_file_output(str(out), [spec.partition("=")[2] for spec in reports])
    if markdown is not None:
        check_file_output(str(markdown), [str(out), *(spec.partition("=")[2] for spec in reports)])
    for spec in reports:
        name, separator, path = spec.partition("=")
        if not separator or not name or not path:
            raise UserError(f"{spec!r}: expected NAME=REPORT.json, e.g. base=runs/demo/eval/base.json")
        report = read_json_file(Path(path))
        if not isinstance(report, dict) or not isinstance(report.get("overall"), dict):
            raise UserError(f"{path}: not an `r1 eval` report (no 'overall' block)")
        checkpoints[name] = report["overall"]
    result = {"wall_seconds": None if since is None else round(time.time() - since, 1), "checkpoints": checkpoints}
    table = markdown_table(checkpoints)  # before anything is written: a report it cannot read writes nothing
    write_json(out, result)
    if markdown:
        wall = "" if since is None else f"\n\nWall time: {result['wall_seconds'] / 60:.1f} minutes.\n"
        write_text(markdown, table + wall)
    log(table)
    log(f"wrote {out}" + (f" and {markdown}" if markdown else ""))


def markdown_table(checkpoints: dict[str, dict]) -> str:
    """One row per checkpoint; k is the largest k the reports share (pass@k, maj@k)."""
    ks = [max((int(key[5:]) for key in block if key.startswith("pass@")), default=1) for block in checkpoints.values()]
    k = min(ks, default=1)
    header = ["checkpoint"] + [title.replace("@k", f"@{k}") for _, title, _ in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, block in checkpoints.items():
        cells = [name]
        for key, _, percent in COLUMNS:
            value = block.get(key.replace("@k", f"@{k}"))
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                cells.append("–")
            else:
                cells.append(f"{100 * value:.1f}" if percent else f"{value:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n(percentages; tokens = mean completion tokens)"
