"""`r1 eval`: pass@1 over K samples, pass@k, maj@k and rates, overall and per group."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from r1cli.console import console, log
from r1cli.errors import UserError
from r1cli.metrics import report_block
from r1cli.records import (
    Record,
    check_sample_fields,
    prompt_id,
    read_records,
    to_prompt_record,
    write_json,
    write_records,
)
from r1cli.rewards import Scorer, parse_rewards
from r1cli.runs import check_file_output, exclusive
from r1cli.sample import SampleJob, run_sample

DEFAULT_REWARDS = ["accuracy", "format", "language"]


def evaluate(
    model: Annotated[str | None, typer.Argument(help="Checkpoint to sample from (omit with --samples).")] = None,
    data: Annotated[list[str] | None, typer.Argument(help="Prompt records with gold answers; several files are reported per dataset too.")] = None,
    out: Annotated[Path, typer.Option("--out", help="The report (JSON).")] = Path("report.json"),
    samples: Annotated[str | None, typer.Option("--samples", help="Score existing sample records instead of sampling (no model is loaded).")] = None,
    n: Annotated[int, typer.Option("--n", help="Samples per prompt (K).", min=1)] = 16,
    k: Annotated[str | None, typer.Option("--k", help="Comma-separated k for pass@k and maj@k. [default: 1 and K]")] = None,
    reward: Annotated[list[str] | None, typer.Option("--reward", help="Extra reward to average (repeatable); accuracy, format and language are always on.")] = None,
    by: Annotated[list[str] | None, typer.Option("--by", help="Also report per value of this record field (repeatable).")] = None,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (the R1 paper's 0.6).")] = 0.6,
    top_p: Annotated[float, typer.Option(help="Nucleus mass (the R1 paper's 0.95).")] = 0.95,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens per completion at most.", min=1)] = 1024,
    template: Annotated[str, typer.Option(help="chat | r1-zero.")] = "chat",
    system: Annotated[str | None, typer.Option(help="System message for --template chat.")] = None,
    engine: Annotated[str, typer.Option(help="hf | vllm.")] = "hf",
    batch_size: Annotated[int, typer.Option(help="Sequences generated together.", min=1)] = 32,
    prompt_key: Annotated[str, typer.Option(help="Field holding the prompt.")] = "prompt",
    answer_key: Annotated[str, typer.Option(help="Field holding the gold answer.")] = "answer",
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
    overwrite: Annotated[bool, typer.Option(help="Sample again: remove the samples an earlier run wrote to REPORT.samples.jsonl.")] = False,
) -> None:
    """Evaluate MODEL on DATA (K samples per prompt), or score --samples from any generator.

    Sampling goes to REPORT.samples.jsonl and resumes like `r1 sample`: a rerun with another
    model, other data or other sampling options is refused rather than reusing those samples.
    pass@1 is the mean over prompts of each prompt's share of correct samples.
    """
    groups = list(by or [])
    specs = parse_rewards(DEFAULT_REWARDS + [r for r in reward or [] if r not in DEFAULT_REWARDS])  # fail before sampling
    if samples:
        if model or data:
            raise UserError("give either MODEL DATA... or --samples FILE, not both")
        check_file_output(str(out), [samples])
        records = _read_samples(samples)
        ks = parse_ks(k, min(len(group) for group in _by_id(records).values()))
    else:
        if not model or not data:
            raise UserError("r1 eval needs MODEL and DATA (or --samples FILE)")
        ks = parse_ks(k, n)
        if ks[-1] > n:
            raise UserError(f"--k {k}: pass@{ks[-1]} and maj@{ks[-1]} need at least {ks[-1]} samples per prompt, but --n is {n}")
        samples_path = out.with_name(out.stem + ".samples.jsonl")
        check_file_output(str(out), data)
        check_file_output(str(samples_path), data)
        with exclusive(out):
            prompts = _prompts_file(data, out, prompt_key, answer_key)
            if len(data) > 1 and "dataset" not in groups:
                groups.insert(0, "dataset")
            keys = {} if len(data) > 1 else {"prompt_key": prompt_key, "answer_key": answer_key}
            run_sample(SampleJob(model, str(prompts), str(samples_path), n=n, temperature=temperature, top_p=top_p,
                                 max_new_tokens=max_new_tokens, template=template, system=system, engine=engine,
                                 batch_size=batch_size, seed=seed, device=device, overwrite=overwrite, **keys))
        records = _read_samples(str(samples_path))

    scorer = Scorer(specs)
    try:
        for record, scores in zip(records, scorer.score(records)):
            record["rewards"] = {**record.get("rewards", {}), **scores}
    finally:
        scorer.close()
    report = {"overall": report_block(records, ks), "by": {}}
    for field in groups:
        members: dict[str, list[dict]] = defaultdict(list)
        for record in records:
            members[f"{field}={record.get(field)}"].append(record)
        for key in sorted(members):
            report["by"][key] = report_block(members[key], ks)
    write_json(out, report)
    console.print(report_table(report, ks))
    log(f"wrote {out}")


def parse_ks(text: str | None, n: int) -> list[int]:
    if text is None:
        return sorted({1, n})
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise UserError(f"--k {text!r}: expected comma-separated integers, e.g. 1,4,16") from None
    if not ks or ks[0] < 1:
        raise UserError(f"--k {text!r}: every k must be at least 1")
    return ks


def _prompts_file(data: list[str], out: Path, prompt_key: str, answer_key: str) -> str:
    """One file: itself. Several: their prompt records, each with its `dataset`, beside the report."""
    if len(data) == 1:
        return data[0]
    combined = []
    for path in data:
        for record in read_records(path):
            prompt = to_prompt_record(record, prompt_key, answer_key)
            prompt.setdefault("dataset", Path(path).stem if Path(path).stem != "test" else Path(path).parent.name)
            prompt["id"] = f"{prompt['dataset']}/{prompt['id']}"
            combined.append(prompt)
    path = out.with_name(out.stem + ".prompts.jsonl")
    write_records(path, combined)
    return str(path)


def _read_samples(path: str) -> list[Record]:
    """Sample records from any generator: `completion` is required; `id` and `sample` derived
    (a hash of the prompt; the order within a prompt) when absent."""
    records = []
    counters: dict[str, int] = defaultdict(int)
    for record in read_records(path):
        check_sample_fields(record, prompt_required=False)
        if record.get("id") is None:
            record["id"] = prompt_id(record.get("prompt", ""))
        record["id"] = str(record["id"])
        if record.get("sample") is None:
            record["sample"] = counters[record["id"]]
        counters[record["id"]] += 1
        records.append(record)
    if not records:
        raise UserError(f"{path}: no records (the input is empty)")
    return records


def _by_id(records: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        groups[record["id"]].append(record)
    return groups


def report_table(report: dict, ks: list[int]) -> Table:
    table = Table(title="r1 eval", title_justify="left")
    columns = ["prompts", "samples", *[f"pass@{k}" for k in ks], *[f"maj@{k}" for k in ks if k > 1],
               "format", "language", "tokens", "truncated"]
    table.add_column("group")
    for column in columns:
        table.add_column(column, justify="right")
    keys = {"prompts": "n_prompts", "samples": "n_samples", "format": "format_rate", "language": "language_consistency",
            "tokens": "mean_completion_tokens", "truncated": "truncated_rate"}
    for name, block in [("overall", report["overall"]), *report["by"].items()]:
        cells = []
        for column in columns:
            value = block.get(keys.get(column, column))
            cells.append("-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value))
        table.add_row(name, *cells)
    return table
