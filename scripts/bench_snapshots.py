"""What dense snapshots and resume states cost the training loop: img/s with none, with a
snapshot every `--every` steps, and with a resume state every `--every` steps, side by side.

Both are copied to host memory and written by the background writer (train/writer.py); what is
left in the loop is that copy, the hand-off to the writer and, for a snapshot, its evaluation,
which this bench keeps to one batch (`data.eval_limit`) with selectivity off, so that the
difference is the checkpoint's own cost. Same machinery as bench_loop.py: fresh runs, `--warmup`
untimed steps, `--steps` timed ones, repetitions in rotating order, medians. A benchmark, not a
test: it exits 0 whatever the figures.

    .venv/bin/python scripts/bench_snapshots.py
    .venv/bin/python scripts/bench_snapshots.py --model resnet50 --device cuda --every 50
"""

from __future__ import annotations

import statistics

import torch
from bench_loop import compose, device_name, measure, run_options, time_vestige
from omegaconf import OmegaConf

from vestige.distributed import select_device

TARGET = 0.98  # the bound: dense checkpoints cost under 2% of training time


def with_checkpoints(cfg, snapshots: list[str], resume_every: str | None):
    """`cfg` with another snapshot schedule and resume cadence (nothing else changes)."""
    changed = OmegaConf.merge(
        cfg, {"checkpoint": {"snapshots": snapshots, "resume_every": resume_every}}
    )
    OmegaConf.set_readonly(changed, True)
    return changed


def main() -> None:
    parser = run_options(__doc__.split("\n\n")[0])
    parser.add_argument("--every", type=int, default=50, help="steps between checkpoints")
    parser.set_defaults(steps=100, repeats=4)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    plain = compose(args)
    every = f"{args.every}it"
    sides = {
        "none": plain,
        f"snapshot/{every}": with_checkpoints(plain, [f"every {every}"], None),
        f"resume/{every}": with_checkpoints(plain, [], every),
    }
    device = select_device(plain.device)
    print(
        f"model {plain.model.name} | batch {args.batch_size}"
        f" | device {device} ({device_name(device)})"
        f" | torch {torch.__version__} | threads {torch.get_num_threads()}"
    )
    print(f"{args.repeats} repetitions of {args.warmup} untimed + {args.steps} timed steps")
    rates = measure(
        {
            side: (lambda cfg=cfg: time_vestige(cfg, args.warmup, args.steps))
            for side, cfg in sides.items()
        },
        args.repeats,
        args.steps * args.batch_size,
    )
    base = statistics.median(rates["none"])
    print(f"\n{'checkpoints':<16} {'median':>9} {'min':>9} {'max':>9}   (img/s)   vs none")
    for side, values in rates.items():
        ratio = statistics.median(values) / base
        print(
            f"{side:<16} {statistics.median(values):9.1f} {min(values):9.1f}"
            f" {max(values):9.1f}   {ratio:.3f}"
            + (
                ""
                if side == "none"
                else f" (target >= {TARGET}: {'met' if ratio >= TARGET else 'NOT met'})"
            )
        )


if __name__ == "__main__":
    main()
