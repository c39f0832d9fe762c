"""The one stderr console every command logs and draws progress bars on; stdout stays for data."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# Logs piped to a file keep whole lines: rich would otherwise assume 80 columns and cut them.
# emoji=False: ":-1:" in "a.jsonl:-1:" is a position, not a thumbs-down.
console = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False, width=None if sys.stderr.isatty() else 160)


def log(message: str) -> None:
    console.print(message, markup=False)


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/yellow] {escape(message)}")


def error(message: str) -> None:
    console.print(f"[bold red]error:[/bold red] {escape(message)}")


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        transient=False,
    )


def format_status(metrics: dict, keys: tuple[str, ...]) -> str:
    parts = []
    for key in keys:
        value = metrics.get(key)
        if isinstance(value, float):
            parts.append(f"{key} {value:.0f}" if abs(value) >= 1000 else f"{key} {value:.4g}")
        elif value is not None:
            parts.append(f"{key} {value}")
    return "  ".join(parts)
