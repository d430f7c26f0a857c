"""Seeds, derived from the config's one `seed` and a purpose, and the opt-in deterministic mode.

Every random stream of a run (initialisation, data order, augmentation, per-rank streams, subsets,
analyses' random choices) has its own seed, a pure function of its parts, so streams never
interfere and a resumed run draws exactly what the uninterrupted one drew.
"""

from __future__ import annotations

import hashlib
import os
import random
from typing import Literal

import numpy as np
import torch

# Two hashes, so that every existing run keeps its data order and augmentation bit for bit:
# `sha256` gave the run-level seeds (init, data order, augmentation, ranks, analyses' draws) from
# "seed:purpose"; `blake2b` the finer-grained ones (each training item's augmentation, the
# synthetic data, subsets) from any number of parts.
Scheme = Literal["blake2b", "sha256"]


def derive_seed(*parts: int | str, scheme: Scheme = "blake2b") -> int:
    """A seed that is a pure, well-mixed function of `parts`, the same in every process.

    `blake2b`: 63 bits; integer-like parts (numpy or tensor scalars) hash as the Python int of the
    same value. `sha256`: 31 bits of the parts joined by ":" (`derive_seed(seed, "init",
    scheme="sha256")`).
    """
    canonical = tuple(part if isinstance(part, str) else int(part) for part in parts)
    if scheme == "sha256":
        text = ":".join(str(part) for part in canonical)
        return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % 2**31
    digest = hashlib.blake2b(repr(canonical).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def configure_determinism(deterministic: bool) -> None:
    """Deterministic kernels everywhere (slower on CUDA); cuDNN autotuning otherwise."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.benchmark = not deterministic
