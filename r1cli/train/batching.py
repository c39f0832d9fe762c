"""Token-budget micro-batches: how many sequences go through the model at once.

A micro-batch is bounded by its padded tokens (rows x its widest row), not by a row count, so
one long completion does not make every micro-batch as wide as itself, and short ones share a
pass. Which rows share a micro-batch changes only the memory: the loss is normalised over the
whole optimizer update, so the update is the same (up to float summation order).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from r1cli.modeling import hf_base

MIN_TOKENS = 1024
SHARE = 0.6  # of the memory left after weights, gradients and optimizer state, for activations


def within_budget(indices: list[int], padded_size: Callable[[list[int]], int], length: Callable[[int], int],
                  max_tokens: int | None) -> list[list[int]]:
    """INDICES as one micro-batch when PADDED_SIZE(indices) fits MAX_TOKENS (their order kept),
    else as runs of length-sorted indices that each fit; one longer than the budget alone."""
    if max_tokens is None or not indices or padded_size(indices) <= max_tokens:
        return [indices] if indices else []
    batches, current = [], []
    for index in sorted(indices, key=length):
        if current and padded_size([*current, index]) > max_tokens:
            batches.append(current)
            current = []
        current.append(index)
    return [*batches, current]


def token_budget(requested: int | None, network, device: torch.device, dtype: torch.dtype, checkpointing: bool) -> int:
    """--max-tokens-per-batch, or where it is not given an estimate from the model's shape and the
    memory free now (call it once the rollout engine has taken its share): the activations a
    token keeps for the backward pass, ~(10 H + 4 I) compute-dtype elements and 2 H residual
    ones per layer (a residual H per layer and one layer's worth with gradient checkpointing), into SHARE of what weights, gradients and
    AdamW's moments leave. Rounded down to a power of two, so that it does not drift between runs."""
    if requested:
        return requested
    config = hf_base(network).config
    hidden = config.hidden_size
    intermediate = getattr(config, "intermediate_size", None) or 4 * hidden
    layers = config.num_hidden_layers
    element = torch.finfo(dtype).bits // 8
    residual = next(network.parameters()).element_size()  # the residual stream is in the weights' dtype (fp32 masters)
    per_layer = (10 * hidden + 4 * intermediate) * element + 2 * hidden * residual
    per_token = layers * hidden * residual + per_layer if checkpointing else layers * per_layer
    trainable = sum(p.numel() for p in network.parameters() if p.requires_grad)
    available = free_memory(device) - 12 * trainable  # fp32 gradients and two AdamW moments, allocated at the first step
    tokens = max(MIN_TOKENS, int(SHARE * max(available, 0) / per_token))
    return 1 << (tokens.bit_length() - 1)


def free_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
