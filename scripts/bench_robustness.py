"""What analysis=robustness costs beyond the work it implies: the analysis of one snapshot
against plain passes over the same images, counted as the analysis needs them.

    .venv/bin/python scripts/bench_robustness.py [--images 256] [--repeats 3] [--device cpu]

The analysis (analysis/robustness/measure.py, default settings apart from the image counts) of a
quarter-width ResNet-18 on 28 px grey images is timed side by side with its parts done bare:
a plain evaluation pass (no_grad forwards) and a gradient pass (forward and backward to the
images) over the same images, and the corruptions alone. The work it implies is
    (1 + corruptions x severities) evaluations of `--images` images
  + per attack and epsilon: PGD `steps` gradient passes and 2 evaluations, FGSM 1 and 1, and one
    clean evaluation, of `--attack-images` images
  + the change: its perturbation (as above) and 2 evaluations of `--change-images` images
  + every corruption of the `--images` images, computed alone;
the machinery's overhead is the analysis's time over that (target: under 10%). Repetitions run
in rotating order; medians. A benchmark, not a test: it exits 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from bench_loop import device_name
from omegaconf import OmegaConf

from vestige.analysis.robustness import last_block_of_each_stage
from vestige.analysis.robustness.corruptions import CORRUPTIONS, corrupt
from vestige.analysis.robustness.measure import image_seeds, measure_robustness
from vestige.config import ResNetConfig, RobustnessConfig
from vestige.data.transforms import Normalise
from vestige.distributed import select_device
from vestige.models import build_model
from vestige.precision import full_precision

TARGET = 1.10
CLASSES, SIZE = 10, 28


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(work: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    started = time.perf_counter()
    work()
    synchronize(device)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256, help="corrupted images")
    parser.add_argument("--attack-images", type=int, default=128)
    parser.add_argument("--change-images", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = select_device(args.device)

    torch.manual_seed(0)
    model = build_model(ResNetConfig(stem="small", width=0.25), CLASSES, 1, SIZE).to(device)
    model.eval().requires_grad_(False)
    normalise = Normalise([0.286], [0.353], 1)  # Fashion-MNIST's
    generator = torch.Generator().manual_seed(0)
    pixels = torch.rand(args.images, 1, SIZE, SIZE, generator=generator)
    labels = torch.randint(CLASSES, (args.images,), generator=generator)
    loader = [
        (normalise(pixels[i : i + args.batch_size]), labels[i : i + args.batch_size])
        for i in range(0, args.images, args.batch_size)
    ]
    settings = OmegaConf.structured(
        RobustnessConfig(
            attack_images=args.attack_images, change_images=args.change_images
        )
    )
    layers = last_block_of_each_stage(model, None)

    def first(count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        kept, seen = [], 0
        for images, targets in loader:
            if seen >= count:
                break
            kept.append((images[: count - seen].to(device), targets[: count - seen].to(device)))
            seen += len(kept[-1][1])
        return kept

    def evaluation(count: int) -> None:
        with torch.no_grad(), full_precision():
            for images, _ in first(count):
                model(images)

    def gradient_pass(count: int) -> None:
        with full_precision():
            for images, targets in first(count):
                images = images.clone().requires_grad_(True)
                torch.autograd.grad(F.cross_entropy(model(images), targets), images)

    def corruptions_alone() -> None:
        for start in range(0, args.images, args.batch_size):
            batch = pixels[start : start + args.batch_size].to(device)
            indices = range(start, start + len(batch))
            for name in CORRUPTIONS:
                seeds = image_seeds(settings.seed, name, indices)
                for severity in settings.severities:
                    corrupt(batch, name, severity, seeds)

    def analysis() -> None:
        measure_robustness(model, loader, normalise, device, settings, layers)

    parts = {
        "analysis": analysis,
        "evaluation": lambda: evaluation(args.images),
        "gradient pass": lambda: gradient_pass(args.images),
        "corruptions alone": corruptions_alone,
    }
    for work in parts.values():  # warm-up
        work()
    times: dict[str, list[float]] = {name: [] for name in parts}
    names = list(parts)
    for repeat in range(args.repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            times[name].append(timed(parts[name], device))
    median = {name: statistics.median(values) for name, values in times.items()}

    per_image_eval = median["evaluation"] / args.images
    per_image_grad = median["gradient pass"] / args.images
    corrupted = 1 + len(CORRUPTIONS) * len(settings.severities)
    attacks = {"fgsm": (1, 1), "pgd": (settings.steps, 2)}  # gradient passes, evaluations
    attack_grads = sum(attacks[a][0] for a in settings.attacks) * len(settings.epsilons)
    attack_evals = 1 + sum(attacks[a][1] for a in settings.attacks) * len(settings.epsilons)
    change_grads, change_evals = attacks.get(settings.change, (0, 0))
    implied = (
        corrupted * args.images * per_image_eval
        + args.attack_images * (attack_grads * per_image_grad + attack_evals * per_image_eval)
        + args.change_images * (change_grads * per_image_grad + (change_evals + 2) * per_image_eval)
        + median["corruptions alone"]
    )
    print(
        f"resnet18 width 0.25, {SIZE} px grey | device {device} ({device_name(device)}) | torch "
        f"{torch.__version__} | threads {torch.get_num_threads()} | load {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{args.images} corrupted images ({corrupted} passes), {args.attack_images} attacked "
        f"({len(settings.epsilons)} epsilons, PGD {settings.steps} steps), {args.change_images} "
        f"for the change; {args.repeats} repetitions, medians"
    )
    for part, values in times.items():
        print(f"  {part:<20} {median[part]:8.2f} s  (range {min(values):.2f}-{max(values):.2f})")
    ratio = median["analysis"] / implied
    verdict = "met" if ratio <= TARGET else "NOT met"
    print(f"  {'work it implies':<20} {implied:8.2f} s")
    print(f"analysis / implied work: {ratio:.3f} (target <= {TARGET}: {verdict})")


if __name__ == "__main__":
    main()
