"""`r1 sample`: K completions per prompt, as sample records; resumable and shardable."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from r1cli import runs
from r1cli.console import log, progress_bar, warn
from r1cli.errors import UserError
from r1cli.generation import ENGINES, TEMPLATES, SamplingOptions, format_prompt, make_engine
from r1cli.modeling import resolve_device, resolve_dtype
from r1cli.records import (
    STDIO,
    Record,
    dumps,
    read_records,
    sample_record,
    to_prompt_record,
    unique_ids,
    write_json,
)
from r1cli.seeding import derive_seed


def sample(
    model: Annotated[str, typer.Argument(help="Checkpoint directory (or hub name).")],
    prompts: Annotated[str, typer.Argument(help="Prompt records: JSONL ('-' for stdin), JSON or Parquet.")],
    out: Annotated[str, typer.Option("--out", help="Sample records (JSONL); '-' for stdout.")],
    n: Annotated[int, typer.Option("--n", help="Completions per prompt.", min=1)] = 1,
    temperature: Annotated[float, typer.Option(help="Sampling temperature; 0 = greedy.", min=0.0)] = 0.6,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass, in (0, 1]; 1 = off.")] = 0.95,
    top_k: Annotated[int, typer.Option(help="Sample among the K likeliest tokens; 0 = off.", min=0)] = 0,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens per completion at most.", min=1)] = 1024,
    template: Annotated[str, typer.Option(help="chat (the tokenizer's chat template) | r1-zero (the R1 paper's base-model template).")] = "chat",
    system: Annotated[str | None, typer.Option(help="System message for --template chat.")] = None,
    stop: Annotated[list[str] | None, typer.Option(help="Stop string, kept in the completion (repeatable).")] = None,
    engine: Annotated[str, typer.Option(help="hf (built in) | vllm (if installed).")] = "hf",
    shard: Annotated[str, typer.Option(help="I/N: take every N-th prompt starting at the I-th (0-based).")] = "0/1",
    batch_size: Annotated[int, typer.Option(help="Sequences generated together.", min=1)] = 32,
    prompt_key: Annotated[str, typer.Option(help="Field holding the prompt.")] = "prompt",
    answer_key: Annotated[str, typer.Option(help="Field holding the gold answer.")] = "answer",
    seed: Annotated[int, typer.Option(help="Sampling seed: sample K of prompt ID is drawn from a stream of (seed, ID, K).")] = 0,
    dtype: Annotated[str, typer.Option(help="auto (bf16 on GPU, fp32 on CPU) | bf16 | fp16 | fp32.")] = "auto",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
    overwrite: Annotated[bool, typer.Option(help="Start over: remove the samples an earlier `r1 sample` wrote to --out.")] = False,
) -> None:
    """Sample N completions per prompt and write one sample record per completion.

    Writing to a file is resumable: run the command again and only the (id, sample) pairs still
    missing are generated, each from its own seeded stream, so the result equals an
    uninterrupted run's; a larger --n adds samples. The file appears once complete
    (FILE.partial until then), and FILE.r1.json records the model, prompts and options: a rerun
    with another model, other prompts or other sampling options is refused, not mixed in.
    """
    run_sample(SampleJob(model, prompts, out, n, temperature, top_p, top_k, max_new_tokens, template, system, tuple(stop or ()),
                         engine, shard, batch_size, prompt_key, answer_key, seed, dtype, device, overwrite))


@dataclass(frozen=True)
class SampleJob:
    model: str
    prompts: str
    out: str
    n: int = 1
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 0
    max_new_tokens: int = 1024
    template: str = "chat"
    system: str | None = None
    stop: tuple[str, ...] = ()
    engine: str = "hf"
    shard: str = "0/1"
    batch_size: int = 32
    prompt_key: str = "prompt"
    answer_key: str = "answer"
    seed: int = 0
    dtype: str = "auto"
    device: str = "auto"
    overwrite: bool = False

    def check(self) -> None:
        if self.template not in TEMPLATES:
            raise UserError(f"--template {self.template!r} is not one of: {', '.join(TEMPLATES)}")
        if self.engine not in ENGINES:
            raise UserError(f"--engine {self.engine!r} is not one of: {', '.join(ENGINES)}")
        if not (0 < self.top_p <= 1) or math.isnan(self.top_p):
            raise UserError(f"--top-p {self.top_p}: must be in (0, 1]")
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise UserError(f"--temperature {self.temperature}: must be a number >= 0")
        if any(not stop for stop in self.stop):
            raise UserError("--stop '': a stop string must not be empty")
        resolve_dtype(self.dtype, resolve_device(self.device))
        parse_shard(self.shard)

    def shaping_options(self) -> dict:
        """The options that decide what the samples are (not where they go or how fast)."""
        return {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k, "max_new_tokens": self.max_new_tokens,
                "template": self.template, "system": self.system, "stop": list(self.stop), "engine": self.engine,
                "shard": self.shard, "prompt_key": self.prompt_key, "answer_key": self.answer_key, "seed": self.seed, "dtype": self.dtype}

    def sampling(self) -> SamplingOptions:
        return SamplingOptions(self.temperature, self.top_p, self.top_k, self.max_new_tokens, self.stop, self.seed)

    def seed_of(self, prompt_id: str, k: int) -> int:
        return derive_seed(self.seed, "sample", prompt_id, k)


def run_sample(job: SampleJob) -> None:
    """Sample JOB.n completions for every prompt of JOB, into JOB.out (resumed) or stdout."""
    job.check()
    records = load_prompts(job)
    if job.out == STDIO:
        _generate(job, [(record, list(range(job.n))) for record in records], sys.stdout)
        return
    runs.check_file_output(job.out, [job.prompts])
    with runs.exclusive(job.out):
        identity = runs.Identity(models={"model": runs.model_fingerprint(job.model)}, inputs={"prompts": runs.records_sha256(records)},
                                 options=job.shaping_options())
        partial, record_file = Path(f"{job.out}.partial"), runs.sidecar(job.out)
        new = not (Path(job.out).exists() or partial.exists() or record_file.exists())
        done = _claim(job, identity)
        pending = [(record, [k for k in range(job.n) if (record["id"], k) not in done]) for record in records]
        pending = [(record, missing) for record, missing in pending if missing]
        if pending:
            try:
                with open(partial, "a", encoding="utf-8") as sink:
                    _generate(job, pending, sink)
            except BaseException:
                if new and partial.exists() and partial.stat().st_size == 0:  # failed before any sample: leave nothing
                    partial.unlink()
                    record_file.unlink(missing_ok=True)
                raise
        else:
            log(f"{job.out} is complete ({len(records) * job.n} samples); nothing to do")
        os.replace(partial, job.out)
        _write_sidecar(job, identity, complete=True)


def load_prompts(job: SampleJob) -> list[Record]:
    index, count = parse_shard(job.shard)
    chosen = [to_prompt_record(r, job.prompt_key, job.answer_key) for i, r in enumerate(read_records(job.prompts)) if i % count == index]
    records, repeated = unique_ids(chosen)
    if repeated:
        warn(f"{repeated} prompt(s) repeat an earlier id (or prompt) and are sampled once")
    if not records:
        raise UserError(f"{job.prompts}: no prompts (in shard {job.shard})")
    return records


def _claim(job: SampleJob, identity: runs.Identity) -> set[tuple[str, int]]:
    """Make JOB.out this job's: start it, or resume it when the same model, prompts and options
    made it. Returns the (id, sample) pairs already written."""
    out, partial = Path(job.out), Path(f"{job.out}.partial")
    saved = runs.read_sidecar(out)
    if saved is None and (out.exists() or partial.exists()):
        raise UserError(f"--out {out}: exists and was not written by r1 sample (no {runs.sidecar(out).name}); remove it or choose another --out")
    if saved is not None and job.overwrite:
        out.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
        saved = None
    if saved is not None:
        runs.refuse_other_identity(str(out), identity, runs.Identity.from_json(saved["identity"]),
                                   "use --overwrite to sample it again, or another --out")
        if saved.get("n", 0) > job.n:
            raise UserError(f"--out {out}: holds {saved['n']} samples per prompt, more than --n {job.n}: "
                            f"use --n {saved['n']}, --overwrite, or another --out")
    _write_sidecar(job, identity, complete=False)
    if out.exists():
        os.replace(out, partial)  # a finished file reopened to add samples
    return _written_pairs(partial, job.n)


def _write_sidecar(job: SampleJob, identity: runs.Identity, *, complete: bool) -> None:
    write_json(runs.sidecar(job.out), {"command": "sample", "model": job.model, "prompts": job.prompts, "n": job.n,
                                       "identity": identity.to_json(), "complete": complete, "argv": sys.argv})


def _written_pairs(partial: Path, n: int) -> set[tuple[str, int]]:
    """The (id, sample) pairs in PARTIAL. Lines a kill cut or corrupted, and repeats, are removed
    (their samples are drawn again from the same seeds, so nothing changes)."""
    if not partial.exists():
        return set()
    data = partial.read_bytes()
    kept, done, dropped = [], set(), 0
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            pair = (str(record["id"]), int(record["sample"]))
        except (ValueError, KeyError, TypeError):
            dropped += 1
            continue
        if pair in done or not 0 <= pair[1] < n:
            dropped += 1
            continue
        done.add(pair)
        kept.append(line)
    repaired = b"".join(line + b"\n" for line in kept)
    if repaired != data:
        if dropped:
            warn(f"{partial}: {dropped} cut, corrupt or repeated line(s) dropped; they are sampled again")
        partial.write_bytes(repaired)
    return done


def _generate(job: SampleJob, pending: list[tuple[Record, list[int]]], sink) -> None:
    """Generate the MISSING samples of each prompt, a batch of prompts at a time, into SINK."""
    engine, tokenizer = make_engine(job.engine, job.model, dtype=job.dtype, device=job.device, batch_size=job.batch_size, seed=job.seed)
    prompt_ids = [tokenizer(format_prompt(record["prompt"], tokenizer, job.template, job.system), add_special_tokens=False)["input_ids"]
                  for record, _ in pending]
    prompts_per_batch = max(1, job.batch_size // job.n)
    tokens, started = 0, time.time()
    log(f"sample: {len(pending)} prompts x up to {job.n} samples ({sum(len(m) for _, m in pending)} completions) with {job.engine}")
    with progress_bar() as bar:
        task = bar.add_task("sample", total=len(pending), status="")
        for start in range(0, len(pending), prompts_per_batch):
            chunk = pending[start : start + prompts_per_batch]
            seeds = [[job.seed_of(record["id"], k) for k in missing] for record, missing in chunk]
            generated = engine.generate_ids(prompt_ids[start : start + len(chunk)], job.sampling(), seeds=seeds)
            for (record, missing), completions in zip(chunk, generated):
                for k, completion in zip(missing, completions):
                    sink.write(dumps(sample_record(record, k, completion)) + "\n")
                    tokens += len(completion.token_ids)
            sink.flush()
            bar.update(task, advance=len(chunk), status=f"{tokens / (time.time() - started):.0f} tokens/s")
    engine.close()
    log(f"wrote {job.out} ({tokens} completion tokens in {time.time() - started:.0f} s)")


def parse_shard(shard: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in shard.split("/"))
    except ValueError:
        raise UserError(f"--shard {shard!r}: expected I/N, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise UserError(f"--shard {shard!r}: need 0 <= I < N")
    return index, count
