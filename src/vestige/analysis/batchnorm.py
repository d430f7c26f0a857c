"""BatchNorm statistics re-estimated for a snapshot: `analysis.bn_stats=recompute`.

Why: BatchNorm's running statistics are an exponential average (momentum 0.1) over past batches,
so in the first tens of iterations they lag far behind the weights: a Fashion-MNIST snapshot at
step 20 evaluates at 12% accuracy with its stored statistics and at 66% with re-estimated ones.
Claims 1-3 (docs/science.md §1) are about exactly these snapshots. The paper
measured with the stored statistics (`running`, the default); `recompute` shows what the same
weights do with statistics that match them.

How: on a copy of the network (the snapshot is never touched), every BatchNorm layer sees the
same `analysis.bn_images` training images (no augmentation, a class-stratified subset with a fixed
seed) in batches of the run's training batch size, in train mode (each layer normalises with its
batch's statistics, as in training) and without gradients, in exact fp32. A layer's new running
mean and variance are the mean and the unbiased variance of its input over all those images and
positions (sums of x and x^2 in float64), not an average of per-batch values. Under DDP, rank r
takes batches r, r + W, ... of the same batches and the sums are all-reduced, so every rank gets
the statistics one process would.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import Dataset

from vestige import distributed
from vestige.config import AnalysisConfig
from vestige.data import ImageLoader, image_loader
from vestige.data.subsets import limit_per_class
from vestige.errors import ConfigError
from vestige.precision import full_precision
from vestige.seeding import derive_seed


def bn_label(settings: AnalysisConfig) -> str:
    """How a measurement's BatchNorm statistics were obtained, as results folders name it:
    `running`, `recompute`, or `recompute<N>` for another number of images than the default."""
    if settings.bn_stats == "running":
        return "running"
    default = AnalysisConfig().bn_images
    return "recompute" + (str(settings.bn_images) if settings.bn_images != default else "")


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(module, _BatchNorm) for module in model.modules())


def estimation_batches(
    training_images: Dataset,
    images: int,
    batch_size: int,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
) -> ImageLoader:
    """This rank's share of the batches the statistics are estimated on: a class-stratified
    subset of `images` training images (fixed seed), cut into batches of `batch_size`
    (with data.decode=gpu, decoded on `device`)."""
    subset = limit_per_class(training_images, images, derive_seed("bn statistics"))
    starts = range(0, len(subset), batch_size)
    batches = [list(range(s, min(s + batch_size, len(subset)))) for s in starts]
    mine = batches[distributed.rank() :: distributed.world_size()]
    return image_loader(subset, torch.device(device), batch_sampler=mine, num_workers=num_workers)


@torch.no_grad()
def recompute_batchnorm_statistics(
    model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], device: torch.device
) -> nn.Module:
    """A copy of `model` in eval mode whose BatchNorm running statistics are re-estimated on
    `batches` (this rank's share: see `estimation_batches`); `model` is left as it was."""
    estimated = copy.deepcopy(model).eval()
    norms = [m for m in estimated.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    sums = {n: torch.zeros(3, n.num_features, dtype=torch.float64, device=device) for n in norms}

    def accumulate(norm: _BatchNorm):
        def hook(module: nn.Module, args: tuple[Tensor, ...]) -> None:
            x = args[0]
            dims = [d for d in range(x.dim()) if d != 1]
            sums[norm][0] += x.sum(dims, dtype=torch.float64)
            sums[norm][1] += x.square().sum(dims, dtype=torch.float64)
            sums[norm][2] += x.numel() // x.shape[1]

        return hook

    handles = [norm.register_forward_pre_hook(accumulate(norm)) for norm in norms]
    try:
        for norm in norms:
            norm.train()
        with full_precision():
            for inputs, _ in batches:
                estimated(inputs.to(device))
    finally:
        for handle in handles:
            handle.remove()
        estimated.eval()
    for norm in norms:
        total, squares, count = distributed.all_reduce_sum(sums[norm])
        if count[0] < 2:
            raise ConfigError(
                "analysis.bn_images is too small: a BatchNorm layer saw fewer than two values; "
                "re-estimate on more images (the default is 1000)"
            )
        mean = total / count
        norm.running_mean.copy_(mean)
        norm.running_var.copy_((squares - count * mean.square()) / (count - 1))
    return estimated
