"""`r1 distill`: a teacher's correct traces taught to a student, as sample -> filter -> sft in one run.

Each stage leaves its file in --out (traces.jsonl, kept.jsonl, then the student checkpoint), so a
rerun resumes at the stage that did not finish and the traces stay there to be read.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated

import typer

from r1cli import runs
from r1cli.console import log, warn
from r1cli.errors import UserError
from r1cli.filter import filter_samples, parse_per_prompt, parse_thresholds
from r1cli.modeling import check_loadable
from r1cli.records import check_sample_fields, read_json_file, read_records
from r1cli.rewards import parse_rewards
from r1cli.sample import SampleJob, load_prompts, run_sample
from r1cli.sft import sft, train
from r1cli.teacher import Teacher, check_shared_tokenizer

SFT_DEFAULTS = {name: p.default for name, p in inspect.signature(sft).parameters.items() if p.default is not inspect.Parameter.empty}


def distill(
    teacher: Annotated[str, typer.Argument(help="Teacher checkpoint: writes the traces (and, with --kd-weight, gives the KL target).")],
    student: Annotated[str, typer.Argument(help="Student checkpoint (or a model config .json to initialise randomly).")],
    out: Annotated[Path, typer.Option("--out", help="Run directory: traces.jsonl, kept.jsonl, then the student checkpoint.")],
    prompts: Annotated[str | None, typer.Argument(help="Prompt records with gold answers (JSONL, JSON or Parquet). [not used with --traces]")] = None,
    n: Annotated[int, typer.Option("--n", help="Teacher samples per prompt.", min=1)] = 4,
    traces: Annotated[str | None, typer.Option(help="Existing sample records (from any generator): skip sampling and distil from these.")] = None,
    temperature: Annotated[float, typer.Option(help="Teacher sampling temperature.", min=0.0)] = 0.6,
    top_p: Annotated[float, typer.Option(help="Teacher nucleus sampling mass; 1 = off.")] = 0.95,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens per trace at most.", min=1)] = 1024,
    prompt_template: Annotated[str, typer.Option("--template", help="The teacher's prompt template: chat | r1-zero. The student trains on chat records.")] = "chat",
    engine: Annotated[str, typer.Option(help="Teacher's generation engine: hf (built in) | vllm (if installed).")] = "hf",
    sample_batch_size: Annotated[int, typer.Option(help="Sequences the teacher generates together.", min=1)] = 32,
    reward: Annotated[list[str] | None, typer.Option("--reward", help="filter: reward to score with, NAME[=WEIGHT] (repeatable). [default: accuracy]")] = None,
    min_score: Annotated[list[str] | None, typer.Option("--min", help="filter: keep traces with NAME >= VALUE (repeatable). [default: accuracy=1]")] = None,
    require_format: Annotated[bool, typer.Option(help="filter: keep only <think>…</think> followed by a non-empty response.")] = True,
    one_language: Annotated[bool, typer.Option(help="filter: drop reasoning that mixes languages.")] = False,
    per_prompt: Annotated[str, typer.Option(help="filter: all | best | N traces kept per prompt.")] = "all",
    dedupe: Annotated[bool, typer.Option(help="filter: drop exact and near duplicate traces of the same prompt.")] = False,
    kd_weight: Annotated[float, typer.Option(help="Weight of a token-level KL(teacher || student) term added to the SFT loss; 0 = plain SFT. Needs a shared tokenizer.", min=0.0)] = 0.0,
    epochs: Annotated[float, typer.Option(help="sft: passes over the kept traces.", min=0.0)] = 2.0,
    max_steps: Annotated[int | None, typer.Option(help="sft: optimizer steps; overrides --epochs. [default: from --epochs]", min=1)] = None,
    lr: Annotated[float, typer.Option(help="sft: peak learning rate.")] = 1e-5,
    warmup: Annotated[float, typer.Option(help="sft: warmup, below 1 a fraction of the steps, else a step count.")] = 0.03,
    schedule: Annotated[str, typer.Option(help="sft: cosine | linear | constant after warmup.")] = "cosine",
    batch_size: Annotated[int, typer.Option(help="sft: rows per micro-batch.", min=1)] = 8,
    grad_accum: Annotated[int, typer.Option(help="sft: micro-batches per optimizer step.", min=1)] = 1,
    max_length: Annotated[int, typer.Option(help="sft: tokens per example at most (and per packed row).", min=2)] = 2048,
    packing: Annotated[bool, typer.Option(help="sft: pack several examples per row.")] = False,
    lora_r: Annotated[int, typer.Option(help="sft: LoRA rank; 0 trains every weight.", min=0)] = 0,
    gradient_checkpointing: Annotated[bool, typer.Option(help="sft: recompute activations in the backward pass.")] = False,
    weight_decay: Annotated[float, typer.Option(help="sft: AdamW weight decay.")] = 0.0,
    dtype: Annotated[str, typer.Option(help="auto (bf16 on GPU, fp32 on CPU) | bf16 | fp16 | fp32.")] = "auto",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the sampling and of the training.")] = 0,
    save_every: Annotated[int, typer.Option(help="sft: save a resumable checkpoint every N steps; 0 = only at the end.", min=0)] = 100,
    overwrite: Annotated[bool, typer.Option(help="Start over: remove what r1 wrote in --out (traces, kept traces, checkpoints).")] = False,
) -> None:
    """Sample N traces per prompt from TEACHER, keep the correct, well-formatted ones, and fine-tune
    STUDENT on them. Run the same command again to resume at the stage that did not finish."""
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in locals().items()}
    if prompts is None and traces is None:
        raise UserError("give PROMPTS for the teacher to answer, or --traces FILE")
    if prompts is not None and traces is not None:
        warn(f"--traces given: PROMPTS ({prompts}) is not sampled")
    inputs = [teacher, student, *([traces] if traces else [prompts])]
    runs.check_run_directory(out, inputs, overwrite=overwrite)
    # Everything that can be checked is checked before anything is written or sampled.
    job = SampleJob(model=teacher, prompts=prompts, out=str(out / "traces.jsonl"), n=n, temperature=temperature, top_p=top_p,
                    max_new_tokens=max_new_tokens, template=prompt_template, engine=engine,
                    batch_size=sample_batch_size, seed=seed, dtype=dtype, device=device)
    job.check()
    if traces is None:
        load_prompts(job)
    else:
        for record in read_records(traces):
            check_sample_fields(record)
    filter_options = {"reward": reward, "min_score": min_score, "require_format": require_format,
                      "one_language": one_language, "per_prompt": per_prompt, "dedupe": dedupe}
    parse_rewards(reward or ["accuracy"])
    parse_thresholds(min_score or [])
    parse_per_prompt(per_prompt)
    check_loadable(student)
    if kd_weight:
        check_shared_tokenizer(teacher, student)

    created = not out.exists()
    try:
        if overwrite:
            with runs.exclusive(out):
                runs.clear_run_directory(out)
        out.mkdir(parents=True, exist_ok=True)
        if traces is None:
            traces = job.out
            run_sample(job)
        kept = keep_correct(Path(traces), out / "kept.jsonl", filter_options, max_new_tokens)
        # sft's own defaults for what distill does not expose (LoRA alpha, eval data, ...).
        run = {**SFT_DEFAULTS, **options, "model": student, "data": [str(kept)], "out": str(out), "overwrite": False}
        train(run, command="distill", teacher=Teacher(teacher, kd_weight) if kd_weight else None)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # failed before writing anything: leave nothing
        raise


def keep_correct(traces: Path, kept: Path, filter_options: dict, max_length: int) -> Path:
    """Filter TRACES into KEPT, unless KEPT is newer than TRACES and was made with the same options."""
    summary_path = Path(f"{kept}.summary.json")
    if kept.exists() and summary_path.exists() and kept.stat().st_mtime >= traces.stat().st_mtime:
        saved = read_json_file(summary_path).get("options", {})
        if all(saved.get(name) == value for name, value in filter_options.items()):
            log(f"{kept} is up to date with {traces}; not filtering again")
            return kept
    filter_samples(samples=str(traces), out=str(kept), no_code_blocks=False, max_paragraph_chars=None,
                   near_duplicate=0.9, max_length=max_length, overlong_buffer=256, **filter_options)
    summary = read_json_file(summary_path)
    if summary["kept"] == 0:
        raise UserError(f"{traces}: no trace passed the filter (dropped: {summary['dropped']}); sample more (--n) or relax --min")
    return kept
