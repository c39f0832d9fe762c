"""`r1 mix`: blend record files (training records for sft, or prompt records for grpo) by share
into one shuffled file, streaming.

Records are never all held in memory: a first pass validates each line and notes its byte
offset; the chosen (file, offset) pairs are shuffled and read back one by one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from r1cli.console import log
from r1cli.data.outputs import check_file_output, exclusive
from r1cli.data.records import (
    STDIO,
    is_dataset_input,
    is_table_file,
    parse_line,
    read_records,
    to_prompt_record,
    training_kind,
    write_records,
)
from r1cli.errors import UserError
from r1cli.options import DataOptions


@dataclass
class Source:
    path: str  # JSONL read by offset (a Parquet or JSON-array input converted to JSONL first)
    weight: float
    label: str = ""  # the input as the user named it, for messages
    position: str = ""  # "row " for a converted table: messages say FILE:row N, as the other commands do
    offsets: list[int] = field(default_factory=list)  # byte offset of each record's line
    duplicates: int = 0
    kinds: set[str] = field(default_factory=set)  # "training" and/or "prompt" records


@dataclass(frozen=True)
class MixJob:
    inputs: list[str]
    out: str
    total: int | None = None
    seed: int = 0
    unique: bool = False
    source: DataOptions = DataOptions()  # the split and subset of the dataset inputs


def run_mix(job: MixJob) -> None:
    """Mix training records (or prompt records, for grpo): with --total, sources contribute by weight (largest remainder),
    without replacement while a source suffices and with replacement beyond; without it,
    every record once. The output is shuffled."""
    inputs, out, total, seed, unique = job.inputs, job.out, job.total, job.seed, job.unique
    rng = random.Random(seed)
    check_file_output(out, [spec if Path(spec).exists() else spec.rpartition(":")[0] or spec for spec in inputs])
    with tempfile.TemporaryDirectory() as scratch:
        sources = [parse_source(spec, scratch, job.source) for spec in inputs]
        seen: set[bytes] | None = set() if unique else None
        for source in sources:
            index_source(source, seen)
        if len(set().union(*(s.kinds for s in sources))) > 1:
            by_kind = {s.label: "/".join(sorted(s.kinds)) for s in sources}
            raise UserError(f"cannot mix prompt records with training records: {by_kind}")
        quotas = [len(s.offsets) for s in sources] if total is None else largest_remainder(total, [s.weight for s in sources])
        picks: list[tuple[int, int]] = []
        report = []
        for number, (source, quota) in enumerate(zip(sources, quotas)):
            chosen, repeated = choose(len(source.offsets), quota, rng)
            if quota and not source.offsets:
                raise UserError(f"{source.label}: no records to draw {quota} from")
            picks += [(number, source.offsets[i]) for i in chosen]
            report.append(f"{source.label}: {quota} ({quota / max(1, sum(quotas)):.1%}) of {len(source.offsets)}"
                          + (f", {repeated} repeated" if repeated else "") + (f", {source.duplicates} duplicates dropped" if source.duplicates else ""))
        rng.shuffle(picks)
        handles = [open(s.path, "rb") for s in sources]  # noqa: SIM115 - closed below
        try:
            with exclusive(out) if out != STDIO else contextlib.nullcontext():
                count = write_records(out, (read_at(handles[n], offset) for n, offset in picks))
        finally:
            for handle in handles:
                handle.close()
    log(f"mix: wrote {count} records to {out}: " + "; ".join(report))


def parse_source(spec: str, scratch: str, selection: DataOptions | None = None) -> Source:
    path, separator, weight_text = spec.rpartition(":")
    weight = 1.0
    if separator:
        try:
            weight = float(weight_text)
        except ValueError:
            path = spec  # a ':' that is part of the path
    else:
        path = spec
    if not math.isfinite(weight) or weight < 0:
        raise UserError(f"{spec}: a weight must be a finite number >= 0")
    if path == STDIO:  # stdin cannot be read twice: spool it
        spooled = str(Path(scratch) / "stdin.jsonl")
        with open(spooled, "wb") as handle:
            shutil.copyfileobj(sys.stdin.buffer, handle)
        return Source(spooled, weight, "<stdin>")
    elif is_dataset_input(path) or (Path(path).is_file() and is_table_file(path)):
        # what the other commands read, mixed the same way: as JSONL lines (record N at line N)
        converted = str(Path(scratch) / f"input{len(list(Path(scratch).iterdir()))}.jsonl")
        write_records(converted, read_records(path, selection))
        return Source(converted, weight, path, "row ")
    elif not Path(path).is_file():
        raise UserError(f"{path}: no such file")
    return Source(path, weight, path)


def record_kind(record) -> str:
    """'prompt' for a prompt record (the input of grpo, sample and eval), else its training kind."""
    if "prompt" in record and "completion" not in record and "messages" not in record:
        to_prompt_record(record)  # validates the prompt
        return "prompt"
    return training_kind(record)


def index_source(source: Source, seen: set[bytes] | None) -> None:
    """Validate every line as a training or prompt record and note its offset (and drop duplicates)."""
    with open(source.path, "rb") as handle:
        line_number, offset = 0, 0
        for raw in handle:
            line_number += 1
            start, offset = offset, offset + len(raw)
            if not raw.strip():
                continue
            value = parse_line(raw, f"{source.label}:{source.position}{line_number}")
            kind = record_kind(value)
            source.kinds.add("prompt" if kind == "prompt" else "training")
            if seen is not None:
                content = {"messages": value.get("messages"), "prompt": value.get("prompt"),
                           "completion": value.get("completion"), "text": value.get("text"), "kind": kind}
                digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).digest()[:16]
                if digest in seen:
                    source.duplicates += 1
                    continue
                seen.add(digest)
            source.offsets.append(start)
    if not source.offsets and not source.duplicates:
        raise UserError(f"{source.label}: no records (the input is empty)")


def largest_remainder(total: int, weights: list[float]) -> list[int]:
    """Split TOTAL by WEIGHTS into integers: floors first, then the largest remainders (ties to the earlier)."""
    weight_sum = sum(weights)
    if weight_sum <= 0:
        raise UserError("the weights must not all be 0")
    exact = [total * w / weight_sum for w in weights]
    quotas = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(exact[i] - quotas[i]), i))
    for i in by_remainder[: total - sum(quotas)]:
        quotas[i] += 1
    return quotas


def choose(available: int, quota: int, rng: random.Random) -> tuple[list[int], int]:
    """QUOTA indices into AVAILABLE records: distinct while they last, then drawn with replacement."""
    if quota <= available:
        return rng.sample(range(available), quota), 0
    extra = quota - available
    return list(range(available)) + rng.choices(range(available), k=extra), extra


def read_at(handle, offset: int) -> dict:
    handle.seek(offset)
    return json.loads(handle.readline())
