"""The sampling recipe: N completions per prompt as sample records, resumable and shardable.

A rerun continues the file where it stopped, drawing each missing (id, sample) pair from its
own seeded stream, and refuses a file another model, other prompts or other options made.

Under torchrun (`sample_across_processes`) rank 0 claims the file as one process does; each rank
samples every N-th prompt still missing samples, on its own device, into its own part file
(FILE.parts/rank-R.jsonl); rank 0 then merges the parts into FILE in prompt order. A sample's
seed is its prompt id's and index's, never its rank's or batch's, so the merged file is one
process's, and a rerun (on any number of processes) continues from every part written.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from r1cli.console import log, progress_bar, warn
from r1cli.data import outputs as runs
from r1cli.data.records import (
    STDIO,
    Record,
    atomic_path,
    dumps,
    read_records,
    sample_record,
    to_prompt_record,
    unique_ids,
    write_json,
)
from r1cli.data.templates import TEMPLATES, format_prompt
from r1cli.engines.base import SamplingOptions, engine_name, engine_names, make_engine
from r1cli.errors import UserError
from r1cli.modeling import resolve_device, resolve_dtype
from r1cli.options import ComputeOptions, DataOptions, GenerationOptions, PromptOptions
from r1cli.seeding import derive_seed
from r1cli.train import distributed


@dataclass(frozen=True)
class SampleJob:
    """What to sample: N completions per prompt of PROMPTS from MODEL, into OUT."""

    model: str
    prompts: str
    out: str
    n: int = 1
    prompt: PromptOptions = PromptOptions()
    generation: GenerationOptions = GenerationOptions()
    compute: ComputeOptions = ComputeOptions()
    shard: str = "0/1"
    seed: int = 0
    overwrite: bool = False
    source: DataOptions = DataOptions()  # the split and subset of PROMPTS when it is a dataset

    def check(self) -> None:
        if self.prompt.template not in TEMPLATES:
            raise UserError(f"--template {self.prompt.template!r} is not one of: {', '.join(TEMPLATES)}")
        if self.generation.engine not in engine_names():
            raise UserError(f"--engine {self.generation.engine!r} is not one of: {', '.join(engine_names())}")
        self.generation.check()
        if any(not stop for stop in self.generation.stop or ()):
            raise UserError("--stop '': a stop string must not be empty")
        resolve_dtype(self.compute.dtype, resolve_device(self.compute.device))
        parse_shard(self.shard)
        if distributed.world().distributed:
            if self.out == STDIO:
                raise UserError("--out - under torchrun: give a file (each process samples its share into it)")
            if self.prompts == STDIO:
                raise UserError("PROMPTS - under torchrun: give a file (every process reads it)")
            if self.generation.engine == "vllm":
                raise UserError("--engine vllm under torchrun: not supported yet (vLLM places its own workers); "
                                "use --engine auto, or one process per --shard I/N")

    def shaping_options(self) -> dict:
        """The options that decide what the samples are (not where they go or how fast)."""
        generation = {k: v for k, v in asdict(self.generation).items() if k not in ("generation_batch_size", "engine_memory")}
        return {**generation, "stop": list(self.generation.stop or ()), **asdict(self.prompt), "dtype": self.compute.dtype,
                "shard": self.shard, "seed": self.seed}

    def sampling(self) -> SamplingOptions:
        g = self.generation
        return SamplingOptions(g.temperature, g.top_p, g.top_k, g.max_new_tokens, tuple(g.stop or ()), self.seed)

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
    if distributed.world().distributed:
        sample_across_processes(job, records, distributed.world())
        return
    with runs.exclusive(job.out):
        identity = _identity(job, records)
        partial, record_file = Path(f"{job.out}.partial"), runs.sidecar(job.out)
        new = not _anything_written(job.out)
        engines = _engines_so_far(job)
        done = _claim(job, identity, engines)
        pending = _pending(records, job.n, done)
        if pending:
            try:
                with open(partial, "a", encoding="utf-8") as sink:
                    engines.add(_generate(job, pending, sink))
            except BaseException:
                if new and partial.exists() and partial.stat().st_size == 0:  # failed before any sample: leave nothing
                    partial.unlink()
                    record_file.unlink(missing_ok=True)
                raise
        else:
            log(f"{job.out} is complete ({len(records) * job.n} samples); nothing to do")
        os.replace(partial, job.out)
        _write_sidecar(job, identity, complete=True, engines=engines)


def _identity(job: SampleJob, records: list[Record]) -> runs.Identity:
    return runs.Identity(models={"model": runs.model_fingerprint(job.model)}, inputs={"prompts": runs.records_sha256(records)},
                         options=job.shaping_options())


def _engines_so_far(job: SampleJob) -> set[str]:
    """The engines that generated the file, for the record (a resumed file may have had several)."""
    return set() if job.overwrite else set((runs.read_sidecar(job.out) or {}).get("engines", []))


def _anything_written(out: str) -> bool:
    return any(path.exists() for path in (Path(out), Path(f"{out}.partial"), runs.sidecar(out), parts_directory(out)))


def _pending(records: list[Record], n: int, done: set[tuple[str, int]]) -> list[tuple[Record, list[int]]]:
    """Each prompt still missing samples, with the indices it misses."""
    pending = [(record, [k for k in range(n) if (record["id"], k) not in done]) for record in records]
    return [(record, missing) for record, missing in pending if missing]


def parts_directory(out: str) -> Path:
    """Where the ranks of a run under torchrun write their parts of OUT (FILE.parts/rank-R.jsonl)."""
    return Path(f"{out}.parts")


def load_prompts(job: SampleJob) -> list[Record]:
    index, count = parse_shard(job.shard)
    chosen = [to_prompt_record(r, job.prompt.prompt_key, job.prompt.answer_key) for i, r in enumerate(read_records(job.prompts, job.source)) if i % count == index]
    records, repeated = unique_ids(chosen)
    if repeated:
        warn(f"{repeated} prompt(s) repeat an earlier id (or prompt) and are sampled once")
    if not records:
        raise UserError(f"{job.prompts}: no prompts (in shard {job.shard})")
    return records


def _claim(job: SampleJob, identity: runs.Identity, engines: set[str]) -> set[tuple[str, int]]:
    """Make JOB.out this job's: start it, or resume it when the same model, prompts and options
    made it. Returns the (id, sample) pairs already written."""
    out, partial, parts = Path(job.out), Path(f"{job.out}.partial"), parts_directory(job.out)
    saved = runs.read_sidecar(out)
    if saved is None and (out.exists() or partial.exists() or parts.exists()):
        raise UserError(f"--out {out}: exists and was not written by r1 sample (no {runs.sidecar(out).name}); remove it or choose another --out")
    if saved is not None and job.overwrite:
        out.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
        shutil.rmtree(parts, ignore_errors=True)
        saved = None
    if saved is not None:
        runs.refuse_other_identity(str(out), identity, runs.Identity.from_json(saved["identity"]),
                                   "use --overwrite to sample it again, or another --out")
        if saved.get("n", 0) > job.n:
            raise UserError(f"--out {out}: holds {saved['n']} samples per prompt, more than --n {job.n}: "
                            f"use --n {saved['n']}, --overwrite, or another --out")
    _write_sidecar(job, identity, complete=False, engines=engines)
    if out.exists():
        os.replace(out, partial)  # a finished file reopened to add samples
    return _fold_parts(parts, partial, job.n, _written_pairs(partial, job.n))


def _write_sidecar(job: SampleJob, identity: runs.Identity, *, complete: bool, engines: set[str]) -> None:
    write_json(runs.sidecar(job.out), {"command": "sample", "model": job.model, "prompts": job.prompts, "n": job.n,
                                       "identity": identity.to_json(), "complete": complete, "engines": sorted(engines), "argv": sys.argv})


def _written_pairs(partial: Path, n: int) -> set[tuple[str, int]]:
    """The (id, sample) pairs in PARTIAL. Lines a kill cut or corrupted, and repeats, are removed
    (their samples are drawn again from the same seeds, so nothing changes)."""
    if not partial.exists():
        return set()
    data = partial.read_bytes()
    done: set[tuple[str, int]] = set()
    kept, dropped = _whole_lines(data, n, done)
    repaired = b"".join(line + b"\n" for line in kept)
    if repaired != data:
        if dropped:
            warn(f"{partial}: {dropped} cut, corrupt or repeated line(s) dropped; they are sampled again")
        partial.write_bytes(repaired)
    return done


def _fold_parts(parts: Path, partial: Path, n: int, done: set[tuple[str, int]]) -> set[tuple[str, int]]:
    """The samples in the part files of a run under torchrun (PARTS/rank-R.jsonl) appended to PARTIAL,
    the parts removed; returns DONE with their pairs. Cut lines and pairs already written are dropped
    (a kill while folding leaves the parts, folded again next time)."""
    if not parts.is_dir():
        return done
    dropped = 0
    with open(partial, "ab") as sink:
        for part in sorted(parts.glob("rank-*.jsonl")):
            kept, cut = _whole_lines(part.read_bytes(), n, done)
            sink.write(b"".join(line + b"\n" for line in kept))
            dropped += cut
    if dropped:
        warn(f"{parts}: {dropped} cut, corrupt or repeated line(s) dropped; they are sampled again")
    shutil.rmtree(parts)
    return done


def _whole_lines(data: bytes, n: int, done: set[tuple[str, int]]) -> tuple[list[bytes], int]:
    """The lines of DATA that are whole sample records of a pair not in DONE (added to it), and how
    many other non-empty lines there were."""
    kept, dropped = [], 0
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
    return kept, dropped


def _generate(job: SampleJob, pending: list[tuple[Record, list[int]]], sink, loaded: tuple | None = None, where: str | None = None) -> str:
    """Generate the MISSING samples of each prompt, a batch of prompts at a time, into SINK (WHERE:
    its name, JOB.out by default), with the (engine, tokenizer) LOADED or one loaded now; return the
    name of the engine that generated them."""
    engine, tokenizer = loaded or _load_engine(job, job.compute.device)
    prompt_ids = [tokenizer(format_prompt(record["prompt"], tokenizer, job.prompt.template, job.prompt.system),
                            add_special_tokens=False)["input_ids"] for record, _ in pending]
    # An engine that refills its slots from a queue (continuous batching) is handed several batches at once.
    prompts_per_batch = max(1, job.generation.generation_batch_size * getattr(engine, "batches_per_call", 1) // job.n)
    tokens, started = 0, time.time()
    log(f"sample: {len(pending)} prompts x up to {job.n} samples ({sum(len(m) for _, m in pending)} completions) with {job.generation.engine}")
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
    log(f"wrote {where or job.out} ({tokens} completion tokens in {time.time() - started:.0f} s)")
    return engine_name(engine)


def _load_engine(job: SampleJob, device: str) -> tuple:
    return make_engine(job.generation.engine, job.model, dtype=job.compute.dtype, device=device,
                       batch_size=job.generation.generation_batch_size, seed=job.seed, memory_share=job.generation.engine_memory)


@dataclass
class Claim:
    """What rank 0 found claiming the output for a run under torchrun."""

    identity: runs.Identity
    done: set[tuple[str, int]]  # the pairs written by earlier runs (on any number of processes)
    engines: set[str]  # the engines that wrote them
    new: bool  # nothing of the output existed: a failure before any sample leaves nothing


def sample_across_processes(job: SampleJob, records: list[Record], world: distributed.World) -> None:
    """JOB into JOB.out under torchrun: every rank samples its share of the missing pairs into its
    own part, and rank 0 merges the parts into the file in prompt order."""
    with world.main_only(runs.exclusive(job.out)):  # rank 0 holds the lock; the others write only their parts
        # Rank 0 claims the file as one process does (resuming it, refusing another's); all learn what is done.
        claim = distributed.on_main(world, _claim_for_processes, job, records)
        pending = _pending(records, job.n, claim.done)
        engines = set(claim.engines)
        if pending:
            # Every N-th prompt still missing samples is this rank's, sampled on its own device.
            log(f"sample: {len(pending)} prompts to sample, split over {world.world_size} processes (rank 0's share below)")
            engines |= _sample_share(job, pending[world.rank :: world.world_size], world, claim)
        else:
            log(f"{job.out} is complete ({len(records) * job.n} samples); nothing to do")
        # Rank 0 merges the file once every part is complete; the others wait for it.
        distributed.on_main(world, _merge_parts, job, records, claim.identity, engines)


def _claim_for_processes(job: SampleJob, records: list[Record]) -> Claim:
    """Rank 0's claim: the file's, as one process makes it (the parts of earlier runs folded into
    FILE.partial), then an empty FILE.parts/ for this run's ranks."""
    identity, new, engines = _identity(job, records), not _anything_written(job.out), _engines_so_far(job)
    done = _claim(job, identity, engines)
    parts_directory(job.out).mkdir()
    return Claim(identity, done, engines, new)


def _sample_share(job: SampleJob, share: list[tuple[Record, list[int]]], world: distributed.World, claim: Claim) -> set[str]:
    """This rank's SHARE sampled into its part file; the engines every rank used. An engine that
    fails to load on any rank stops every rank with its error."""
    device = str(distributed.device_for(world, resolve_device(job.compute.device)))
    try:
        loaded = distributed.checked_everywhere(world, lambda: _load_engine(job, device) if share else None)
    except UserError:
        if world.is_main and claim.new:  # failed before any sample: leave nothing
            shutil.rmtree(parts_directory(job.out), ignore_errors=True)
            Path(f"{job.out}.partial").unlink(missing_ok=True)
            runs.sidecar(job.out).unlink(missing_ok=True)
        raise
    used = None
    if share:
        part = parts_directory(job.out) / f"rank-{world.rank}.jsonl"
        with open(part, "a", encoding="utf-8") as sink:
            used = _generate(job, share, sink, loaded, where=str(part))
    return {name for name in distributed.every_rank(world, used) if name}  # also: every part is complete


def _merge_parts(job: SampleJob, records: list[Record], identity: runs.Identity, engines: set[str]) -> None:
    """FILE.partial (earlier runs' samples) and this run's parts, merged into FILE in prompt order
    (atomically: FILE appears whole or not at all)."""
    partial = Path(f"{job.out}.partial")
    _fold_parts(parts_directory(job.out), partial, job.n, _written_pairs(partial, job.n))
    order = {str(record["id"]): index for index, record in enumerate(records)}

    def place(line: bytes) -> tuple[int, int]:
        record = json.loads(line)
        return order.get(str(record["id"]), len(order)), int(record["sample"])

    written = [line for line in partial.read_bytes().split(b"\n") if line.strip()]
    lines = sorted(written, key=place)
    if lines == written:  # in order already (a finished file, rerun): renamed back, as one process does, its time kept
        os.replace(partial, job.out)
    else:
        with atomic_path(job.out) as temporary:
            temporary.write_bytes(b"".join(line + b"\n" for line in lines))
        partial.unlink()
    _write_sidecar(job, identity, complete=True, engines=engines)
    log(f"wrote {job.out} ({len(lines)} samples)")


def parse_shard(shard: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in shard.split("/"))
    except ValueError:
        raise UserError(f"--shard {shard!r}: expected I/N, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise UserError(f"--shard {shard!r}: need 0 <= I < N")
    return index, count
