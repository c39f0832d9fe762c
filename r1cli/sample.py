"""`r1 sample`: K completions per prompt, as sample records; resumable and shardable."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from r1cli.answers import split_completion
from r1cli.console import log, warn
from r1cli.errors import UserError
from r1cli.generation import TEMPLATES, HFEngine, SamplingOptions, format_prompt
from r1cli.modeling import load_model, load_tokenizer, resolve_device, resolve_dtype
from r1cli.records import STDIO, Record, dumps, read_records, to_prompt_record
from r1cli.training import progress_bar


def sample(
    model: Annotated[str, typer.Argument(help="Checkpoint directory (or hub name).")],
    prompts: Annotated[str, typer.Argument(help="Prompt records: JSONL ('-' for stdin), JSON or Parquet.")],
    out: Annotated[str, typer.Option("--out", help="Sample records (JSONL); '-' for stdout.")],
    n: Annotated[int, typer.Option("--n", help="Completions per prompt.", min=1)] = 1,
    temperature: Annotated[float, typer.Option(help="Sampling temperature; 0 = greedy.", min=0.0)] = 0.6,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass; 1 = off.")] = 0.95,
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
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    dtype: Annotated[str, typer.Option(help="auto (bf16 on GPU, fp32 on CPU) | bf16 | fp16 | fp32.")] = "auto",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
) -> None:
    """Sample N completions per prompt and write one sample record per completion.

    Writing to a file is resumable: run the command again and only the (id, sample) pairs still
    missing are generated. The file appears once complete (FILE.partial until then).
    """
    if template not in TEMPLATES:
        raise UserError(f"--template {template!r} is not one of: {', '.join(TEMPLATES)}")
    index, count = parse_shard(shard)
    records = unique_ids([to_prompt_record(r, prompt_key, answer_key) for i, r in enumerate(read_records(prompts)) if i % count == index])
    if not records:
        raise UserError(f"{prompts}: no prompts (in shard {shard})")
    partial = Path(f"{out}.partial")
    done = set() if out == STDIO else _resume(Path(out), partial)
    pending = [(record, [k for k in range(n) if (record["id"], k) not in done]) for record in records]
    pending = [(record, missing) for record, missing in pending if missing]
    if not pending:
        if out != STDIO and partial.exists():
            os.replace(partial, out)
        log(f"{out} is complete ({len(records) * n} samples); nothing to do")
        return

    target = resolve_device(device)
    if engine == "vllm":
        from r1cli.vllm_engine import VLLMEngine

        generator, tokenizer = VLLMEngine(model, dtype=dtype, seed=seed), load_tokenizer(model)
    elif engine == "hf":
        network, tokenizer = load_model(model, dtype=resolve_dtype(dtype, target))
        generator = HFEngine(network.to(target), tokenizer, batch_size=batch_size)
    else:
        raise UserError(f"--engine {engine!r} is not one of: hf, vllm")
    options = SamplingOptions(temperature, top_p, top_k, max_new_tokens, tuple(stop or ()), seed)
    texts = [format_prompt(record["prompt"], tokenizer, template, system) for record, _ in pending]

    if out != STDIO:
        partial.parent.mkdir(parents=True, exist_ok=True)
    sink = sys.stdout if out == STDIO else open(partial, "a", encoding="utf-8")  # noqa: SIM115
    prompts_per_batch = max(1, batch_size // n)
    tokens, started = 0, time.time()
    log(f"sample: {len(pending)} prompts x up to {n} samples ({sum(len(m) for _, m in pending)} completions) with {engine}")
    with progress_bar() as bar:
        task = bar.add_task("sample", total=len(pending), status="")
        for start in range(0, len(pending), prompts_per_batch):
            chunk = pending[start : start + prompts_per_batch]
            batch_options = SamplingOptions(**{**options.__dict__, "seed": seed + start})
            for (record, missing), completions in zip(chunk, generator.generate(texts[start : start + len(chunk)], batch_options, n)):
                for k, completion in zip(missing, completions):
                    sink.write(dumps(sample_record(record, k, completion)) + "\n")
                    tokens += len(completion.token_ids)
            sink.flush()
            bar.update(task, advance=len(chunk), status=f"{tokens / (time.time() - started):.0f} tokens/s")
    if sink is not sys.stdout:
        sink.close()
        os.replace(partial, out)
    log(f"wrote {out} ({tokens} completion tokens in {time.time() - started:.0f} s)")


def sample_record(record: Record, k: int, completion) -> dict:
    reasoning, response = split_completion(completion.text)
    return {
        **record,
        "sample": k,
        "completion": completion.text,
        "reasoning": reasoning,
        "response": response,
        "finish_reason": completion.finish_reason,
        "completion_tokens": len(completion.token_ids),
    }


def unique_ids(records: list[Record]) -> list[Record]:
    """Each id once: samples are keyed by (id, sample), so a repeated prompt is sampled once."""
    seen: dict[str, Record] = {}
    for record in records:
        seen.setdefault(record["id"], record)
    if len(seen) < len(records):
        warn(f"{len(records) - len(seen)} prompt(s) repeat an earlier id (or prompt) and are sampled once")
    return list(seen.values())


def parse_shard(shard: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in shard.split("/"))
    except ValueError:
        raise UserError(f"--shard {shard!r}: expected I/N, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise UserError(f"--shard {shard!r}: need 0 <= I < N")
    return index, count


def _resume(out: Path, partial: Path) -> set[tuple[str, int]]:
    """The (id, sample) pairs already written. A finished OUT is reopened as the partial file;
    a line cut by a kill is dropped."""
    if out.exists():
        os.replace(out, partial)
    if not partial.exists():
        return set()
    data = partial.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        partial.write_bytes(data)
    done = set()
    for line in data.decode("utf-8").splitlines():
        record = json.loads(line)
        done.add((str(record["id"]), int(record["sample"])))
    return done
