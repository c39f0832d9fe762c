"""The evaluation recipe: pass@1 over K samples, pass@k, maj@k and rates, overall and per group."""

from __future__ import annotations

import sys
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from rich.table import Table

from r1cli import __version__
from r1cli.console import console, log, warn
from r1cli.data.outputs import check_file_output, exclusive, read_sidecar
from r1cli.data.records import (
    STDIO,
    Record,
    check_sample_fields,
    describe_input,
    prompt_id,
    read_records,
    to_prompt_record,
    write_json,
    write_records,
)
from r1cli.errors import UserError
from r1cli.options import ComputeOptions, DataOptions, GenerationOptions, PromptOptions, RewardSettings
from r1cli.recipes.sample import SampleJob, run_sample
from r1cli.report.card import record_eval
from r1cli.report.metrics import report_block
from r1cli.rewards.registry import Scorer, parse_rewards, reward_options
from r1cli.train import distributed
from r1cli.train.checkpoint import is_complete, library_versions, read_lineage

DEFAULT_REWARDS = ["accuracy", "format", "language"]
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "max_new_tokens", "stop")


@dataclass(frozen=True)
class EvalJob:
    """MODEL on DATA (K samples per prompt), or existing SAMPLES, into the report OUT."""

    model: str | None
    data: tuple[str, ...]
    out: Path
    samples: tuple[str, ...] = ()  # existing sample records (several: read as if concatenated)
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
    """Sample (resumably, into REPORT.samples.jsonl) or read the samples, score them, report.
    Under torchrun every rank samples its share; rank 0 alone scores and reports."""
    out, groups = Path(job.out), list(job.by or [])
    specs = parse_rewards(DEFAULT_REWARDS + [r for r in job.reward or [] if r not in DEFAULT_REWARDS],
                          reward_options(job.rewards, job.generation.max_new_tokens))  # fail before sampling
    world = distributed.world()
    if job.samples:
        if job.model or job.data:
            raise UserError("give either MODEL DATA... or --samples FILE, not both")
        if not world.is_main:
            return  # nothing to sample: rank 0 scores them
        check_file_output(str(out), job.samples)
        records = _read_samples(job.samples, job.source)
        ks = parse_ks(job.k, min(len(group) for group in _by_id(records).values()))
        provenance = eval_provenance(job, list(job.samples), ks)
    else:
        ks, samples_path = sample_for_eval(job)
        if not world.is_main:
            return
        if len(job.data) > 1 and "dataset" not in groups:
            groups.insert(0, "dataset")
        records = _read_samples([str(samples_path)])
        provenance = eval_provenance(job, [str(samples_path)], ks)

    scorer = Scorer(specs)
    try:
        for record, scores in zip(records, scorer.score(records)):
            record["rewards"] = {**record.get("rewards", {}), **scores}
    finally:
        scorer.close()
    report = {"provenance": provenance, "overall": report_block(records, ks), "by": {}}
    for field in groups:
        members: dict[str, list[dict]] = defaultdict(list)
        for record in records:
            members[f"{field}={record.get(field)}"].append(record)
        for key in sorted(members):
            report["by"][key] = report_block(members[key], ks)
    write_json(out, report)
    console.print(report_table(report, ks))
    log(f"wrote {out}")
    if job.model and is_complete(Path(job.model)):
        add_to_model_card(Path(job.model), out, report)


def sample_for_eval(job: EvalJob) -> tuple[list[int], Path]:
    """The ks, and JOB.n samples of each prompt of JOB.data drawn (resumed) into REPORT.samples.jsonl;
    under torchrun each rank draws its share (`r1cli.recipes.sample`)."""
    model, data, out, n = job.model, list(job.data), Path(job.out), job.n
    if not model or not data:
        raise UserError("r1 eval needs MODEL and DATA (or --samples FILE)")
    ks = parse_ks(job.k, n)
    if ks[-1] > n:
        raise UserError(f"--k {job.k}: pass@{ks[-1]} and maj@{ks[-1]} need at least {ks[-1]} samples per prompt, but --n is {n}")
    samples_path = out.with_name(out.stem + ".samples.jsonl")
    check_file_output(str(out), data)
    check_file_output(str(samples_path), data)
    world = distributed.world()
    with world.main_only(exclusive(out)):  # rank 0 holds the report's lock and writes the prompts file
        prompts = distributed.on_main(world, _prompts_file, data, out, job.prompt.prompt_key, job.prompt.answer_key, job.source)
        # Several files were merged into prompt records with the standard field names.
        prompt = job.prompt if len(data) == 1 else replace(job.prompt, prompt_key="prompt", answer_key="answer")
        run_sample(SampleJob(model, str(prompts), str(samples_path), n=n, prompt=prompt, generation=job.generation,
                             compute=job.compute, seed=job.seed, overwrite=job.overwrite,
                             source=job.source if len(data) == 1 else DataOptions()))
    return ks, samples_path


def eval_provenance(job: EvalJob, samples: list[str], ks: list[int]) -> dict:
    """What a report measured: the model (its path and content fingerprint), the data and the
    samples (their sha256; several files: a list), how the samples were drawn (sampling settings,
    seed, template, engine), and the r1 and library versions. The sampling record of the samples
    file (FILE.r1.json, which `r1 sample` and `r1 eval` write) says how they were drawn; samples
    from elsewhere have none; of several files, what their records share."""
    sidecar = _shared_sample_record(samples)
    made = sidecar.get("identity", {}).get("options", {})
    model = job.model or sidecar.get("model")
    block: dict = {"r1_version": __version__, "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "argv": sys.argv}
    block["model"] = _model_provenance(model, sidecar.get("identity", {}).get("models", {}).get("model")) if model else None
    block["data"] = [describe_input(path, job.source) for path in job.data] or None
    described = [describe_input(path, job.source if job.samples else None) for path in samples]
    block["samples"] = described[0] if len(described) == 1 else described
    block.update({"n": job.n if job.model else None, "k": ks, "sampling": {key: made[key] for key in SAMPLING_KEYS if key in made} or None,
                  "seed": made.get("seed"), "template": made.get("template"), "system": made.get("system"), "dtype": made.get("dtype"),
                  "engines": sidecar.get("engines")})
    if job.model:
        from r1cli.data.templates import resolve_template
        from r1cli.modeling import load_tokenizer

        block["template_used"] = resolve_template(job.prompt.template, load_tokenizer(job.model))
    block["libraries"] = library_versions()
    return block


def _shared_sample_record(samples: list[str]) -> dict:
    """The sampling record of SAMPLES: one file's own; of several (the shards of one run, say), the
    model and each model and option their records all give alike, and the engines of any."""
    records = [_sample_record(path) for path in samples]
    if len(records) == 1:
        return records[0]

    def alike(get) -> dict:
        first = get(records[0])
        return {key: value for key, value in first.items() if all(key in get(other) and get(other)[key] == value for other in records[1:])}

    engines = sorted({name for record in records for name in record.get("engines") or []})
    return {**alike(lambda record: {k: v for k, v in record.items() if k == "model"}), "engines": engines or None,
            "identity": {"models": alike(lambda record: record.get("identity", {}).get("models", {})),
                         "options": alike(lambda record: record.get("identity", {}).get("options", {}))}}


def _sample_record(samples: str) -> dict:
    """The sampling record beside SAMPLES, if r1 wrote one (samples from elsewhere have none)."""
    if samples == STDIO or not Path(samples).is_file():
        return {}
    try:
        return read_sidecar(samples) or {}
    except UserError:  # a file of that name r1 did not write: no record of how the samples were made
        return {}


def _model_provenance(model: str, fingerprint: str | None) -> dict:
    path = Path(model)
    block: dict = {"path": str(path.resolve()) if path.exists() else model, "fingerprint": fingerprint}
    if is_complete(path):
        lineage = read_lineage(path)
        block["made_by"] = {"command": lineage.get("command"), "step": lineage.get("step"), "written_at": lineage.get("written_at")}
    return block


def add_to_model_card(checkpoint: Path, out: Path, report: dict) -> None:
    """The report's overall figures into CHECKPOINT's model card (an r1 checkpoint's: one made
    elsewhere, a hub cache's snapshot say, is not written to). A card that cannot be written (a
    read-only checkpoint) is said, and the report stands."""
    provenance = report["provenance"]
    entry = {key: provenance.get(key) for key in ("data", "n", "k", "sampling", "seed", "template", "template_used", "written_at")}
    entry["fingerprint"] = (provenance.get("model") or {}).get("fingerprint")
    try:
        record_eval(checkpoint, out, {**entry, "overall": report["overall"]})
    except OSError as error:
        warn(f"{checkpoint}: its model card was not updated ({error.strerror or error})")
        return
    except UserError as error:  # a damaged r1-evals.json: the report is written, so the eval stands
        warn(f"{checkpoint}: its model card was not updated ({error})")
        return
    log(f"added {out.name} to {checkpoint / 'README.md'}")


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


def _read_samples(paths: list[str] | tuple[str, ...], source: DataOptions | None = None) -> list[Record]:
    """Sample records from any generator, in PATHS one after the other (as if concatenated):
    `completion` is required; `id` and `sample` derived (a hash of the prompt; the order within a
    prompt) when absent. A sample (id and index) in two of the files is an error."""
    records: list[Record] = []
    counters: dict[str, int] = defaultdict(int)
    first_at: dict[tuple[str, object], tuple[str, str]] = {}  # (id, sample) -> (its file, where it was read)
    for path in paths:
        read = 0
        for record in read_records(path, source):
            check_sample_fields(record, prompt_required=False)
            if record.get("id") is None:
                record["id"] = prompt_id(record.get("prompt", ""))
            record["id"] = str(record["id"])
            if record.get("sample") is None:
                record["sample"] = counters[record["id"]]
            counters[record["id"]] += 1
            pair = (record["id"], record["sample"])
            earlier = first_at.setdefault(pair, (path, record.where))
            if earlier[0] != path:
                raise UserError(f"{record.where}: sample {pair[1]} of prompt {pair[0]!r} is also in {earlier[1]}; "
                                "give each sample once across --samples files")
            records.append(record)
            read += 1
        if not read:
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
