"""Checkpoints: a loadable Hugging Face directory, its `r1.json` lineage, and resumable state.

Layout of a run directory OUT (the final checkpoint is OUT itself):

    OUT/config.json, model.safetensors, tokenizer files, generation_config.json   (loadable)
    OUT/r1.json                      lineage; written last, so its presence means "complete"
    OUT/metrics.jsonl                one line per optimizer step
    OUT/checkpoints/step-000100/     intermediate checkpoints, same loadable layout, plus
                     state/          trainable weights (fp32), optimizer, scheduler, RNG, step
                     state/dcp/      under torchrun: weights and optimizer as torch.distributed.checkpoint
                                     shards (any number of processes, one included, loads them)

Each checkpoint is written into a temporary directory and renamed into place, so a directory
that has an `r1.json` is whole.
"""

from __future__ import annotations

import os
import platform
import random
import shutil
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from r1cli import __version__
from r1cli.data.records import describe_input, file_sha256, read_json_file, write_json
from r1cli.errors import UserError
from r1cli.hub import is_hub_name
from r1cli.report.card import REASONING_SAMPLING, card_name, set_reasoning_sampling, write_card
from r1cli.train.distributed import World, full_state_dict, is_sharded

LINEAGE = "r1.json"
STATE = "state"
CHECKPOINTS = "checkpoints"
LIBRARIES = ("torch", "transformers", "peft", "datasets", "math-verify", "accelerate", "vllm")


def is_complete(directory: Path) -> bool:
    return (directory / LINEAGE).is_file()


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "r1": __version__}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def describe_inputs(paths, source=None) -> list[dict]:
    """Each input's path (a hub dataset's name, split and subset) and content sha256, for r1.json."""
    return [describe_input(path, source) for path in paths]


def describe_parent(model: str) -> dict:
    """The parent checkpoint (or config) as lineage: its path and, if r1 made it, its command; and
    `base_model`, the hub model the lineage starts from (the parent itself, or its own base_model)."""
    path = Path(model)
    parent: dict = {"path": str(path.resolve()) if path.exists() else model}
    if path.is_file():
        parent["sha256"] = file_sha256(path)
    elif is_complete(path):
        lineage = read_json_file(path / LINEAGE)
        parent["command"] = lineage.get("command")
        parent["step"] = lineage.get("step")
        parent["base_model"] = (lineage.get("parent") or {}).get("base_model")
    elif not path.exists() and is_hub_name(model):
        parent["base_model"] = model
    return parent


def lineage(command: str, options: dict, *, parent: dict, inputs: list[dict], step: int, metrics: dict, identity: dict | None = None,
            sampling_defaults: dict | None = None) -> dict:
    return {
        "r1_version": __version__,
        "command": command,
        "argv": sys.argv,
        "options": options,
        "parent": parent,
        "inputs": inputs,
        "seed": options.get("seed"),
        "step": step,
        "metrics": metrics,
        "identity": identity,  # what a rerun must match to count as the same run (r1cli.data.outputs.Identity)
        "sampling_defaults": sampling_defaults,  # what generation_config.json sets, and why (r1cli.report.card)
        "libraries": library_versions(),
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


# ---------------------------------------------------------------- writing


def write_loadable(directory: Path, model, tokenizer, save_dtype: torch.dtype, world: World | None = None) -> None:
    """Model weights (in SAVE_DTYPE, safetensors), config, generation config and tokenizer. A
    sharded model's whole weights are gathered on every rank (a collective) and written by rank 0."""
    whole = full_state_dict(model) if is_sharded(model) else model.state_dict()
    if is_sharded(model):  # the gathered copies of a tied weight are separate tensors: keep its first name, as state_dict() does
        names: dict[int, list[str]] = {}
        for name, parameter in model.named_parameters(remove_duplicate=False):
            names.setdefault(id(parameter), []).append(name)
        aliases = {name for group in names.values() for name in group[1:]}
        whole = {name: tensor for name, tensor in whole.items() if name not in aliases}
    if world is not None and not world.is_main:
        return
    state = {name: tensor.detach().to(save_dtype) for name, tensor in whole.items()}
    model.save_pretrained(directory, state_dict=state)
    # save_pretrained records the parameters' dtype (the fp32 masters); record the stored one,
    # so that dtype="auto" loads the weights as they are.
    config = read_json_file(directory / "config.json")
    config["dtype"] = str(save_dtype).removeprefix("torch.")
    write_json(directory / "config.json", config)
    tokenizer.save_pretrained(directory)


def save_training_state(directory: Path, model, optimizer, scheduler, progress: dict) -> None:
    """Everything needed to continue: trainable weights in full precision, optimizer, RNG, position."""
    state_dir = directory / STATE
    state_dir.mkdir(parents=True, exist_ok=True)
    trainable = {name: p.detach().float().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}
    save_file(trainable, state_dir / "trainable.safetensors")
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": {
                "python": random.getstate(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
        },
        state_dir / "optimizer.pt",
    )
    write_json(state_dir / "progress.json", progress)


def save_sharded_state(directory: Path, model, optimizer, scheduler, progress: dict, world: World) -> None:
    """save_training_state for a model sharded over WORLD: weights and optimizer through
    torch.distributed.checkpoint (each rank writes its shards), the rest by rank 0."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    state_dir = directory / STATE
    weights, moments = get_state_dict(model, optimizer)
    dcp.save({"model": weights, "optimizer": moments}, checkpoint_id=str(state_dir / "dcp"))
    if world.is_main:
        torch.save({"scheduler": scheduler.state_dict(), "rng": {"python": random.getstate(), "torch": torch.get_rng_state(),
                                                               "cuda": None}}, state_dir / "optimizer.pt")
        write_json(state_dir / "progress.json", progress)


def load_sharded_state(state_dir: Path, model, optimizer) -> None:
    """Weights and optimizer from torch.distributed.checkpoint shards, resharded to this run's processes."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    weights, moments = get_state_dict(model, optimizer)
    state = {"model": weights, "optimizer": moments}
    try:
        with warnings.catch_warnings():  # one process loading shards is meant, not a process group forgotten
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(state, checkpoint_id=str(state_dir / "dcp"))
    except Exception as error:  # DCP raises CheckpointException, RuntimeError... for missing or foreign shards
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{state_dir / 'dcp'}: cannot be read ({first}); remove that checkpoint or use --overwrite") from None
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def load_training_state(directory: Path, model, optimizer, scheduler) -> dict:
    """Restore what save_training_state (or save_sharded_state) wrote; return the saved progress (step, options...)."""
    state_dir = directory / STATE
    if (state_dir / "dcp").is_dir():
        load_sharded_state(state_dir, model, optimizer)
        return _restore_schedule(state_dir, scheduler)
    try:
        saved = load_file(state_dir / "trainable.safetensors")
    except Exception as error:  # safetensors' own error type for a truncated or corrupt file
        raise UserError(f"{state_dir / 'trainable.safetensors'}: cannot be read ({error}); remove that checkpoint or use --overwrite") from None
    parameters = dict(model.named_parameters())
    missing = sorted(set(saved) ^ {n for n, p in parameters.items() if p.requires_grad})
    if missing:
        raise UserError(f"{directory}: saved state does not match the model (e.g. {missing[0]})")
    if not is_sharded(model):
        with torch.no_grad():
            for name, tensor in saved.items():
                parameters[name].copy_(tensor)
    try:  # tensors, numbers and containers only: a crafted pickle cannot run code here
        bundle = torch.load(state_dir / "optimizer.pt", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError... for a bad file
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{state_dir / 'optimizer.pt'}: not resumable state r1 wrote (only tensors and numbers are loaded: {first}); "
                        "remove that checkpoint or use --overwrite") from None
    if is_sharded(model):  # saved by one process, resumed by several: each rank keeps its shards of the whole tensors
        load_whole_into_shards(model, optimizer, saved, bundle["optimizer"])
    else:
        optimizer.load_state_dict(bundle["optimizer"])
    scheduler.load_state_dict(bundle["scheduler"])
    _restore_rng(bundle)
    return read_json_file(state_dir / "progress.json")


def load_whole_into_shards(model, optimizer, weights: dict[str, torch.Tensor], optimizer_state: dict) -> None:
    """One process's weights and optimizer state into MODEL's shards. The saved optimizer state
    numbers the parameters in its groups' order, which this run's optimizer (built the same way)
    shares: the numbers become the parameters' names, as the full optimizer state dict keys them."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    whole = StateDictOptions(full_state_dict=True, strict=False)  # a tied head is saved under its first name only
    set_model_state_dict(model, weights, options=whole)
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    order = [names[id(parameter)] for group in optimizer.param_groups for parameter in group["params"]]
    named = {"state": {order[int(number)]: value for number, value in optimizer_state["state"].items()},
             "param_groups": [{**group, "params": [order[int(number)] for number in group["params"]]}
                              for group in optimizer_state["param_groups"]]}
    set_optimizer_state_dict(model, optimizer, named, options=whole)


def _restore_schedule(state_dir: Path, scheduler) -> dict:
    bundle = torch.load(state_dir / "optimizer.pt", weights_only=True)
    scheduler.load_state_dict(bundle["scheduler"])
    _restore_rng(bundle)
    return read_json_file(state_dir / "progress.json")


def _restore_rng(bundle: dict) -> None:
    random.setstate(bundle["rng"]["python"])
    torch.set_rng_state(bundle["rng"]["torch"])
    if bundle["rng"]["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(bundle["rng"]["cuda"])


def write_checkpoint(directory: Path, write: Callable[[Path], None], lineage_record: dict, world: World | None = None) -> None:
    """Write a checkpoint atomically: WRITE fills a temporary directory, r1.json goes in last.

    A new directory is renamed into place whole. Into an existing run directory (the final
    checkpoint lands beside metrics.jsonl) the files are moved one by one, config.json and
    r1.json last, so the directory neither loads nor reads as complete before it is. Under
    torchrun every rank of WORLD writes into rank 0's temporary directory; rank 0 moves it once all have.
    """
    world = world or World()
    temporary = directory.parent / f".{directory.name}.tmp-{world.agree(os.getpid())}"
    if world.is_main:
        directory.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir()
    world.barrier()
    try:
        write(temporary)
        world.barrier()  # every rank's shards are in before rank 0 publishes them
        if not world.is_main:
            return
        write_json(temporary / LINEAGE, lineage_record)
        if not directory.exists():
            os.replace(temporary, directory)
            return
        last = {"config.json": 1, LINEAGE: 2}
        for entry in sorted(temporary.iterdir(), key=lambda p: last.get(p.name, 0)):
            target = directory / entry.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(entry, target)
    finally:
        if world.is_main:
            shutil.rmtree(temporary, ignore_errors=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete intermediate checkpoint of a run, if any."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return None
    complete = [p for p in root.glob("step-*") if is_complete(p) and (p / STATE).is_dir()]
    return max(complete, key=lambda p: int(p.name.split("-")[1]), default=None)


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Keep the newest KEEP complete intermediate checkpoints; remove the rest and any leftovers."""
    root = run_dir / CHECKPOINTS
    complete = sorted((p for p in root.glob("step-*") if is_complete(p)), key=lambda p: int(p.name.split("-")[1]))
    kept = set(complete[-keep:])
    for entry in root.iterdir():
        if entry not in kept:
            shutil.rmtree(entry, ignore_errors=True)


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINTS / f"step-{step:06d}"


def read_lineage(directory: Path) -> dict:
    return read_json_file(directory / LINEAGE)


def is_adapter_model(network) -> bool:
    """Whether NETWORK is a peft model (its trained weights are an adapter on a frozen base)."""
    return hasattr(network, "peft_config")


def write_intermediate(directory: Path, network, tokenizer, optimizer, scheduler, progress: dict, save_dtype,
                       extra_state: dict | None = None, world: World | None = None) -> None:
    """An intermediate checkpoint: loadable weights (an adapter model: the adapter) and resumable
    state; EXTRA_STATE tensors (a refreshed reference model, say) go to state/ as safetensors files
    (under torchrun whole tensors, written by rank 0: any number of processes loads them)."""
    if is_sharded(network):
        write_loadable(directory, network, tokenizer, save_dtype, world)
        save_sharded_state(directory, network, optimizer, scheduler, progress, world)
        if world is None or world.is_main:
            for name, tensors in (extra_state or {}).items():
                save_file(tensors, directory / STATE / f"{name}.safetensors")
        return
    if is_adapter_model(network):  # the adapter loads on its base (peft); merging here would cost a model copy per save
        network.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
    else:
        write_loadable(directory, network, tokenizer, save_dtype)
    save_training_state(directory, network, optimizer, scheduler, progress)
    for name, tensors in (extra_state or {}).items():
        save_file(tensors, directory / STATE / f"{name}.safetensors")


def write_final(directory: Path, network, tokenizer, save_dtype, merge: bool = True, world: World | None = None) -> None:
    """The final loadable checkpoint; an adapter model writes adapter/ and the merged model (unless not MERGE)."""
    if not is_adapter_model(network):
        write_loadable(directory, network, tokenizer, save_dtype, world)
        return
    if not merge:
        network.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        return
    network.save_pretrained(directory / "adapter")
    write_loadable(directory, network.merge_and_unload(), tokenizer, save_dtype)


@dataclass
class RunWriter:
    """Writes a training run's checkpoints and lineage: what every one of them records (the
    command, its options, the parent, the inputs, the identity) is fixed when the run starts."""

    out: Path
    command: str
    options: dict  # the run's options, as r1.json records them
    identity: dict
    parent: dict
    inputs: list[dict]
    save_dtype: torch.dtype
    think_format: str | None = None  # why the stage trains the think format (r1cli.report.card), or None
    world: World = World()  # the processes writing it (rank 0 writes all but the sharded state)

    def lineage(self, step: int, metrics: dict) -> dict:
        defaults = {**REASONING_SAMPLING, "reason": self.think_format} if self.think_format else None
        record = lineage(self.command, self.options, parent=self.parent, inputs=self.inputs, step=step, metrics=metrics,
                         identity=self.identity, sampling_defaults=defaults)
        return {**record, "world_size": self.world.world_size}

    def _fill(self, directory: Path, write_model: Callable[[Path], None], record: dict, final: Path) -> None:
        """The loadable model, R1's sampling settings for a think-format model, and the model card
        (of FINAL, the checkpoint's own directory, which DIRECTORY is written for)."""
        write_model(directory)
        if not self.world.is_main:
            return
        if record["sampling_defaults"]:
            set_reasoning_sampling(directory)
        write_card(directory, record, name=card_name(final))

    def save(self, step: int, network, tokenizer, optimizer, scheduler, metrics: dict, *, keep: int,
             progress: dict | None = None, extra_state: dict | None = None) -> None:
        """An intermediate checkpoint at STEP (then only the newest KEEP are kept)."""
        state = {"step": step, "options": self.options, "identity": self.identity, **(progress or {})}
        record, target = self.lineage(step, metrics), checkpoint_dir(self.out, step)
        write_checkpoint(target, lambda directory: self._fill(directory, lambda d: write_intermediate(d, network, tokenizer, optimizer, scheduler,
                                                                                                      state, self.save_dtype, extra_state, self.world),
                                                              record, target), record, self.world)
        if self.world.is_main:
            prune_checkpoints(self.out, keep)
        self.world.barrier()

    def finish(self, step: int, network, tokenizer, metrics: dict, *, merge: bool = True) -> None:
        """The final checkpoint, in OUT itself; its r1.json marks the run complete."""
        record = self.lineage(step, metrics)
        write_checkpoint(self.out, lambda directory: self._fill(directory, lambda d: write_final(d, network, tokenizer, self.save_dtype, merge,
                                                                                                    self.world),
                                                                record, self.out), record, self.world)
        self.world.barrier()
