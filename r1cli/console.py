"""The one stderr console every command logs and draws progress bars on; stdout stays for data."""

from __future__ import annotations

import os
import sys
import time

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


# Under torchrun, the rank of this process when it is not rank 0: its logs, warnings and progress
# are rank 0's too, so only rank 0 prints them; an error is its own, and says which rank it is.
_quiet_rank: int | None = int(os.environ.get("RANK", "0")) or None if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None
# A rank other than 0 waits this long before it says its error: when every rank meets the same
# bad input, rank 0's line is the one shown (torchrun stops the other ranks once one has failed).
RANK_ERROR_DELAY_SECONDS = 3.0


def silence(rank: int) -> None:
    global _quiet_rank
    _quiet_rank = rank if rank else None


def log(message: str) -> None:
    if _quiet_rank is None:
        console.print(message, markup=False)


def warn(message: str) -> None:
    if _quiet_rank is None:
        console.print(f"[yellow]warning:[/yellow] {escape(message)}")


def error(message: str) -> None:
    where = "" if _quiet_rank is None else f"(rank {_quiet_rank}) "
    if _quiet_rank is not None:
        time.sleep(RANK_ERROR_DELAY_SECONDS)
    console.print(f"[bold red]error:[/bold red] {where}{escape(message)}")


def progress_bar():
    """A live bar on a terminal; elsewhere (make, nohup, CI, a cluster job's log) a plain line every
    R1_PROGRESS_SECONDS (30) seconds and one at the end, where a live bar would show nothing until then."""
    if not console.is_terminal or _quiet_rank is not None:
        return PlainProgress(float(os.environ.get("R1_PROGRESS_SECONDS", "30")))
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


class PlainProgress:
    """The part of rich's Progress the recipes use, as plain log lines:
    `grpo 12/150 (8%)  elapsed 0:01:02  eta 0:11:30  reward 0.41 ...`."""

    def __init__(self, every_seconds: float):
        self.every = every_seconds
        self.tasks: list[dict] = []

    def __enter__(self):
        return self

    def __exit__(self, *_):
        for task in self.tasks:
            self._line(task)

    def add_task(self, description: str, total: int, completed: int = 0, status: str = "") -> int:
        now = time.monotonic()
        self.tasks.append({"description": description, "total": total, "completed": completed, "status": status,
                           "started": now, "first": completed, "printed": now})
        return len(self.tasks) - 1

    def update(self, task_id: int, completed: int | None = None, advance: int | None = None, status: str | None = None) -> None:
        task = self.tasks[task_id]
        if completed is not None:
            task["completed"] = completed
        if advance is not None:
            task["completed"] += advance
        if status is not None:
            task["status"] = status
        now = time.monotonic()
        if now - task["printed"] >= self.every and task["completed"] < task["total"]:
            task["printed"] = now
            self._line(task)

    def _line(self, task: dict) -> None:
        elapsed = time.monotonic() - task["started"]
        done, total = task["completed"], task["total"]
        rate = (done - task["first"]) / elapsed if elapsed > 0 else 0.0
        eta = _clock((total - done) / rate) if rate > 0 else "?"
        share = f" ({100 * done / total:.0f}%)" if total else ""
        log(f"{task['description']} {done}/{total}{share}  elapsed {_clock(elapsed)}  eta {eta}  {task['status']}".rstrip())


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def format_status(metrics: dict, keys: tuple[str, ...]) -> str:
    parts = []
    for key in keys:
        value = metrics.get(key)
        if isinstance(value, float):
            parts.append(f"{key} {value:.0f}" if abs(value) >= 1000 else f"{key} {value:.4g}")
        elif value is not None:
            parts.append(f"{key} {value}")
    return "  ".join(parts)
