"""Numerical precision in one place: the training's bf16 autocast, TF32 for fp32 training on
GPUs, and the exact fp32 that measurements need.

Published recipes train in fp32 (Ranadive et al.'s and Leavitt & Morcos' code: no AMP); on
Ampere and later GPUs PyTorch's fp32 then runs convolutions, and with `allow_tf32` matmuls, in
TF32. Measurements such as the class selectivity index are compared unit by unit and ranked
(ablation), so they run in exact fp32 whatever the training precision: bf16 autocast moves
per-unit SI by up to 1e-2, TF32 by about 1e-3.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch


def autocast(device: torch.device, bf16: bool) -> AbstractContextManager:
    """bf16 autocast on `device` while inside, or nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def allow_tf32_matmuls() -> None:
    """fp32 training on a GPU: TF32 matmuls and convolutions, as the published fp32 runs had."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True


@contextmanager
def full_precision() -> Iterator[None]:
    """Exact fp32 matmuls and convolutions (no TF32) while inside; the flags are restored after."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
