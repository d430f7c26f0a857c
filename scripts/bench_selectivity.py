"""What class selectivity costs: the regularizer in a training step, and the measurement riding an
evaluation pass against a plain one and against the public code's per-sample loop.

    .venv/bin/python scripts/bench_selectivity.py [--repeats 5] [--threads N] [--device cpu]

Variants are timed side by side in one process, interleaved (one repetition of each in turn, the
order rotating), after one untimed warm-up each; the median is reported. Targets (issue 3): the
regularizer adds at most 10% to a training step on the CPU; the measurement makes an evaluation
pass at most 1.15x slower.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vestige.config import RegularizerConfig, ResNetConfig, SelectivityConfig
from vestige.models import build_model
from vestige.selectivity.index import (
    ClassConditionalStats,
    SelectivityProbe,
    SelectivityResult,
    selectivity_index,
)
from vestige.selectivity.regularizer import SelectivityRegularizer
from vestige.selectivity.units import UnitLayer, measured_layers, record_unit_activations
from vestige.train.evaluate import evaluate

NUM_CLASSES = 10
IMAGE_SIZE = 32


def interleaved_times(
    variants: dict[str, Callable[[], object]], repeats: int
) -> dict[str, list[float]]:
    """Seconds per repetition and variant; one warm-up each, then repetitions in rotating order."""
    for run in variants.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for repeat in range(repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            started = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - started)
    return times


def print_ratios(times: dict[str, list[float]], base: str, unit: str = "x") -> dict[str, float]:
    """One line per variant: median, its ratio to `base`'s median, and the min-max range."""
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(
            f"    {name:<24}{medians[name] * 1e3:9.1f} ms  {medians[name] / medians[base]:6.3f}"
            f"{unit}   (range {min(values) * 1e3:.0f}-{max(values) * 1e3:.0f} ms)"
        )
    return medians


def model(name: str, width: float, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    cfg = ResNetConfig(name=name, stem="small", width=width)
    return build_model(cfg, NUM_CLASSES, 3, IMAGE_SIZE).to(device)


def batch(size: int, device: torch.device, seed: int = 0) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(size, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    return images.to(device), torch.randint(NUM_CLASSES, (size,), generator=generator).to(device)


def bench_training_step(
    name: str, width: float, batch_size: int, repeats: int, device: torch.device
) -> None:
    """Forward, loss, backward and SGD step without the regularizer, with alpha 0 (R computed
    without a graph) and with alpha -20. Attaching (hook registration) is inside the timing."""
    net = model(name, width, device)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    images, targets = batch(batch_size, device)

    def step(alpha: float | None) -> None:
        regularizer = None
        with ExitStack() as hooks:
            if alpha is not None:
                settings = RegularizerConfig("selectivity", alpha=alpha)
                regularizer = SelectivityRegularizer(settings, "clamp")
                hooks.enter_context(regularizer.attach(net, 1))
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(images), targets)
            if regularizer is not None:
                loss = loss + regularizer.penalty(0, targets)[0]
            loss.backward()
            optimizer.step()
            synchronize(device)

    times = interleaved_times(
        {
            "off": lambda: step(None),
            "alpha 0 (R, no graph)": lambda: step(0.0),
            "alpha -20": lambda: step(-20.0),
        },
        repeats,
    )
    print(f"  {name} width {width}, batch {batch_size}, {IMAGE_SIZE} px")
    print_ratios(times, "off")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def recorded_pass(
    net: nn.Module, loader: list[tuple[Tensor, Tensor]], layers: list[UnitLayer], device: str
) -> list[tuple[dict[str, Tensor], Tensor]]:
    """Per batch, the (B, units) activations of every layer and the targets, moved to `device`."""
    net.eval()
    recorded = []
    with torch.no_grad(), record_unit_activations(net, layers, "clamp") as acts:
        for images, targets in loader:
            net(images)
            recorded.append(({n: a.to(device) for n, a in acts.items()}, targets.to(device)))
    return recorded


def naive_selectivity(
    net: nn.Module, loader: list[tuple[Tensor, Tensor]], layers: list[UnitLayer]
) -> dict[str, Tensor]:
    """The public code's way over a whole pass: activations copied to the CPU, then accumulated
    sample by sample (`naive_accumulate`)."""
    return naive_accumulate(recorded_pass(net, loader, layers, "cpu"), layers)


def naive_accumulate(
    recorded: list[tuple[dict[str, Tensor], Tensor]], layers: list[UnitLayer]
) -> dict[str, Tensor]:
    """For each sample, for each class, accumulate in Python; SI from the class sums (divided by
    the counts here, unlike the public code, so the result can be checked)."""
    sums = {layer.name: torch.zeros(NUM_CLASSES, layer.channels) for layer in layers}
    counts = torch.zeros(NUM_CLASSES)
    for acts, labels in recorded:
        for i in range(len(labels)):
            for c in range(NUM_CLASSES):
                if labels[i] == c:
                    counts[c] += 1
                    for name, a in acts.items():
                        sums[name][c] += a[i]
    eps = SelectivityConfig().eps
    return {name: selectivity_index((s / counts[:, None]).T, eps) for name, s in sums.items()}


def streaming_accumulate(
    recorded: list[tuple[dict[str, Tensor], Tensor]], layers: list[UnitLayer]
) -> dict[str, Tensor]:
    """vestige's way on the same recorded activations: one matmul per layer and batch."""
    stats = ClassConditionalStats(NUM_CLASSES)
    for acts, labels in recorded:
        stats.update(acts, labels)
    return SelectivityResult.from_stats(stats, layers, SelectivityConfig().eps).si


def bench_measurement(
    name: str, width: float, eval_size: int, batch_size: int, repeats: int, device: torch.device
) -> None:
    """An evaluation pass, the same pass with the selectivity probe (result included), and the
    per-sample loop; every unit of every block output, over the same images."""
    net = model(name, width, device)
    layers = measured_layers(net)
    loader = [batch(batch_size, device, seed) for seed in range(eval_size // batch_size)]

    def plain() -> None:
        evaluate(net, loader, device, [])

    def probed() -> dict[str, Tensor]:
        probe = SelectivityProbe(net, layers, NUM_CLASSES, SelectivityConfig())
        evaluate(net, loader, device, [probe])
        return probe.result().si

    streaming_si, naive_si = probed(), naive_selectivity(net, loader, layers)
    for layer in layers:
        torch.testing.assert_close(
            naive_si[layer.name], streaming_si[layer.name], rtol=1e-4, atol=1e-5
        )
    times = interleaved_times(
        {
            "evaluation pass": plain,
            "with selectivity": probed,
            "naive per-sample": lambda: naive_selectivity(net, loader, layers),
        },
        repeats,
    )
    units = sum(layer.channels for layer in layers)
    print(f"  {name} width {width}, {eval_size} images, {units} units, batch {batch_size}")
    medians = print_ratios(times, "evaluation pass", "x of the evaluation pass")
    recorded = recorded_pass(net, loader, layers, device.type)
    on_cpu = [({n: a.cpu() for n, a in acts.items()}, t.cpu()) for acts, t in recorded]
    alone = interleaved_times(
        {
            "streaming": lambda: streaming_accumulate(recorded, layers),
            "naive": lambda: naive_accumulate(on_cpu, layers),
        },
        repeats,
    )
    fast, slow = (statistics.median(alone[k]) for k in ("streaming", "naive"))
    print(
        f"    accumulation alone: streaming {fast * 1e3:.2f} ms, naive {slow * 1e3:.1f} ms: "
        f"{slow / fast:.0f}x faster; whole pass: "
        f"{medians['naive per-sample'] / medians['with selectivity']:.2f}x faster"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resnet50-width", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--eval-size", type=int, default=1024)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"medians of {args.repeats} interleaved repetitions after one warm-up each")
    print("(1) training step: regularizer off vs on (target: alpha -20 at most 1.10x)")
    bench_training_step("resnet18", 1.0, args.batch_size, args.repeats, device)
    bench_training_step("resnet50", args.resnet50_width, args.batch_size, args.repeats, device)
    print("(2)+(3) selectivity of every unit over an evaluation set (target: at most 1.15x)")
    bench_measurement("resnet18", 0.5, args.eval_size, 256, args.repeats, device)


if __name__ == "__main__":
    main()
