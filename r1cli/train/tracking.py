"""`--report-to`: a training run's metrics lines also sent to TensorBoard, Weights & Biases or
Trackio, with the run's options as the tracker's config. `metrics.jsonl` is always written; a
tracker gets the same lines (their numbers; `step` is the x axis), and nothing else.

Each tracker is an optional extra, imported only when chosen. A resumed run continues its
tracker's run: TensorBoard purges the events past the resumed step (the steps a kill lost are
logged again), W&B and Trackio resume the run whose id OUT/tracking.json keeps.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import sys
import uuid
from pathlib import Path

from r1cli.data.records import read_json_file, write_json
from r1cli.errors import UserError

REPORTERS = ("none", "tensorboard", "wandb", "trackio")
TENSORBOARD_DIR = "tensorboard"  # OUT/tensorboard/: `tensorboard --logdir OUT`
TRACKING_FILE = "tracking.json"  # the W&B / Trackio run id, so a resumed run continues that run
DEFAULT_PROJECT = "r1"


def check_report_to(name: str) -> None:
    """One line, before anything runs, for an unknown tracker or one that is not installed."""
    if name not in REPORTERS:
        raise UserError(f"--report-to {name!r} is not one of: {', '.join(REPORTERS)}")
    if name != "none" and importlib.util.find_spec(name) is None:
        raise UserError(f"--report-to {name} needs the {name} package, which is not installed: pip install {name} "
                        f"(or, in r1's checkout: pip install -e '.[{name}]')")


def scalars(line: dict) -> dict[str, float]:
    """The numbers of a metrics line (not its step, not flags, not a missing value)."""
    return {key: value for key, value in line.items()
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)}


def run_id(run_dir: Path) -> str:
    """This run's tracker id: made once, kept in OUT/tracking.json (removed with --overwrite)."""
    path = run_dir / TRACKING_FILE
    if path.is_file():
        return read_json_file(path)["id"]
    identifier = uuid.uuid4().hex[:12]
    write_json(path, {"id": identifier})
    return identifier


class TensorBoardTracker:
    def __init__(self, run_dir: Path, options: dict, resume_step: int):
        from torch.utils.tensorboard import SummaryWriter

        # Events at steps past the resumed one are from steps a kill lost: hidden, as metrics.jsonl drops them.
        self.writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR), purge_step=resume_step + 1)
        self.writer.add_text("options", "```json\n" + json.dumps(options, indent=2, sort_keys=True, default=str) + "\n```",
                             global_step=resume_step)

    def log(self, line: dict) -> None:
        for key, value in scalars(line).items():
            self.writer.add_scalar(key, value, global_step=line["step"])
        self.writer.flush()  # as metrics.jsonl: a killed run keeps every line it wrote

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    def __init__(self, run_dir: Path, options: dict, resume_step: int):
        import wandb

        # W&B's own settings (WANDB_MODE=offline, WANDB_ENTITY, ...) come from its environment variables.
        with contextlib.redirect_stdout(sys.stderr):  # r1 keeps stdout for data
            self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", DEFAULT_PROJECT), name=run_dir.name, id=run_id(run_dir),
                                  resume="allow", dir=str(run_dir), config=options)

    def log(self, line: dict) -> None:
        self.run.log(scalars(line), step=line["step"])

    def close(self) -> None:
        with contextlib.redirect_stdout(sys.stderr):
            self.run.finish()


class TrackioTracker:
    def __init__(self, run_dir: Path, options: dict, resume_step: int):
        import trackio

        with contextlib.redirect_stdout(sys.stderr):  # trackio prints where it logs to
            self.run = trackio.init(project=os.environ.get("TRACKIO_PROJECT", DEFAULT_PROJECT), name=f"{run_dir.name}-{run_id(run_dir)}",
                                    config=options, resume="allow")

    def log(self, line: dict) -> None:
        self.run.log(scalars(line), step=line["step"])

    def close(self) -> None:
        with contextlib.redirect_stdout(sys.stderr):
            self.run.finish()


TRACKERS = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker, "trackio": TrackioTracker}


def open_tracker(name: str, run_dir: Path, options: dict, resume_step: int):
    """The tracker NAME for the run in RUN_DIR (None for none), given the run's options as its config."""
    check_report_to(name)
    if name == "none":
        return None
    return TRACKERS[name](run_dir, json.loads(json.dumps(options, default=str)), resume_step)
