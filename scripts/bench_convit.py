"""Training throughput of ConViT-Ti against DeiT-Ti, and what computing GPSA's positional scores
once per forward (docs/science.md §9) saves over computing them for every batch item.

    .venv/bin/python scripts/bench_convit.py                      # CPU: the small variants, 32 px
    .venv/bin/python scripts/bench_convit.py --device cuda --models convit_ti deit_ti \\
        --image-size 224 --batch-size 128                          # the paper's setting

1. Throughput: forward + backward + SGD step on random images, the two models built from their
   conf/model/ files (by default convit_ti_small and deit_ti_small: Ti's width, depth and heads,
   patch 4, so 64 tokens at 32 px; 224 px with patch 16 is too slow on a small CPU). The paper
   reports ConViT at about half of DeiT's throughput (§3).
2. Positional scores: one GPSA layer of ConViT-Ti's width, forward + backward, with the scores
   computed once as (1, H, L, L) and broadcast over the batch (vestige's GPSA) against a variant,
   defined here only, that computes them for every item, (B, H, L, L).

Variants are timed side by side in one process: one untimed warm-up each, then repetitions
interleaved with the order alternating, median reported. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from torch import Tensor, nn

from vestige.config import register_configs
from vestige.models.convit import build_convit
from vestige.models.gpsa import GPSA

CONF = Path(__file__).resolve().parents[1] / "conf"
NUM_CLASSES = 10


def model_config(name: str):
    """`model=<name>` as vestige-run composes it from conf/model/<name>.yaml."""
    register_configs()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose(overrides=[f"+model={name}"]).model


def interleaved_times(
    variants: dict[str, Callable[[], None]], repeats: int, sync: Callable[[], None]
) -> dict[str, list[float]]:
    """Seconds of each repetition of each variant; one warm-up each, then ABBA-ordered."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for run in variants.values():
        run()
    sync()
    order = list(variants)
    for repeat in range(repeats):
        for name in order if repeat % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            variants[name]()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def spread(values: list[float]) -> str:
    """Median and range in ms: a busy machine shows up as a wide range."""
    ms = sorted(v * 1e3 for v in values)
    return f"{statistics.median(ms):7.1f} ms [{ms[0]:.0f}-{ms[-1]:.0f}]"


def training_step(model: nn.Module, batch_size: int, image_size: int, device: torch.device):
    """A closure doing forward + backward + SGD step of `model` on one fixed random batch."""
    images = torch.randn(batch_size, 3, image_size, image_size, device=device)
    labels = torch.randint(0, NUM_CLASSES, (batch_size,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    return step


class PerItemGPSA(GPSA):
    """GPSA whose positional scores are computed for every batch item, (B, H, L, L): the
    comparison point for computing them once per forward. Same outputs, more work."""

    def forward(self, x: Tensor) -> Tensor:
        self.batch = x.shape[0]
        return super().forward(x)

    def positional_attention(self, num_tokens: int) -> Tensor:
        offsets = self.rel_indices.expand(self.batch, -1, -1, -1)
        return self.pos_proj(offsets).permute(0, 3, 1, 2).softmax(dim=-1)


def gpsa_step(layer: GPSA, tokens: Tensor) -> Callable[[], None]:
    def step() -> None:
        layer.zero_grad(set_to_none=True)
        layer(tokens).square().mean().backward()

    return step


def bench_throughput(args: argparse.Namespace, device: torch.device, sync) -> None:
    steps = {}
    for name in args.models:
        torch.manual_seed(0)
        model = build_convit(model_config(name), NUM_CLASSES, 3, args.image_size).to(device)
        steps[name] = training_step(model, args.batch_size, args.image_size, device)
    times = interleaved_times(steps, args.repeats, sync)
    print(
        f"training throughput, batch {args.batch_size}, {args.image_size} px, {device.type}, "
        f"median of {args.repeats}:"
    )
    seconds = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(f"  {name:<16s} {args.batch_size / seconds[name]:8.1f} img/s  {spread(values)}/step")
    first, second = args.models
    print(f"  {first} / {second} throughput: {seconds[second] / seconds[first]:.2f}x")


def bench_positional(args: argparse.Namespace, device: torch.device, sync) -> None:
    cfg = model_config(args.models[0])
    print(
        f"GPSA layer forward + backward, batch {args.batch_size}, dim {cfg.embed_dim}, "
        f"{cfg.num_heads} heads, median of {args.layer_repeats}:"
    )
    for side in args.grids:
        torch.manual_seed(0)
        once = GPSA(cfg.embed_dim, cfg.num_heads, side, locality_strength=1.0).to(device)
        per_item = PerItemGPSA(cfg.embed_dim, cfg.num_heads, side, locality_strength=1.0).to(device)
        per_item.load_state_dict(once.state_dict())
        tokens = torch.randn(args.batch_size, side * side, cfg.embed_dim, device=device)
        with torch.no_grad():
            torch.testing.assert_close(per_item(tokens), once(tokens), rtol=1e-4, atol=1e-5)
        times = interleaved_times(
            {"once": gpsa_step(once, tokens), "per item": gpsa_step(per_item, tokens)},
            args.layer_repeats,
            sync,
        )
        ratio = statistics.median(times["per item"]) / statistics.median(times["once"])
        print(
            f"  {side:2d}x{side:<2d} grid ({side * side:3d} tokens): once {spread(times['once'])}"
            f"  per item {spread(times['per item'])}  per item / once {ratio:.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs=2, default=["convit_ti_small", "deit_ti_small"])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--grids", type=int, nargs="+", default=[8, 14], help="GPSA grid sides")
    parser.add_argument("--repeats", type=int, default=5, help="training steps per model")
    parser.add_argument("--layer-repeats", type=int, default=20, help="GPSA steps per variant")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_throughput(args, device, sync)
    bench_positional(args, device, sync)


if __name__ == "__main__":
    main()
