"""The evaluation recipe: pass@1 over K samples, pass@k, maj@k and rates, overall and per group."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

from rich.table import Table

from r1cli.console import console, log
from r1cli.data.outputs import check_file_output, exclusive
from r1cli.data.records import (
    Record,
    check_sample_fields,
    prompt_id,
    read_records,
    to_prompt_record,
    write_json,
    write_records,
)
from r1cli.errors import UserError
from r1cli.options import ComputeOptions, DataOptions, GenerationOptions, PromptOptions, RewardSettings
from r1cli.recipes.sample import SampleJob, run_sample
from r1cli.report.metrics import report_block
from r1cli.rewards.registry import Scorer, parse_rewards, reward_options

DEFAULT_REWARDS = ["accuracy", "format", "language"]


@dataclass(frozen=True)
class EvalJob:
    """MODEL on DATA (K samples per prompt), or existing SAMPLES, into the report OUT."""

    model: str | None
    data: tuple[str, ...]
    out: Path
    samples: str | None = None
    n: int = 16
    k: str | None = None
    reward: tuple[str, ...] = ()
    by: tuple[str, ...] = ()
    prompt: PromptOptions = PromptOptions()
    generation: GenerationOptions = GenerationOptions()
    compute: ComputeOptions = ComputeOptions()
    rewards: RewardSettings = RewardSettings()
    seed: int = 0
    overwrite: bool = False
    source: DataOptions = DataOptions()  # the split and subset of DATA's (or SAMPLES') dataset inputs


def run_eval(job: EvalJob) -> None:
    """Sample (resumably, into REPORT.samples.jsonl) or read the samples, score them, report."""
    model, data, out, samples, n, k, reward, by = job.model, list(job.data), Path(job.out), job.samples, job.n, job.k, job.reward, job.by
    groups = list(by or [])
    specs = parse_rewards(DEFAULT_REWARDS + [r for r in reward or [] if r not in DEFAULT_REWARDS],
                          reward_options(job.rewards, job.generation.max_new_tokens))  # fail before sampling
    if samples:
        if model or data:
            raise UserError("give either MODEL DATA... or --samples FILE, not both")
        check_file_output(str(out), [samples])
        records = _read_samples(samples, job.source)
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
            prompts = _prompts_file(data, out, job.prompt.prompt_key, job.prompt.answer_key, job.source)
            if len(data) > 1 and "dataset" not in groups:
                groups.insert(0, "dataset")
            # Several files were merged into prompt records with the standard field names.
            prompt = job.prompt if len(data) == 1 else replace(job.prompt, prompt_key="prompt", answer_key="answer")
            run_sample(SampleJob(model, str(prompts), str(samples_path), n=n, prompt=prompt, generation=job.generation,
                                 compute=job.compute, seed=job.seed, overwrite=job.overwrite,
                                 source=job.source if len(data) == 1 else DataOptions()))
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


def _prompts_file(data: list[str], out: Path, prompt_key: str, answer_key: str, source: DataOptions) -> str:
    """One input: itself. Several: their prompt records, each with its `dataset`, beside the report."""
    if len(data) == 1:
        return data[0]
    combined = []
    for path in data:
        for record in read_records(path, source):
            prompt = to_prompt_record(record, prompt_key, answer_key)
            prompt.setdefault("dataset", Path(path).stem if Path(path).stem != "test" else Path(path).parent.name)
            prompt["id"] = f"{prompt['dataset']}/{prompt['id']}"
            combined.append(prompt)
    path = out.with_name(out.stem + ".prompts.jsonl")
    write_records(path, combined)
    return str(path)


def _read_samples(path: str, source: DataOptions | None = None) -> list[Record]:
    """Sample records from any generator: `completion` is required; `id` and `sample` derived
    (a hash of the prompt; the order within a prompt) when absent."""
    records = []
    counters: dict[str, int] = defaultdict(int)
    for record in read_records(path, source):
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
