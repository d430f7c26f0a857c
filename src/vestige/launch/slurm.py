"""SLURM tasks as DDP ranks: one task per GPU, started by `srun` (or by submitit, which uses it).

torchrun announces a rank through RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT, the
variables `torch.distributed`'s env:// initialisation reads. SLURM announces the same facts under
its own names; `export_torch_environment` copies them over, so one code path serves both.
"""

from __future__ import annotations

import os
import random

# A port per job, the same on every task of it, in a range clear of the usual services.
_PORTS = (20000, 60000)


def in_multi_task_step() -> bool:
    """Inside `srun` (a job step, not the batch script) with more than one task."""
    return "SLURM_STEP_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1


def export_torch_environment() -> None:
    """Set env:// rendezvous variables from SLURM's, unless a launcher (torchrun) already did.

    The first node of the job hosts the rendezvous; the port is drawn from the job id, so every
    task of a job agrees on it and two jobs sharing a node do not collide (as submitit's
    TorchDistributedEnvironment does; that class needs submitit's own job environment, where
    this also serves a plain `srun vestige-run ...`).
    """
    if "RANK" in os.environ or not in_multi_task_step():
        return
    from submitit.slurm.slurm import SlurmJobEnvironment  # only here: every start pays its import

    job = SlurmJobEnvironment()
    os.environ.update(
        MASTER_ADDR=job.hostnames[0],
        MASTER_PORT=os.environ.get("MASTER_PORT", str(random.Random(job.job_id).randint(*_PORTS))),
        RANK=str(job.global_rank),
        WORLD_SIZE=str(job.num_tasks),
        LOCAL_RANK=str(job.local_rank),
    )
