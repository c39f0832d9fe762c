"""The one stderr console every command logs and draws progress bars on; stdout stays for data."""

from __future__ import annotations

import sys

from rich.console import Console

# Logs piped to a file keep whole lines: rich would otherwise assume 80 columns and cut them.
console = Console(stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else 160)


def log(message: str) -> None:
    console.print(message)


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/yellow] {message}")
