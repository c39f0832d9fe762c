"""A training run's identity, and starting, finishing or resuming it in its run directory."""

from __future__ import annotations

import json
from pathlib import Path

from r1cli.console import log
from r1cli.data import outputs as runs
from r1cli.data.records import input_sha256
from r1cli.errors import UserError
from r1cli.options import DataOptions
from r1cli.train import checkpoint as ckpt

# Options naming files: what they hold is compared (by content), not how they are spelled.
PATH_OPTIONS = ("model", "data", "prompts", "out", "eval_data", "teacher", "student", "traces")


def training_identity(options: dict, *, models: dict[str, str], inputs: dict[str, str], may_change: tuple[str, ...],
                      source: DataOptions | None = None) -> runs.Identity:
    """What a training run's result depends on: its models' contents, its inputs' bytes (of a
    dataset input, SOURCE's split of it), and the options other than paths and those that may
    change between a run and its resumption."""
    return runs.Identity(
        models={role: runs.model_fingerprint(model) for role, model in models.items()},
        inputs={role: input_sha256(path, source) for role, path in inputs.items()},
        # as r1.json holds them (a tuple reads back as a list)
        options=json.loads(json.dumps({k: v for k, v in options.items() if k not in may_change and k not in PATH_OPTIONS})),
    )


def refuse_other_run(out: Path, saved: dict | None, identity: runs.Identity) -> None:
    if saved is None:
        raise UserError(f"{out} holds a run of an older r1 that did not record what it depends on: use --overwrite or another --out")
    runs.refuse_other_identity(str(out), identity, runs.Identity.from_json(saved), "use --overwrite to start over, or another --out")


def already_finished(out: Path, identity: runs.Identity, *, overwrite: bool, inputs: list[str]) -> bool:
    """Check OUT may hold this run (the caller holds its lock); start over with --overwrite
    (removing only what r1 wrote), or report a finished run with the same identity as done."""
    runs.check_run_directory(out, inputs, overwrite=overwrite)
    if overwrite:
        runs.clear_run_directory(out)
    if not ckpt.is_complete(out):
        return False
    refuse_other_run(out, ckpt.read_lineage(out).get("identity"), identity)
    log(f"{out} is already complete; nothing to do")
    return True


def resume(out: Path, network, optimizer, scheduler, identity: runs.Identity) -> tuple[dict | None, Path | None]:
    """Restore the newest intermediate checkpoint of OUT, if any: (its progress, its directory)."""
    latest = ckpt.latest_checkpoint(out)
    if latest is None:
        return None, None
    refuse_other_run(out, ckpt.read_json_file(latest / ckpt.STATE / "progress.json").get("identity"), identity)
    progress = ckpt.load_training_state(latest, network, optimizer, scheduler)
    log(f"resuming from {latest} (step {progress['step']})")
    return progress, latest
