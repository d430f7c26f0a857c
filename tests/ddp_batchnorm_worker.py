"""Re-estimate a tiny ResNet's BatchNorm statistics in one process, or on each rank under
torchrun, and save them: OUT/one_process.pt, or OUT/rank<N>.pt.

    python -m torch.distributed.run --standalone --nproc_per_node=2 \
        tests/ddp_batchnorm_worker.py OUT
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from vestige import distributed
from vestige.analysis.batchnorm import estimation_batches, recompute_batchnorm_statistics
from vestige.config import DataConfig, ResNetConfig
from vestige.data import unaugmented_training_split
from vestige.models import build_model

CPU = torch.device("cpu")


def main() -> None:
    out = Path(sys.argv[1])
    distributed.init_process_group(CPU)
    torch.manual_seed(0)
    model = build_model(ResNetConfig(width=0.125), 10, 3, 32)
    # 100 images in batches of 16: rank 0 takes 4 batches (the last one of 4 images), rank 1 3
    batches = estimation_batches(unaugmented_training_split(DataConfig()), 100, 16)
    estimated = recompute_batchnorm_statistics(model, batches, CPU)
    running = {k: v for k, v in estimated.state_dict().items() if ".running_" in k}
    world = distributed.world_size()
    torch.save(running, out / (f"rank{distributed.rank()}.pt" if world > 1 else "one_process.pt"))
    distributed.destroy_process_group()


if __name__ == "__main__":
    main()
