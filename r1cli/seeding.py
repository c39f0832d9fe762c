"""Every random stream of a run, derived from `--seed` and the stream's name.

A stream named by what it is for (("sample", prompt id, sample index), ("rollout", step, ...))
does not depend on what else the run did before it, so a resumed run draws exactly what an
uninterrupted one would have, and two streams never share a seed by arithmetic accident.
"""

from __future__ import annotations

import hashlib
import json
import random

import torch

SEED_BITS = 63  # fits a signed 64-bit integer: torch generators and int64 tensors take it


def derive_seed(seed: int, *names: object) -> int:
    """A 63-bit seed for the stream NAMES of a run seeded with SEED (a hash of both)."""
    text = json.dumps([seed, *names], ensure_ascii=False, default=str)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") >> (64 - SEED_BITS)


def seed_everything(seed: int) -> None:
    """Python's and torch's global generators (model initialisation, dropout)."""
    random.seed(seed)
    torch.manual_seed(seed)


def torch_generator(seed: int, *names: object, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(derive_seed(seed, *names))


def python_random(seed: int, *names: object) -> random.Random:
    return random.Random(derive_seed(seed, *names))
