"""What the fast ablation sweep saves: one snapshot's full sweep of one stage done the fast way
(`analysis/ablation/ablate.py: sweep`: the network up to the stage once per batch, every
ablation from the cached block output) vs the naive way (one full forward pass over the images
per ablation).

    .venv/bin/python scripts/bench_ablation.py [--device cpu] [--images 8] [--image-size 224]
        [--k-fractions 0 0.125 0.25 ... 1] [--draws 3] [--stages layer4 layer3] [--threads 1]

ResNet-50, random weights (the time does not depend on them), random SI for the ranking. The two
ways are timed side by side in one process, interleaved, after one untimed warm-up forward; the
median of `--repeats` is reported, and their counts are checked to be equal. The ideal speed-up is
the FLOP share (multiply-adds of every conv and linear layer, counted with hooks) of the stage and
everything after it: total / downstream, which the sweep approaches as the number of ablations
grows (issue 4: 5.0x for layer4, 1.8x for layer3 at 224 px; target >= 70% of it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from vestige.analysis.ablation.ablate import naive_sweep, sweep
from vestige.analysis.ablation.plan import UnitRanking, plan_stage
from vestige.config import AblationConfig, ResNetConfig
from vestige.models import build_model
from vestige.selectivity.units import measured_layers

NUM_CLASSES = 1000


def multiply_adds(model: nn.Module, images: torch.Tensor) -> dict[str, int]:
    """Multiply-adds per image of every conv and linear layer, by module path."""
    counts: dict[str, int] = {}

    def hook(name: str):
        def count(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            if isinstance(module, nn.Conv2d):
                per_output = module.in_channels // module.groups * module.weight[0, 0].numel()
                counts[name] = output[0].numel() * per_output
            else:
                counts[name] = module.in_features * module.out_features

        return count

    handles = [
        module.register_forward_hook(hook(name))
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d | nn.Linear)
    ]
    with torch.no_grad():
        model(images[:1])
    for handle in handles:
        handle.remove()
    return counts


def ideal_speedup(counts: dict[str, int], stage: str) -> float:
    """Total multiply-adds over those of `stage` and every module after it."""
    order = ["layer1", "layer2", "layer3", "layer4", "fc"]
    downstream = order[order.index(stage) :]
    after = sum(macs for name, macs in counts.items() if name.split(".")[0] in downstream)
    return sum(counts.values()) / after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--k-fractions", type=float, nargs="+", default=[i / 8 for i in range(9)])
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--stages", nargs="+", default=["layer4", "layer3"])
    parser.add_argument("--masks-per-forward", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 under load)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(ResNetConfig("resnet50", stem="imagenet"), NUM_CLASSES, 3, args.image_size)
    model = model.to(device).eval()
    images = torch.randn(args.images, 3, args.image_size, args.image_size)
    labels = torch.randint(NUM_CLASSES, (args.images,))
    loader = DataLoader(TensorDataset(images, labels), batch_size=args.batch_size)
    macs = multiply_adds(model, images.to(device))
    settings = OmegaConf.structured(
        AblationConfig(k_fractions=args.k_fractions, random_draws=args.draws)
    )
    print(
        f"resnet50 {args.image_size}px, {args.images} images (batch {args.batch_size}), "
        f"{args.device}, {args.threads} thread(s), load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        f"{sum(macs.values()) / 1e9:.2f} GMAC per image"
    )
    for stage in args.stages:
        layers = [layer for layer in measured_layers(model) if layer.stage == stage]
        si = {layer.name: torch.rand(layer.channels) for layer in layers}
        preferred = {name: torch.randint(NUM_CLASSES, value.shape) for name, value in si.items()}
        plan = plan_stage(layers, UnitRanking(si, preferred, None), settings, 0, device)
        ablations = plan.distinct
        with torch.no_grad():
            model(images[: args.batch_size].to(device))  # warm-up
        times: dict[str, list[float]] = {"fast": [], "naive": []}
        results = {}
        for repeat in range(args.repeats):
            for way in ("fast", "naive") if repeat % 2 == 0 else ("naive", "fast"):
                started = time.perf_counter()
                if way == "fast":
                    results[way] = sweep(
                        model, loader, [ablations], NUM_CLASSES, device, args.masks_per_forward
                    )[0]
                else:
                    results[way] = naive_sweep(model, loader, ablations, NUM_CLASSES, device)
                times[way].append(time.perf_counter() - started)
        assert torch.equal(results["fast"].top1, results["naive"].top1), "counts differ"
        fast, naive = (statistics.median(times[way]) for way in ("fast", "naive"))
        ideal = ideal_speedup(macs, stage)
        speedup = naive / fast
        print(
            f"  {stage}: {len(ablations.masks)} distinct ablations ({len(plan.rows)} rows); "
            f"naive {naive:7.1f} s  fast {fast:7.1f} s  speed-up {speedup:5.2f}x; "
            f"ideal (FLOP share) {ideal:4.2f}x; reached {speedup / ideal:5.0%} of ideal"
        )


if __name__ == "__main__":
    main()
