"""Several processes under torchrun: the process group, FSDP2 sharding, and the reductions.

Without torchrun (no WORLD_SIZE in the environment, or 1) nothing here creates a process group
and every helper is the identity, so one process trains exactly as it always has.

Under `torchrun --nproc_per_node N -m r1cli sft ...` (or `grpo`) each process joins a group (gloo
on CPU, nccl on CUDA), the model is sharded with `fully_shard` per decoder layer and then the root
(the embedding, final norm and head, tied or not, are the root's), and each rank trains on its
share of every step's rows (grpo: of its prompts, whose completions it generates with a whole
copy of the weights of its own). Rank 0 alone writes the run directory and prints.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from r1cli.console import silence
from r1cli.errors import UserError
from r1cli.modeling import hf_base

SCORING_METHOD = "r1_scored_forward"  # the root's method that scoring runs inside (see `in_root_forward`)


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """TENSOR summed over the ranks (in place where distributed)."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def agree(self, value: object) -> object:
        """Rank 0's VALUE (a picklable object) on every rank."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def main_only(self, context):
        """CONTEXT on rank 0 (the run directory's lock, say); nothing elsewhere."""
        return context if self.is_main else contextlib.nullcontext()

    def gather(self, value: object) -> list:
        """Every rank's VALUE (a picklable object), in rank order (one process: [VALUE])."""
        if not self.distributed:
            return [value]
        values: list = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values


_WORLD: World | None = None


def world() -> World:
    """This process's place: from torchrun's environment, joining the process group the first time."""
    global _WORLD
    if _WORLD is not None:
        return _WORLD
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        _WORLD = World()
        return _WORLD
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    _WORLD = World(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local)
    silence(_WORLD.rank)
    return _WORLD


def device_for(world_: World, requested: torch.device) -> torch.device:
    """Each rank's own GPU under torchrun (cuda:LOCAL_RANK); the CPU stays the CPU."""
    if world_.distributed and requested.type == "cuda":
        return torch.device("cuda", world_.local_rank)
    return requested


def shard_model(network: torch.nn.Module, compute_dtype: torch.dtype) -> torch.nn.Module:
    """Shard NETWORK with FSDP2: each decoder layer, then the root. Parameters are gathered in
    COMPUTE_DTYPE (bf16 on GPU) and gradients reduced in fp32; the optimizer holds fp32 shards."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    policy = MixedPrecisionPolicy(param_dtype=None if compute_dtype == torch.float32 else compute_dtype, reduce_dtype=torch.float32)
    layers = decoder_layers(network)
    for layer in layers:
        fully_shard(layer, mp_policy=policy)
    fully_shard(network, mp_policy=policy)
    # Summed, not averaged, over the ranks: each rank's loss is already divided by the step's
    # global token count, so the sum is one process's gradient of the same global batch.
    for module in [*layers, network]:
        module.set_gradient_divide_factor(1.0)
        module.set_force_sum_reduction_for_comms(True)  # gloo has no pre-multiplied sum
    # Scoring calls the decoder and uses the head's weight directly, not the root's forward: run it
    # inside a root method FSDP treats as a forward, so the root's parameters (embedding, norm,
    # head) are gathered for it and their gradients reduced after it.
    setattr(network, SCORING_METHOD, _call.__get__(network))
    register_fsdp_forward_method(network, SCORING_METHOD)
    return network


def _call(self, function, *args, **kwargs):
    return function(*args, **kwargs)


def in_root_forward(network, function, *args, **kwargs):
    """FUNCTION(*ARGS) inside NETWORK's root forward where it is sharded; a plain call otherwise."""
    method = getattr(network, SCORING_METHOD, None)
    return function(*args, **kwargs) if method is None else method(function, *args, **kwargs)


def decoder_layers(network) -> list[torch.nn.Module]:
    model = hf_base(network)
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else getattr(model, model.base_model_prefix)
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise UserError(f"{type(model).__name__}: no decoder layers found to shard across processes")
    return list(layers)


def gradient_sync(network, on: bool) -> None:
    """Reduce gradients after the next backward pass (the last micro-batch of a step) or not."""
    if hasattr(network, "set_requires_gradient_sync"):
        network.set_requires_gradient_sync(on)


def full_value(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's whole value (clip_grad_norm_ over sharded gradients returns one); a tensor as is."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def full_state_dict(network) -> dict[str, torch.Tensor]:
    """NETWORK's whole state dict on the CPU (gathered from the shards: a collective, every rank calls it)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(network, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def is_sharded(network) -> bool:
    return hasattr(network, SCORING_METHOD)


# ---------------------------------------------------------------- agreeing before a collective
# A rank that raises stops; the others would wait at their next collective until torchrun ends
# them. Where an error can depend on what a rank read or did, the ranks agree on it first, so
# every rank raises the same one-line error (rank 0 says it; torchrun then ends the others).
# These exchanges are where ranks wait for each other's work (the slowest rank's share of the
# sampling, rank 0's filtering): they go through a gloo group of their own, whose timeout is
# WAIT_TIMEOUT, not the default group's (NCCL's is 10 minutes).

WAIT_TIMEOUT = timedelta(hours=24)
_WAITING_GROUP: list = []


def _waiting_group():
    """The gloo group of the exchanges below, made at the first (every rank makes it there: each
    exchange is a collective, called by every rank in the same order)."""
    if not _WAITING_GROUP:
        _WAITING_GROUP.append(dist.new_group(backend="gloo", timeout=WAIT_TIMEOUT))
    return _WAITING_GROUP[0]


def every_rank(world_: World, value: object) -> list:
    """Every rank's VALUE (a picklable object), in rank order (one process: [VALUE])."""
    if not world_.distributed:
        return [value]
    values: list = [None] * world_.world_size
    dist.all_gather_object(values, value, group=_waiting_group())
    return values


def checked_everywhere(world_: World, function, *args, **kwargs):
    """FUNCTION(*ARGS) on every rank, its result. If it raised a UserError on any rank, every rank
    raises the lowest such rank's (a collective, so none is left waiting for a rank that stopped)."""
    if not world_.distributed:
        return function(*args, **kwargs)
    try:
        result, failure = function(*args, **kwargs), None
    except UserError as error:
        result, failure = None, str(error)
    failures = [message for message in every_rank(world_, failure) if message is not None]
    if failures:
        raise UserError(failures[0])
    return result


def on_main(world_: World, function, *args, **kwargs):
    """FUNCTION(*ARGS) on rank 0 alone (what writes a shared file), its result on every rank; the
    others wait for it, and its UserError is raised on every rank."""
    if not world_.distributed:
        return function(*args, **kwargs)
    outcome: tuple = ("done", None)
    if world_.is_main:
        try:
            outcome = ("done", function(*args, **kwargs))
        except UserError as error:
            outcome = ("error", str(error))
        except BaseException:
            _from_main(("failed", None))  # the others stop too; rank 0's own error says why
            raise
    kind, value = _from_main(outcome)
    if kind == "error":
        raise UserError(value)
    if kind == "failed":
        raise UserError("stopped: rank 0 failed")
    return value


def _from_main(value: object) -> object:
    box = [value]
    dist.broadcast_object_list(box, src=0, group=_waiting_group())
    return box[0]


@torch.no_grad()
def copy_whole_weights(sharded, whole) -> None:
    """SHARDED's parameters into WHOLE's of the same names (an unsharded copy of the model), each
    gathered whole in turn: a collective per parameter, every rank in the same order."""
    targets = dict(whole.named_parameters())
    for name, parameter in sharded.named_parameters():
        targets[name].copy_(full_value(parameter))


def load_whole_state(network, state: dict[str, torch.Tensor]) -> None:
    """Whole tensors by name (STATE, which may lack some) into NETWORK: where it is sharded, each
    rank keeps its shards of them (every rank holds the whole STATE)."""
    if not is_sharded(network):
        network.load_state_dict(state, strict=False)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(network, state, options=StateDictOptions(full_state_dict=True, strict=False))


def reshard_root(network) -> None:
    """Put back the root's shards a forward without a backward leaves gathered (FSDP keeps the
    root's whole parameters for the backward it expects): until then `parameters()` lists the
    whole tensors, not the shards the optimizer and the gradients live on. Nothing unsharded."""
    if is_sharded(network):
        network.reshard()
