"""`r1 plot`: training curves of one or more runs (their metrics.jsonl) as one PNG."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from r1cli.console import log
from r1cli.data.outputs import check_file_output
from r1cli.data.records import atomic_path, read_all
from r1cli.errors import UserError

DEFAULT_METRICS = ["reward", "accuracy", "kl", "completion_length"]


@dataclass(frozen=True)
class PlotJob:
    metrics: list[Path]
    out: Path
    metric: list[str] | None = None
    label: list[str] | None = None
    smooth: int = 10
    title: str | None = None


def draw_curves(job: PlotJob) -> None:
    """Plot each METRIC per step for every run, one panel per metric, one line per run."""
    metrics, out, metric, label, smooth, title = job.metrics, job.out, job.metric, job.label, job.smooth, job.title
    check_file_output(str(out), [str(path) for path in metrics])
    labels = label or [path.parent.name or str(path) for path in metrics]
    if len(labels) != len(metrics):
        raise UserError(f"--label given {len(labels)} times for {len(metrics)} metrics files")
    runs = [(name, read_all([str(path)])) for name, path in zip(labels, metrics)]
    logged = logged_metrics([records for _, records in runs])
    files = ", ".join(str(path) for path in metrics)
    names = metric or default_metrics(logged)
    if metric:
        for name in names:
            if name not in logged:
                raise UserError(f"--metric {name}: not logged in {files}; logged: {', '.join(sorted(logged)) or 'nothing'}")
    elif not logged & set(names):
        raise UserError(f"{files}: none of the default metrics ({', '.join(names)}) is logged; choose with --metric "
                        f"(logged: {', '.join(sorted(logged)) or 'nothing'})")

    png = curves_png(runs, names, smooth, title)
    with atomic_path(out) as temporary:
        temporary.write_bytes(png)
    log(f"wrote {out} ({len(names)} panels, {len(runs)} runs)")


def curves_png(runs: list[tuple[str, list]], names: list[str], smooth: int, title: str | None = None, dpi: int = 110) -> bytes:
    """The curves as PNG bytes: one panel per metric NAME, one line per (label, metrics records) run."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    columns = min(2, len(names))
    rows = -(-len(names) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6 * columns, 3.6 * rows), squeeze=False)
    for axis, name in zip(axes.flat, names):
        drawn = False
        for index, (run, records) in enumerate(runs):
            points = [(r["step"], r[name]) for r in records if _is_number(r.get(name)) and "step" in r]
            if not points:
                continue
            steps, values = zip(*points)
            color = f"C{index}"
            if smooth > 1:
                axis.plot(steps, values, color=color, alpha=0.25, linewidth=0.8)
            axis.plot(steps, moving_average(list(values), smooth), color=color, label=run, linewidth=1.6)
            drawn = True
        axis.set_title(name)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        if drawn:
            axis.legend(fontsize=8)
        else:
            axis.text(0.5, 0.5, "not logged", ha="center", va="center", transform=axis.transAxes, color="gray")
    for axis in list(axes.flat)[len(names):]:
        axis.set_visible(False)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=dpi, format="png")
    plt.close(figure)
    return buffer.getvalue()


def default_metrics(logged: set[str]) -> list[str]:
    """GRPO runs: the total reward, then one panel per reward (a total of two rewards and one of
    four cannot be compared), KL, length; SFT runs: loss, learning rate, gradient norm."""
    if "reward" not in logged and "loss" in logged:
        return ["loss", "lr", "grad_norm"] + (["eval_loss"] if "eval_loss" in logged else [])
    per_reward = sorted(name for name in logged if name.startswith("rewards/"))
    return ["reward", *per_reward, "kl", "completion_length"] if per_reward else DEFAULT_METRICS


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def logged_metrics(runs: list[list]) -> set[str]:
    """The metrics with a number at some step in any run; a record whose step is not a number is an error."""
    names = set()
    for records in runs:
        for record in records:
            if "step" not in record:
                continue
            if not _is_number(record["step"]):
                raise UserError(f"{record.where}: field 'step' must be a number, got {type(record['step']).__name__}")
            names.update(key for key, value in record.items() if key != "step" and _is_number(value))
    return names


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over up to WINDOW values, so early steps are not delayed by padding."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out
