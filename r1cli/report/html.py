"""`r1 report`: one self-contained HTML page for a pipeline's runs.

The page holds the eval table (as `r1 summary` writes it), then one section per stage run in
lineage order: its command line and options, its curves (drawn by `r1 plot`'s code, embedded as
PNG data), and for GRPO runs the completions `samples.jsonl` logged, grouped by step in step
order, so a reader sees the completions change as training goes on.

It loads nothing: no scripts, no stylesheets, no fonts or images from elsewhere, and a content
security policy that forbids them, so it reads the same offline, mailed or archived. Every piece of
text (completions are model output, names and options are the user's) is HTML-escaped by the
template engine, never pasted in.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from r1cli.console import log
from r1cli.data.outputs import check_file_output
from r1cli.data.records import Record, parse_line, write_text
from r1cli.errors import UserError
from r1cli.report.plot import curves_png, default_metrics, logged_metrics
from r1cli.report.summary import TABLE_NOTE, check_overall, table_cells

LINEAGE, METRICS, SAMPLES = "r1.json", "metrics.jsonl", "samples.jsonl"
TEMPLATES = Path(__file__).parent / "templates"
CURVE_DPI = 80  # a page holds one figure per stage: smaller than `r1 plot`'s PNG, still legible
STEP_METRICS = ("reward", "accuracy", "format", "completion_length", "kl")  # shown beside each step's samples


@dataclass(frozen=True)
class ReportJob:
    run_dirs: list[Path]
    out: Path
    smooth: int = 10


@dataclass
class Sample:
    id: str
    prompt: str
    completion: str
    rewards: list[tuple[str, str]]  # (name, value as shown)
    reward: str


@dataclass
class StepSamples:
    step: int
    samples: list[Sample]
    metrics: list[tuple[str, str]]  # the step's line of metrics.jsonl, a few of its values


@dataclass(eq=False)  # a stage is itself: compared by identity
class Stage:
    name: str
    path: Path
    lineage: dict  # r1.json; for an unfinished run, its latest checkpoint's (or {})
    finished: bool
    metrics: list[Record] = field(default_factory=list)
    anchor: str = ""
    parent: tuple[str, str] = ("", "")  # (text, anchor of the parent's section or "")
    curves: str = ""  # PNG as base64
    steps: list[StepSamples] = field(default_factory=list)
    eval_row: tuple[list[str], list[str]] | None = None  # (header, row) of the checkpoint this run made
    root: Path | None = None  # the RUN_DIR it was found in

    @property
    def command(self) -> str:
        return str(self.lineage.get("command") or "?")


@dataclass
class EvalTable:
    source: str
    header: list[str]
    rows: list[list[str]]
    wall_minutes: str | None
    root: Path | None = None  # the RUN_DIR it was found in: its rows name that pipeline's runs


@dataclass
class Discovered:
    stages: list[Stage]
    tables: list[EvalTable]
    read: list[Path]  # every file the page is made from


def write_report(job: ReportJob) -> None:
    """Write one HTML page: the eval table, then each stage run's options, curves and logged samples."""
    check_file_output(str(job.out), [str(path) for path in job.run_dirs])
    found = discover(job.run_dirs)
    check_file_output(str(job.out), [str(path) for path in found.read])
    order_by_lineage(found.stages)
    rows = {(table.root, row[0]): (table.header, row) for table in found.tables for row in table.rows}
    for stage in found.stages:
        stage.eval_row = rows.get((stage.root, stage.path.name))
        stage.curves = stage_curves(stage, job.smooth)
        stage.steps = logged_samples(stage)
    page = render(title=", ".join(str(path) for path in job.run_dirs), stages=found.stages, tables=found.tables, note=TABLE_NOTE)
    write_text(job.out, page)
    samples = sum(len(step.samples) for stage in found.stages for step in stage.steps)
    log(f"wrote {job.out} ({len(found.stages)} runs, {len(found.tables)} eval tables, {samples} logged samples)")


# ---------------------------------------------------------------- finding the runs


def discover(run_dirs: list[Path]) -> Discovered:
    """Every stage run under RUN_DIRS (a directory with r1.json, or an unfinished one with
    metrics.jsonl), and the eval tables beside them (summary.json files, else eval reports)."""
    stages: dict[Path, Stage] = {}
    tables: list[EvalTable] = []
    read: list[Path] = []
    for root in run_dirs:
        if not root.exists():
            raise UserError(f"{root}: no such directory")
        if not root.is_dir():
            raise UserError(f"{root}: is a file; give a run directory or a pipeline's directory of runs")
        runs, candidates = walk(root)
        if not runs:
            raise UserError(f"{root}: holds no r1 run (no directory with r1.json or metrics.jsonl)")
        for path in runs:
            name = str(path.relative_to(root)) if path != root else path.name
            if len(run_dirs) > 1:  # runs of several pipelines: named with their pipeline's (or parent's) directory
                name = f"{root.name}/{name}" if path != root else f"{root.resolve().parent.name}/{name}"
            stages.setdefault(path.resolve(), load_stage(name, path, root))
        tables += eval_tables(candidates, root)
        read += candidates
    unique_anchors(list(stages.values()))
    read += [stage.path / name for stage in stages.values() for name in (LINEAGE, METRICS, SAMPLES) if (stage.path / name).is_file()]
    return Discovered(list(stages.values()), tables, read)


def walk(root: Path) -> tuple[list[Path], list[Path]]:
    """The run directories under ROOT (not looking inside a run: its subdirectories are its
    checkpoints) and the JSON files outside them that may be eval reports or summaries."""
    if is_run(root):
        return [root], []
    runs, candidates = [], []
    for directory, subdirectories, files in os.walk(root):
        here = Path(directory)
        subdirectories[:] = sorted(name for name in subdirectories if not name.startswith("."))
        if here != root and is_run(here):
            runs.append(here)
            subdirectories[:] = []
            continue
        candidates += [here / name for name in sorted(files)
                       if name.endswith(".json") and not name.endswith(".r1.json") and not name.startswith(".")]
    return runs, candidates


def is_run(directory: Path) -> bool:
    """A run: its r1.json is a lineage (an eval report may be named r1.json too: `r1 eval --out eval/r1.json`),
    or, while it runs, it has metrics.jsonl."""
    if (directory / METRICS).is_file():
        return True
    lineage = _json_or_none(directory / LINEAGE) if (directory / LINEAGE).is_file() else None
    return isinstance(lineage, dict) and "command" in lineage and "overall" not in lineage


def load_stage(name: str, path: Path, root: Path) -> Stage:
    finished = (path / LINEAGE).is_file()
    lineage = read_lineage(path / LINEAGE) if finished else latest_checkpoint_lineage(path)
    metrics = read_log(path / METRICS) if (path / METRICS).is_file() else []
    return Stage(name=name, path=path, lineage=lineage, finished=finished, metrics=metrics, root=root)


def read_lineage(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: not a readable r1.json ({type(error).__name__})") from None
    if not isinstance(value, dict):
        raise UserError(f"{path}: not an r1.json (expected a JSON object)")
    return value


def latest_checkpoint_lineage(path: Path) -> dict:
    """An unfinished run's options, from its latest intermediate checkpoint (if it saved one)."""
    checkpoints = sorted((path / "checkpoints").glob("step-*/" + LINEAGE))
    return read_lineage(checkpoints[-1]) if checkpoints else {}


def read_log(path: Path) -> list[Record]:
    """The records of an append-only log (metrics.jsonl, samples.jsonl). A last line without its
    newline is one being written (or cut by a kill) and is left out; a bad line elsewhere is an error."""
    text = path.read_bytes()
    lines = text.split(b"\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(parse_line(line, f"{path}:{number}"))
        except UserError:
            if number == len(lines) and not text.endswith(b"\n"):
                break
            raise
    return records


def eval_tables(candidates: list[Path], root: Path) -> list[EvalTable]:
    """The tables of the `r1 summary` files among CANDIDATES; without any, one of the `r1 eval` reports."""
    summaries, reports = [], {}
    for path in candidates:
        value = _json_or_none(path)
        if not isinstance(value, dict):
            continue
        if isinstance(value.get("checkpoints"), dict) and all(isinstance(b, dict) for b in value["checkpoints"].values()):
            summaries.append((path, value))
        elif isinstance(value.get("overall"), dict):
            reports[path.stem] = check_overall(value["overall"], str(path))
    tables = []
    for path, summary in summaries:
        blocks = {name: check_overall(block, f"{path}: checkpoints.{name}") for name, block in summary["checkpoints"].items()}
        wall = summary.get("wall_seconds")
        minutes = f"{wall / 60:.1f}" if isinstance(wall, (int, float)) and math.isfinite(wall) else None
        tables.append(EvalTable(str(path), *table_cells(blocks), minutes, root))
    if not summaries and reports:
        tables.append(EvalTable(", ".join(sorted({str(p.parent) for p in candidates if p.stem in reports})),
                                *table_cells(dict(sorted(reports.items()))), None, root))
    return [table for table in tables if table.rows]


def _json_or_none(path: Path):
    """A candidate file's JSON, or None for anything that is not an eval report or a summary."""
    try:
        if path.stat().st_size > 64 << 20:
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def unique_anchors(stages: list[Stage]) -> None:
    seen: set[str] = set()
    for stage in stages:
        base = "run-" + (re.sub(r"[^a-z0-9]+", "-", stage.name.lower()).strip("-") or "x")
        anchor, n = base, 1
        while anchor in seen:
            n += 1
            anchor = f"{base}-{n}"
        seen.add(anchor)
        stage.anchor = anchor


# ---------------------------------------------------------------- lineage order


def order_by_lineage(stages: list[Stage]) -> None:
    """Parents before children (the parent checkpoint, and a distillation's teacher), depth first,
    so that each chain of stages reads in one piece; siblings by the time each run finished (then
    as found), unfinished runs last."""
    parents = {id(stage): [p for p in (find_stage(ref, stages) for ref in references(stage)) if p is not None and p is not stage]
               for stage in stages}
    for stage in stages:
        parent = stage.lineage.get("parent")
        ref = parent.get("path") if isinstance(parent, dict) else None
        found = find_stage(ref, stages)
        stage.parent = (found.name, found.anchor) if found else (str(ref) if ref else "", "")

    found = {id(stage): index for index, stage in enumerate(stages)}  # the order RUN_DIRS were given in

    def key(stage: Stage) -> tuple:
        return (not stage.finished, str(stage.lineage.get("written_at") or ""), found[id(stage)])

    ordered: list[Stage] = []
    chain: list[Stage] = []  # the stages whose children come next, innermost last
    remaining = sorted(stages, key=key)
    while remaining:
        ready = [s for s in remaining if all(p in ordered for p in parents[id(s)])] or remaining[:1]  # a cycle: by time
        while chain and not any(chain[-1] in parents[id(s)] for s in ready):
            chain.pop()
        pick = next(s for s in ready if not chain or chain[-1] in parents[id(s)])
        ordered.append(pick)
        chain.append(pick)
        remaining.remove(pick)
    stages[:] = ordered


def references(stage: Stage) -> list[str]:
    parent = stage.lineage.get("parent")
    refs = [parent.get("path")] if isinstance(parent, dict) else []
    options = stage.lineage.get("options")
    if isinstance(options, dict) and stage.command == "distill":
        refs.append(options.get("teacher"))
    return [ref for ref in refs if isinstance(ref, str) and ref]


def find_stage(ref: str | None, stages: list[Stage]) -> Stage | None:
    """The stage REF names: the same directory, else (a moved pipeline, or a path relative to
    where the command ran) the one whose trailing path components REF ends with."""
    if not ref:
        return None
    path = Path(ref)
    for stage in stages:
        try:
            if path.resolve() == stage.path.resolve():
                return stage
        except OSError:
            continue
    for stage in stages:
        tail = stage.path.resolve().parts[-2:]
        if len(path.parts) >= 2 and path.parts[-2:] == tail:
            return stage
    return None


# ---------------------------------------------------------------- curves and samples


def stage_curves(stage: Stage, smooth: int) -> str:
    """The run's curves as base64 PNG: the panels `r1 plot` draws by default, those logged."""
    if not stage.metrics:
        return ""
    logged = logged_metrics([stage.metrics])
    names = [name for name in default_metrics(logged) if name in logged]
    if not names:
        return ""
    label = stage.path.name.replace("$", r"\$")  # matplotlib would read $…$ as math
    return base64.b64encode(curves_png([(label, stage.metrics)], names, smooth, dpi=CURVE_DPI)).decode("ascii")


def logged_samples(stage: Stage) -> list[StepSamples]:
    """The run's samples.jsonl grouped by step, in step order. A resumed run logs again the steps
    after its last checkpoint: a step logged again after later ones keeps its last logging, and a
    step logged twice in a row (the same lines: a resumed run draws what the lost one drew) shows once."""
    path = stage.path / SAMPLES
    if not path.is_file():
        return []
    by_step: dict[int, list[Record]] = {}
    previous = None
    for record in read_log(path):
        step = record.get("step")
        if isinstance(step, bool) or not isinstance(step, int):
            raise UserError(f"{record.where}: field 'step' must be an integer, got {json.dumps(step)[:40]}")
        if step != previous and step in by_step:
            by_step[step] = []
        by_step.setdefault(step, []).append(record)
        previous = step
    metrics = {record.get("step"): record for record in stage.metrics}
    counts = [len(records) for records in by_step.values()]
    per_logging = max(sorted(set(counts)), key=counts.count, default=1)  # every logging of a run writes as many lines
    return [StepSamples(step, [to_sample(r) for r in once(by_step[step], per_logging)], step_metrics(metrics.get(step)))
            for step in sorted(by_step)]


def once(records: list[Record], per_logging: int) -> list[Record]:
    """RECORDS without a logging repeated whole (PER_LOGGING lines, logged again the same); two
    equal samples within one logging (a group's completions may be the same) stay."""
    chunks = [records[i:i + per_logging] for i in range(0, len(records), per_logging)]
    return chunks[0] if len(chunks) > 1 and all(chunk == chunks[0] for chunk in chunks) else records


def to_sample(record: Record) -> Sample:
    rewards = record.get("rewards")
    shown = [(str(name), number(value)) for name, value in rewards.items()] if isinstance(rewards, dict) else []
    return Sample(id=text(record.get("id", "")), prompt=prompt_text(record.get("prompt", "")),
                  completion=text(record.get("completion", "")), rewards=shown, reward=number(record.get("reward")))


def step_metrics(record: dict | None) -> list[tuple[str, str]]:
    if not record:
        return []
    return [(name, number(record[name])) for name in STEP_METRICS if name in record]


def prompt_text(prompt) -> str:
    """A prompt as text; a list of chat messages as `role: content` lines."""
    if isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt):
        return "\n".join(f"{text(m.get('role', '?'))}: {text(m.get('content', ''))}" for m in prompt)
    return text(prompt)


def text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def number(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–" if value is None else text(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}" if math.isfinite(value) else str(value)


# ---------------------------------------------------------------- the page


def command_line(lineage: dict) -> str:
    """The run's command as typed (`r1 …`), from r1.json's argv."""
    argv = lineage.get("argv")
    if not isinstance(argv, list) or len(argv) < 2:
        return ""
    return "r1 " + shlex.join(str(arg) for arg in argv[1:])


def options_rows(lineage: dict) -> list[tuple[str, str]]:
    options = lineage.get("options")
    return [(str(k), json.dumps(v, ensure_ascii=False)) for k, v in options.items()] if isinstance(options, dict) else []


def final_metrics(lineage: dict) -> list[tuple[str, str]]:
    metrics = lineage.get("metrics")
    return [(str(k), number(v)) for k, v in metrics.items()] if isinstance(metrics, dict) else []


def render(**context) -> str:
    import jinja2

    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                                     undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    environment.globals.update(command_line=command_line, options_rows=options_rows, final_metrics=final_metrics)
    return environment.get_template("report.html.j2").render(**context)
