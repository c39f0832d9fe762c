"""`metrics.jsonl`: one line per optimizer step, append-only, trimmed back to the resumed step;
with `--report-to`, each line also goes to the tracker (r1cli/train/tracking.py)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from r1cli.data.records import dumps
from r1cli.train.tracking import open_tracker


class MetricsLog:
    """Append-only `metrics.jsonl`, one line per step; on resume, lines past the resumed step go."""

    def __init__(self, path: Path, resume_step: int = 0, *, report_to: str = "none", options: dict | None = None):
        """REPORT_TO names a tracker that gets every line too, with OPTIONS (the run's, as r1.json holds them) as its config."""
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line).get("step", 0) <= resume_step:
                        kept.append(line)
                except json.JSONDecodeError:
                    break  # a line cut by a kill: everything after it is from the lost steps
        path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        self.handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.tracker = open_tracker(report_to, path.parent, options or {}, resume_step)

    def write(self, metrics: dict) -> None:
        try:
            self.handle.write(dumps(metrics) + "\n")
            self.handle.flush()
        except OSError as error:  # a full disk: say which file
            error.filename = error.filename or str(self.path)
            raise
        if self.tracker is not None:
            self.tracker.log(metrics)

    def close(self) -> None:
        self.handle.close()
        if self.tracker is not None:
            self.tracker.close()


class NoMetricsLog:
    """What ranks other than 0 write under torchrun: nothing (rank 0 writes every line)."""

    def write(self, metrics: dict) -> None:
        pass

    def close(self) -> None:
        pass


def peak_memory(device: torch.device) -> dict:
    """{"peak_memory_gib": the most memory this step's tensors held on the GPU} on CUDA, the
    highest of any process under torchrun (every rank calls it at the same point); {} elsewhere.
    The peak is reset, so each line reports its own step."""
    if device.type != "cuda":
        return {}
    peak = torch.tensor(float(torch.cuda.max_memory_allocated(device)), device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(peak, op=torch.distributed.ReduceOp.MAX)
    torch.cuda.reset_peak_memory_stats(device)
    return {"peak_memory_gib": round(peak.item() / 2**30, 2)}
