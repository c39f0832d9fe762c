"""`r1 toy data` and `r1 toy base`: the toy world's files and its pre-trained base models."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

from r1cli.console import log
from r1cli.data.outputs import check_run_directory
from r1cli.data.records import file_sha256, write_json, write_records
from r1cli.errors import UserError
from r1cli.options import ComputeOptions, RunOptions, SFTOptimizerOptions
from r1cli.recipes.sft import SFTConfig, run_sft
from r1cli.toy.tokenizer import ASSETS
from r1cli.toy.world import make_world

app = typer.Typer(help="The toy world: data and tiny base models that train on a laptop CPU.", no_args_is_help=True)

SIZES = ("base", "student")
# The student is smaller and sees half the tokens, so it starts weaker than the base, as a small
# distillation student does; the smaller model trains stably at twice the learning rate.
RECIPES = {"base": {"steps": 540, "lr": 3e-3}, "student": {"steps": 270, "lr": 6e-3}}


@app.command("data")
def data(
    out_dir: Annotated[Path, typer.Argument(help="Directory for the toy corpora.")],
    seed: Annotated[int, typer.Option(help="Seed of the world.")] = 0,
) -> None:
    """Write pretrain.jsonl, cold_start.jsonl, rl_prompts.jsonl, eval.jsonl and general.jsonl,
    then manifest.json (seed, counts, sha256 of each file) last, as the mark of a complete world."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: is a file; give a directory for the toy corpora")
    manifest: dict = {"seed": seed, "files": {}}
    # Written beside OUT_DIR first and moved in whole, so a failed run (a full disk) leaves no half world.
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        for stem, records in make_world(seed).items():
            count = write_records(staging / f"{stem}.jsonl", records)
            manifest["files"][f"{stem}.jsonl"] = {"records": count, "sha256": file_sha256(staging / f"{stem}.jsonl")}
        write_json(staging / "manifest.json", manifest)
        out_dir.mkdir(exist_ok=True)
        (out_dir / "manifest.json").unlink(missing_ok=True)  # an older world's mark goes before its files are replaced
        for name in [*manifest["files"], "manifest.json"]:
            os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for name, entry in manifest["files"].items():
        log(f"wrote {out_dir / name} ({entry['records']} records)")


@app.command("base")
def base(
    out_ckpt: Annotated[Path, typer.Argument(help="Checkpoint directory to write.")],
    size: Annotated[str, typer.Option(help="base (about 1M parameters) | student (smaller).")] = "base",
    data: Annotated[Path | None, typer.Option(help="pretrain.jsonl from `r1 toy data`. [default: generated from --seed into OUT_CKPT/pretrain.jsonl]")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps (as `r1 sft --max-steps`). [default: 540 for base, 270 for student]", min=1)] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate. [default: 3e-3 for base, 6e-3 for student]")] = None,
    seed: Annotated[int, typer.Option(help="Seed of initialisation, data order and (without --data) the world.")] = 0,
    # The older spelling, hidden: --steps is `r1 grpo`'s GRPO steps, each of several optimizer steps.
    steps: Annotated[int | None, typer.Option("--steps", hidden=True, min=1)] = None,
) -> None:
    """Pre-train a toy base from its config with the SFT recipe (text records, packed)."""
    max_steps = max_steps or steps
    if size not in SIZES:
        raise UserError(f"--size {size!r} is not one of: {', '.join(SIZES)}")
    started = time.time()
    if data is None:  # a fixed path, so that rerunning after a kill resumes the same run
        data = out_ckpt / "pretrain.jsonl"
        if not data.exists():  # checked before the corpus goes in: a file or a foreign directory is refused untouched
            check_run_directory(out_ckpt, [], overwrite=False)
            write_records(data, make_world(seed)["pretrain"])
    run_sft(SFTConfig(
        model=str(ASSETS / f"{size}.json"), data=(str(data),), out=str(out_ckpt), max_steps=max_steps or RECIPES[size]["steps"],
        batch_size=12, max_length=256, packing=True,
        optim=SFTOptimizerOptions(lr=lr or RECIPES[size]["lr"], warmup=20, weight_decay=0.01),
        compute=ComputeOptions(), run=RunOptions(seed=seed, save_every=100),
    ))
    log(f"toy base ({size}) took {time.time() - started:.0f} s")
