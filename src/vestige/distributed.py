"""The one seam for distributed concerns: rank, world size, barrier, all-reduce.

Single-process code calls the same functions; they are no-ops when no process group exists, so
nothing else in vestige checks `torch.distributed.is_initialized()` itself.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

from vestige.errors import invalid


def launched_world_size() -> int:
    """World size announced by the launcher (torchrun or SLURM), before any group exists."""
    for key in ("WORLD_SIZE", "SLURM_NTASKS"):
        if key in os.environ and ("SLURM" not in key or "SLURM_STEP_ID" in os.environ):
            return int(os.environ[key])
    return 1


def launched_rank() -> int:
    """This process's rank as announced by the launcher, before any group exists."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", 0)))


def init_process_group(device: torch.device) -> None:
    """Join the group the launcher set up (env:// variables); NCCL on CUDA, gloo on CPU."""
    if dist.is_initialized() or launched_world_size() == 1:
        return
    if device.type == "cuda":
        # bind this rank to its GPU first, so NCCL never guesses a device (barriers on GPU 0)
        torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl", timeout=timedelta(minutes=30), device_id=device)
    else:
        dist.init_process_group(backend="gloo", timeout=timedelta(minutes=30))


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", 0)))


def is_main() -> bool:
    """Rank 0: the only process that writes files.

    Before the group exists the launcher's rank decides, so that code run before joining (taking
    the run's lock, writing run.json) is done by rank 0 alone, not by every rank.
    """
    return (rank() if dist.is_initialized() else launched_rank()) == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks in place (and return it); identity in a single process."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics) in place.

    Each rank updates its buffers from its own shard during training, and DDP only overwrites
    them at the start of the next training forward, so without this an evaluation between steps
    would measure a slightly different network on each rank, none of them the saved one.
    """
    if dist.is_initialized():
        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=0)


def broadcast_object(obj: object) -> object:
    """Rank 0's value of a picklable object, on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj: object) -> list[object]:
    """Every rank's value of a picklable object, in rank order, on every rank."""
    if not dist.is_initialized():
        return [obj]
    gathered: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def select_device(name: str) -> torch.device:
    """`auto`: CUDA if there is one, else the CPU; `cuda` without an index: this rank's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", local_rank() % torch.cuda.device_count())
    return torch.device(name)


def check_device(name: str, here: bool = True) -> None:
    """One-line ConfigError unless `name` is auto, cpu, cuda or cuda:N; with `here` (the command
    runs on this machine, not on a cluster node it submits to), a CUDA device must exist."""
    if name != "auto" and not str(name).startswith(("cpu", "cuda")):
        raise invalid("device", name, "choose auto, cpu, cuda or cuda:N")
    if not here or not str(name).startswith("cuda"):
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise invalid("device", name, "this machine has no CUDA device; use device=cpu or auto")
    index = str(name).partition(":")[2]
    if index and (not index.isdigit() or int(index) >= count):
        raise invalid("device", name, f"this machine has cuda:0 to cuda:{count - 1}")
