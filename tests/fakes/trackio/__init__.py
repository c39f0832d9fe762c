"""A stand-in for the part of Trackio's API (trackio 0.4x) that r1's `--report-to trackio` uses:
`trackio.init(project, name=, config=, resume=)` returning a run with `log(metrics, step=)` and
`finish()`.

Tests load it in place of `trackio` for one test at a time (monkeypatched into sys.modules); it
is not on sys.path. Like Trackio it prints where it logs to on stdout (r1 must keep that off its
stdout), checks `resume` ('must' needs an existing run of that name, 'never' renames a taken
one), keeps runs by project and name, and records every call in CALLS.
"""

from __future__ import annotations

import copy
from typing import Any

__version__ = "0.43.0"
CALLS: list[dict[str, Any]] = []
RUNS: dict[str, set[str]] = {}  # project -> run names: local storage, as Trackio's SQLite database


class Run:
    def __init__(self, project: str, name: str, config: dict | None):
        self.project, self.name, self.config = project, name, copy.deepcopy(config or {})

    def log(self, metrics: dict, step: int | None = None) -> None:
        CALLS.append({"call": "log", "name": self.name, "step": step, "metrics": copy.deepcopy(metrics)})

    def finish(self) -> None:
        CALLS.append({"call": "finish", "name": self.name})


def init(project: str, name: str | None = None, group: str | None = None, space_id: str | None = None, dataset_id: str | None = None,
         config: dict | None = None, resume: str = "never", settings: Any = None, **_ignored) -> Run:
    runs = RUNS.setdefault(project, set())
    if resume not in ("must", "allow", "never"):
        raise ValueError("resume must be one of: 'must', 'allow', or 'never'")
    if resume == "must" and name not in runs:
        raise ValueError(f"Run '{name}' does not exist in project '{project}'")
    resumed = name in runs and resume != "never"
    if name is None or (name in runs and resume == "never"):
        name = f"run-{len(runs)}"
    runs.add(name)
    print(f"* Trackio project initialized: {project}")
    CALLS.append({"call": "init", "project": project, "name": name, "config": copy.deepcopy(config), "resume": resume, "resumed": resumed})
    return Run(project, name, config)
