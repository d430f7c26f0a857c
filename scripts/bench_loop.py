"""Training throughput of vestige's loop against a minimal hand-written PyTorch loop.

Both sides train the same network (same init), on the same training images, with the same
batch size, optimiser hyper-parameters, device and torch threads. vestige's side is
`Training.run()` on a config composed exactly as `vestige-run` composes it; the hand-written
side is DataLoader -> forward -> cross-entropy -> backward -> step and nothing else.

Measured honestly, in the spirit of airbench: each repetition builds a fresh run, drops
`--warmup` steps, then times `--steps` steps of wall clock (everything a training step costs,
data loading and bookkeeping included; the final snapshot and evaluation after the last step
are not). Repetitions alternate ABBA (vestige, hand, hand, vestige, ...) so that drifting machine
load falls on both sides equally; the ratio is that of the median throughputs. A benchmark, not a
test: it exits 0 whether or not the target is met.

    .venv/bin/python scripts/bench_loop.py
    .venv/bin/python scripts/bench_loop.py --data fashion_mnist --model resnet18 --steps 20
    .venv/bin/python scripts/bench_loop.py --device cuda --model resnet50 --data imagenet ...
        --compile default   # both sides torch.compile'd (trainer.compile); warm-up compiles
    .venv/bin/python scripts/bench_loop.py --logger tensorboard
        # vestige with and without the tracker, a metrics row (and its evaluation of one batch)
        # every --rows-every steps on both sides: what logging the rows costs
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from vestige.config import LoggerConfig
from vestige.data import build_datasets
from vestige.distributed import select_device
from vestige.models import build_model
from vestige.rundir import RunDir
from vestige.seeding import derive_seed
from vestige.tasks.checks import check
from vestige.tasks.compose import compose_point
from vestige.tasks.train import tracked, tracked_run
from vestige.tracking import build_tracking
from vestige.train.loop import Training
from vestige.train.progress import Reporter

TARGET = 0.95
LOGGER_TARGET = 0.98  # a tracker costs under 2% of training throughput (issue 15)
OUTPUTS = Path(tempfile.gettempdir()) / "bench-loop-outputs"  # the trackers' local stores


class StepClock(Reporter):
    """A silent Reporter that notes the wall clock when the loop reports steps `start` and `end`.

    `advance(step)` is called right after step `step` has trained, before its logging, snapshot
    and resume checks, so the interval covers exactly `end - start` whole steps and ends before
    the final snapshot and evaluation.
    """

    def __init__(self, start: int, end: int, device: torch.device) -> None:
        super().__init__("none")
        self.marks: dict[int, float | None] = {start: None, end: None}
        self.device = device

    def advance(self, step: int) -> None:
        if step in self.marks:
            self.marks[step] = synchronized_clock(self.device)

    def seconds(self) -> float:
        start, end = (self.marks[step] for step in sorted(self.marks))
        if start is None or end is None:
            raise RuntimeError(f"the loop stopped before step {max(self.marks)}")
        return end - start


def device_name(device: torch.device) -> str:
    """What a figure was measured on: the GPU's name, or the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def synchronized_clock(device: torch.device) -> float:
    """perf_counter once the device has finished the work queued so far."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def compose(args: argparse.Namespace) -> Any:
    """The config `vestige-run` would run, without observers, with snapshots only at the end."""
    overrides = [
        f"model={args.model}",
        f"data={args.data}",
        f"trainer.batch_size={args.batch_size}",
        # as many steps as asked, whatever the epoch length: max_steps ends the run
        f"trainer.epochs={args.warmup + args.steps}",
        f"trainer.max_steps={args.warmup + args.steps}",
        f"device={args.device}",
        f"trainer.compile={args.compile}",
        "trainer.progress=none",
        "selectivity.enabled=false",
        "checkpoint.snapshots=[]",
        # the final evaluation is outside the timed interval; a small split keeps it short
        f"data.eval_limit={args.batch_size}",
    ]
    if args.width is not None:
        overrides.append(f"model.width={args.width}")
    if args.logger != "none":
        overrides += [f"logger={args.logger}", f"outputs={OUTPUTS}"]
        overrides.append(f"checkpoint.snapshots=[every {args.rows_every}it]")
    cfg = compose_point(overrides)
    check(cfg)
    return cfg


def time_vestige(cfg: Any, warmup: int, steps: int) -> float:
    """Seconds for `steps` steps of `Training.run()` after `warmup` steps, in a fresh run dir,
    with the trackers `cfg.logger` chooses (none by default)."""
    with tempfile.TemporaryDirectory(prefix="bench-vestige-") as path:
        run = RunDir(path)
        clock = StepClock(warmup, warmup + steps, select_device(cfg.device))
        tracking = build_tracking(cfg.logger, tracked_run(cfg, run))
        observers = [tracking] if tracking else []
        training = Training(cfg, run, observers=observers, regularizers=[], reporter=clock)
        with tracked(tracking):
            training.run()
        return clock.seconds()


@dataclass(frozen=True)
class Execution:
    """How vestige's loop runs a config on this machine, so the hand-written loop can match it."""

    device: torch.device
    autocast: bool
    channels_last: bool

    @classmethod
    def of(cls, cfg: Any) -> Execution:
        with tempfile.TemporaryDirectory(prefix="bench-probe-") as path:
            training = Training(cfg, RunDir(path), [], [], Reporter("none"))
            return cls(training.device, training.autocast, training.channels_last)


def time_hand_written(cfg: Any, execution: Execution, warmup: int, steps: int) -> float:
    """Seconds for `steps` steps of a plain PyTorch loop after `warmup` steps.

    It reads the training split that vestige builds, minus vestige's per-item reseeding wrapper
    (so that wrapper's cost counts against vestige), on vestige's device, precision and memory
    format, so that both sides run the same kernels.
    """
    device = execution.device
    torch.manual_seed(derive_seed(cfg.seed, "init", scheme="sha256"))
    splits = build_datasets(cfg.data, derive_seed(cfg.seed, "augment", scheme="sha256"))
    model = build_model(cfg.model, splits.num_classes, splits.channels, splits.image_size)
    memory_format = torch.channels_last if execution.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    optimizer = make_optimizer(cfg.optim, model)
    loader = DataLoader(
        splits.train.base,
        batch_size=cfg.trainer.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=cfg.data.num_workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(derive_seed(cfg.seed, "data", scheme="sha256")),
    )
    model.train()
    compile_mode = cfg.trainer.compile
    forward = model if compile_mode == "off" else torch.compile(model, mode=compile_mode)
    step, start = 0, 0.0
    while True:
        for inputs, targets in loader:
            inputs = inputs.to(device, non_blocking=True, memory_format=memory_format)
            targets = targets.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=execution.autocast):
                loss = F.cross_entropy(forward(inputs).float(), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step == warmup:
                start = synchronized_clock(device)
            if step == warmup + steps:
                return synchronized_clock(device) - start


def make_optimizer(cfg: Any, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimiser vestige's config names, with its hyper-parameters, over all parameters."""
    params = model.parameters()
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
        )
    return torch.optim.AdamW(
        params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay
    )


def measure(
    sides: dict[str, Callable[[], float]], repeats: int, images: int
) -> dict[str, list[float]]:
    """Images per second of each side, `repeats` times, in ABBA order."""
    rates: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            gc.collect()
            rates[name].append(images / sides[name]())
            print(f"  repeat {repeat + 1}/{repeats}  {name:<12} {rates[name][-1]:8.1f} img/s")
    return rates


def run_options(description: str) -> argparse.ArgumentParser:
    """The options of a timed run that `compose` and `measure` read (shared by the benches)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default="resnet18_quarter", help="a conf/model/ choice")
    parser.add_argument("--width", type=float, default=None, help="override model.width")
    parser.add_argument("--data", default="synthetic", help="a conf/data/ choice")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per repetition")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per repetition")
    parser.add_argument("--repeats", type=int, default=10, help="repetitions of each side")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--compile", default="off", help="trainer.compile on both sides: off | default | ..."
    )
    parser.add_argument(
        "--logger", default="none", help="a tracker (tensorboard | mlflow | wandb): vestige with "
        "it against vestige without, instead of the hand-written loop"
    )
    parser.add_argument(
        "--rows-every", type=int, default=20, help="with --logger: steps between metrics rows"
    )
    return parser


def main() -> None:
    args = run_options(__doc__.split("\n\n")[0]).parse_args()

    torch.set_num_threads(args.threads)
    cfg = compose(args)
    execution = Execution.of(cfg)
    model_desc = cfg.model.name + (f" width {cfg.model.width}" if "width" in cfg.model else "")
    print(
        f"model {model_desc} | data {cfg.data.name} {cfg.data.channels}x{cfg.data.image_size}px"
        f" | batch {args.batch_size} | {cfg.optim.name} lr {cfg.optim.lr}"
        f" | device {execution.device} ({device_name(execution.device)}) bf16 {execution.autocast}"
        f" channels_last {execution.channels_last} | compile {cfg.trainer.compile}"
        f" | torch {torch.__version__} threads {torch.get_num_threads()}"
    )
    print(f"{args.repeats} repetitions of {args.warmup} untimed + {args.steps} timed steps")
    if args.logger != "none":
        compare_logger(args, cfg)
        return
    sides = {
        "vestige": lambda: time_vestige(cfg, args.warmup, args.steps),
        "hand-written": lambda: time_hand_written(cfg, execution, args.warmup, args.steps),
    }
    rates = measure(sides, args.repeats, args.steps * args.batch_size)

    print(f"\n{'loop':<12} {'median':>9} {'min':>9} {'max':>9}   (img/s)")
    for name, values in rates.items():
        print(f"{name:<12} {statistics.median(values):9.1f} {min(values):9.1f} {max(values):9.1f}")
    paired = [v / h for v, h in zip(rates["vestige"], rates["hand-written"], strict=True)]
    print(
        f"paired ratios (each repetition's two back-to-back runs): median "
        f"{statistics.median(paired):.3f}, range {min(paired):.3f}-{max(paired):.3f}"
    )
    ratio = statistics.median(rates["vestige"]) / statistics.median(rates["hand-written"])
    verdict = "met" if ratio >= TARGET else "NOT met"
    print(f"ratio vestige/hand-written = {ratio:.3f} (target >= {TARGET}: {verdict})")


def compare_logger(args: argparse.Namespace, cfg: Any) -> None:
    """img/s of vestige with `--logger` and without, a metrics row every `--rows-every` steps."""
    untracked = OmegaConf.merge(cfg, {"logger": OmegaConf.structured(LoggerConfig)})
    print(f"a metrics row every {args.rows_every} steps; trackers' stores in {OUTPUTS}")
    sides = {
        "no logger": lambda: time_vestige(untracked, args.warmup, args.steps),
        args.logger: lambda: time_vestige(cfg, args.warmup, args.steps),
    }
    rates = measure(sides, args.repeats, args.steps * args.batch_size)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    for name, values in rates.items():
        print(f"{name:<12} {medians[name]:9.1f} {min(values):9.1f} {max(values):9.1f}  (img/s)")
    ratio = medians[args.logger] / medians["no logger"]
    verdict = "met" if ratio >= LOGGER_TARGET else "NOT met"
    print(f"ratio {args.logger}/no logger = {ratio:.3f} (target >= {LOGGER_TARGET}: {verdict})")


if __name__ == "__main__":
    main()
