"""A training run's identity, and starting, finishing, extending or resuming it in its run directory.

A finished run asked for more steps is extended when its steps so far are those the longer run
would have taken (GRPO with a constant learning rate after a warmup counted in steps: the total
shapes nothing): its total is then left out of its identity, and it continues from its newest
resumable checkpoint. Such a run saves one at its last step too, so extending it replays nothing;
a run without one (`--save-every 0`, or made by an older r1) replays the steps after its newest
checkpoint, which an uninterrupted run would have taken alike. A run whose schedule depends on
its total (SFT's cosine decay) is refused in one line saying how to continue: a new run from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from r1cli.console import log
from r1cli.data import outputs as runs
from r1cli.data.records import input_sha256
from r1cli.errors import UserError
from r1cli.options import DataOptions
from r1cli.train import checkpoint as ckpt

# Options naming files: what they hold is compared (by content), not how they are spelled.
PATH_OPTIONS = ("model", "data", "prompts", "out", "eval_data", "teacher", "student", "traces")
# A total that an extendable run leaves out of its identity; runs recorded with it still match.
EXTENDABLE_TOTALS = ("steps",)


@dataclass(frozen=True)
class Length:
    """How long a run is asked to be. OPTIONS set it; STEPS is the total asked of a run that may be
    extended (None: it may not), REFUSAL the one line saying why not and how to continue instead."""

    options: tuple[str, ...]
    steps: int | None = None
    refusal: str = ""


def fixed_length(options: tuple[str, ...], schedule: str, warmup: float, continue_with: str) -> Length:
    """The Length of a run that a finished run of fewer steps cannot become, and the line saying so."""
    if schedule != "constant":
        why = f"its {schedule} learning-rate schedule is laid out over the total steps"
    elif 0 < warmup < 1:
        why = f"its warmup (--warmup {warmup:g}) is a share of the total steps"
    else:
        why = "it keeps no resumable state at its end"
    return Length(options, None, f"a run of another length cannot continue it ({why}); continue from it as a new run instead: {continue_with}")


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
    runs.refuse_other_identity(str(out), identity, comparable(saved, identity), "use --overwrite to start over, or another --out")


def comparable(saved: dict, identity: runs.Identity) -> runs.Identity:
    """SAVED as IDENTITY is compared with it: a total the current run leaves out (it may be extended)
    is left out of a saved identity that recorded it too."""
    saved_identity = runs.Identity.from_json(saved)
    for name in EXTENDABLE_TOTALS:
        if name not in identity.options:
            saved_identity.options.pop(name, None)
    return saved_identity


def already_finished(out: Path, identity: runs.Identity, *, overwrite: bool, inputs: list[str], length: Length | None = None) -> bool:
    """Check OUT may hold this run (the caller holds its lock); start over with --overwrite
    (removing only what r1 wrote), report a finished run with the same identity as done, or
    (with LENGTH) go on with a finished run asked for more steps, or refuse it saying why."""
    runs.check_run_directory(out, inputs, overwrite=overwrite)
    if overwrite:
        runs.clear_run_directory(out)
    if not ckpt.is_complete(out):
        return False
    lineage = ckpt.read_lineage(out)
    saved, done = lineage.get("identity"), lineage.get("step")
    if length is not None and length.steps is None and saved is not None and only_length_differs(comparable(saved, identity), identity, length):
        raise UserError(f"{out} holds a finished run of {done} steps; {length.refusal}")
    refuse_other_run(out, saved, identity)
    if length is not None and length.steps is not None and length.steps != done:
        if length.steps < done:
            raise UserError(f"{out} holds a finished run of {done} steps, more than --steps {length.steps}: "
                            "use --overwrite to start over, or another --out")
        log(f"{out}: extending the finished run of {done} steps to {length.steps}")
        return False
    log(f"{out} is already complete; nothing to do")
    return True


def only_length_differs(saved: runs.Identity, identity: runs.Identity, length: Length) -> bool:
    """Whether SAVED and IDENTITY differ, and only in the options that set the run's length."""
    differing = {name for name in set(saved.options) | set(identity.options) if saved.options.get(name) != identity.options.get(name)}
    return bool(differing) and differing <= set(length.options) and saved.models == identity.models and saved.inputs == identity.inputs


def resume(out: Path, network, optimizer, scheduler, identity: runs.Identity) -> tuple[dict | None, Path | None]:
    """Restore the newest intermediate checkpoint of OUT, if any: (its progress, its directory)."""
    latest = ckpt.latest_checkpoint(out)
    if latest is None:
        return None, None
    refuse_other_run(out, ckpt.read_json_file(latest / ckpt.STATE / "progress.json").get("identity"), identity)
    progress = ckpt.load_training_state(latest, network, optimizer, scheduler)
    log(f"resuming from {latest} (step {progress['step']})")
    return progress, latest
