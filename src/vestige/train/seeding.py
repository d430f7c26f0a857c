"""Seeds for init, data order and augmentation, all derived from the config's one `seed`,
and the opt-in deterministic mode."""

from __future__ import annotations

import hashlib
import os
import random

import numpy as np
import torch


def derive_seed(seed: int, purpose: str) -> int:
    """An independent 31-bit seed for one purpose ("init", "data", "augment", ...)."""
    return int(hashlib.sha256(f"{seed}:{purpose}".encode()).hexdigest()[:8], 16) % 2**31


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
