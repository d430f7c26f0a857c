"""The training loop: read it top to bottom in `Training.run`.

At every step of the snapshot schedule the loop writes a weights-only snapshot, evaluates (with
the observers' probes riding along) and appends one metrics row; at every resume point it writes
the rolling resume state. Regularizers add to the loss; observers measure. Nothing here knows
what they compute.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from vestige.data import build_datasets
from vestige.errors import ConfigError
from vestige.models import build_model
from vestige.rundir import RunDir
from vestige.step import Step, snapshot_iterations
from vestige.train import checkpoint, distributed, metrics
from vestige.train.batches import eval_loader, train_loader
from vestige.train.evaluate import evaluate
from vestige.train.optim import build_optimizer, build_scheduler
from vestige.train.plugins import Observer, Regularizer
from vestige.train.progress import Reporter
from vestige.train.seeding import configure_determinism, derive_seed, seed_everything

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def select_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", distributed.local_rank() % torch.cuda.device_count())
        return torch.device("cpu")
    return torch.device(name)


@dataclass
class RunningSums:
    """Training loss/accuracy since the last metrics row, kept on the device (no sync per step)."""

    loss: torch.Tensor
    correct: torch.Tensor
    count: torch.Tensor
    seconds: float = 0.0
    images: int = 0

    @classmethod
    def zeros(cls, device: torch.device) -> RunningSums:
        return cls(*(torch.zeros((), dtype=torch.float64, device=device) for _ in range(3)))

    def state_dict(self) -> dict[str, Any]:
        return {
            "loss": self.loss.cpu(),
            "correct": self.correct.cpu(),
            "count": self.count.cpu(),
            "seconds": self.seconds,
            "images": self.images,
        }

    def load(self, state: dict[str, Any], device: torch.device) -> None:
        self.loss, self.correct, self.count = (
            state[k].to(device) for k in ("loss", "correct", "count")
        )
        self.seconds, self.images = state["seconds"], state["images"]


class Training:
    """One run's training, from its config to its finished run directory."""

    def __init__(
        self,
        cfg: Any,
        run: RunDir,
        observers: list[Observer],
        regularizers: list[Regularizer],
        reporter: Reporter,
    ) -> None:
        self.cfg, self.run_dir, self.observers, self.regularizers = (
            cfg,
            run,
            observers,
            regularizers,
        )
        self.reporter = reporter
        self.device = select_device(cfg.device)
        distributed.init_process_group(self.device)
        self.rank, self.world = distributed.rank(), distributed.world_size()
        configure_determinism(cfg.trainer.deterministic)
        t = cfg.trainer
        cuda = self.device.type == "cuda"
        self.autocast = t.precision == "bf16" or (t.precision == "auto" and cuda)
        self.channels_last = str(t.channels_last).lower() == "true" or (
            t.channels_last == "auto" and cuda
        )

        seed_everything(derive_seed(cfg.seed, "init"))
        splits = build_datasets(cfg.data, derive_seed(cfg.seed, "augment"))
        self.train_set = splits.train
        self.dataset_shape = {
            "num_classes": splits.num_classes,
            "channels": splits.channels,
            "image_size": splits.image_size,
            "train_size": len(splits.train),
            "eval_size": len(splits.eval),
        }
        model = build_model(cfg.model, splits.num_classes, splits.channels, splits.image_size)
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        workers = cfg.data.num_workers
        self.loader, self.batches = train_loader(
            splits.train,
            t.batch_size // self.world,
            derive_seed(cfg.seed, "data"),
            self.rank,
            self.world,
            workers,
            cuda,
        )
        self.eval_loader = eval_loader(
            splits.eval, t.eval_batch_size, self.rank, self.world, workers, cuda
        )
        self.iterations_per_epoch = len(self.batches)
        if self.iterations_per_epoch == 0:
            raise ConfigError(
                f"trainer.batch_size={t.batch_size} is larger than the training split "
                f"({len(splits.train)} images): lower it or use more data"
            )
        ipe = self.iterations_per_epoch
        self.total = t.epochs * ipe if t.max_steps is None else min(t.epochs * ipe, t.max_steps)
        self.optimizer = build_optimizer(cfg.optim, model)
        self.scheduler = build_scheduler(cfg.sched, self.optimizer, ipe, self.total)
        self.snapshot_steps = set(
            snapshot_iterations(list(cfg.checkpoint.snapshots), ipe, self.total)
        )
        self.snapshot_steps.add(self.total)
        self.resume_steps = self.snapshot_steps | set(range(ipe, self.total + 1, ipe))
        if cfg.checkpoint.resume_every:
            every = Step.parse(cfg.checkpoint.resume_every).to_iterations(ipe)
            self.resume_steps |= set(range(every, self.total + 1, every)) if every > 0 else set()
        self.step = 0
        self.sums = RunningSums.zeros(self.device)
        self.ddp_model: nn.Module = (
            DistributedDataParallel(model, device_ids=[self.device] if cuda else None)
            if self.world > 1
            else model
        )

    # -- resume ------------------------------------------------------------------------------

    def restore(self) -> bool:
        """Continue from the newest intact resume state; returns whether one was found.

        Files written after that state (metrics rows, snapshots) belong to a trajectory that is
        being recomputed and are dropped first, so nothing is duplicated.
        """
        state = checkpoint.load_latest_resume(self.run_dir)
        step = -1 if state is None else state["step"]
        if distributed.is_main():
            metrics.trim_after(self.run_dir.metrics, step)
            checkpoint.drop_snapshots_after(self.run_dir, step)
        if state is None:
            return False
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.sums.load(state["sums"], self.device)
        checkpoint.set_rng_state(state["rng"])
        self.step = step
        log.info("resumed %s at step %d", self.run_dir.path, step)
        return True

    def resume_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.step // self.iterations_per_epoch,
            "batch_in_epoch": self.step % self.iterations_per_epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": None,  # bf16 autocast needs no loss scaling
            "sums": self.sums.state_dict(),
            "rng": checkpoint.rng_state(),
        }

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> list[dict[str, Any]]:
        self.restore()
        for observer in self.observers:
            observer.on_train_start(self.model, self.dataset_shape["num_classes"])
        self.reporter.start(self.step, self.total, self.cfg.trainer.epochs)
        with ExitStack() as hooks:
            for regularizer in self.regularizers:
                hooks.enter_context(regularizer.attach(self.model))
            try:
                if self.step == 0 and 0 in self.snapshot_steps:
                    self.snapshot_and_evaluate()
                while self.step < self.total:
                    self.train_epoch()
            finally:
                self.reporter.close()
        return metrics.read_metrics(self.run_dir.metrics)

    def train_epoch(self) -> None:
        ipe = self.iterations_per_epoch
        epoch, first_batch = divmod(self.step, ipe)
        self.batches.set_position(epoch, first_batch)
        self.train_set.set_epoch(epoch)
        self.ddp_model.train()
        started = time.perf_counter()
        for inputs, targets in self.loader:
            self.train_step(inputs, targets)
            self.step += 1
            self.sums.seconds += time.perf_counter() - started
            self.sums.images += len(targets) * self.world
            if self.step % self.cfg.trainer.log_every == 0:
                self.report_progress(epoch)
            if self.step in self.snapshot_steps:
                self.snapshot_and_evaluate()
            if self.step in self.resume_steps:
                self.save_resume()
            if self.step >= self.total:
                break
            started = time.perf_counter()

    def train_step(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        inputs = inputs.to(self.device, non_blocking=True)
        if self.channels_last and inputs.ndim == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        targets = targets.to(self.device, non_blocking=True)
        accum = self.cfg.trainer.grad_accum
        cast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16)
            if self.autocast
            else nullcontext()
        )
        self.optimizer.zero_grad(set_to_none=True)
        for i, (x, y) in enumerate(zip(inputs.chunk(accum), targets.chunk(accum), strict=True)):
            last = i == accum - 1
            sync = nullcontext() if last or self.world == 1 else self.ddp_model.no_sync()
            with sync:
                with cast:
                    logits = self.ddp_model(x)
                    loss = F.cross_entropy(
                        logits.float(), y, label_smoothing=self.cfg.trainer.label_smoothing
                    )
                    for regularizer in self.regularizers:
                        term, _ = regularizer.penalty(self.step, y)
                        loss = loss + term
                (loss / accum).backward()
            with torch.no_grad():
                self.sums.loss += loss.detach().double() * len(y)
                self.sums.correct += (logits.argmax(1) == y).sum()
                self.sums.count += len(y)
        self.optimizer.step()
        self.scheduler.step()

    def check_finite(self) -> None:
        if not torch.isfinite(self.sums.loss):
            raise TrainingDiverged(
                f"the training loss became {self.sums.loss.item()} at step {self.step}; the last "
                f"good checkpoint is kept in {self.run_dir.checkpoints}: lower optim.lr or check "
                "the data"
            )

    def report_progress(self, epoch: int) -> None:
        self.check_finite()
        count = max(self.sums.count.item(), 1.0)
        rate = self.sums.images / max(self.sums.seconds, 1e-9)
        self.reporter.step(
            self.step, epoch, self.sums.loss.item() / count, self.sums.correct.item() / count, rate
        )

    def snapshot_and_evaluate(self) -> None:
        """Snapshot, evaluate with the observers' probes, and append one metrics row."""
        self.check_finite()
        epoch = self.step / self.iterations_per_epoch
        if distributed.is_main():
            checkpoint.save_snapshot(self.run_dir, self.model, self.step, epoch)
        probes = [observer.probe(self.model) for observer in self.observers]
        result = evaluate(
            self.model,
            self.eval_loader,
            self.device,
            [p for p in probes if p is not None],
            self.autocast,
            self.channels_last,
        )
        sums = distributed.all_reduce_sum(
            torch.stack([self.sums.loss, self.sums.correct, self.sums.count])
        ).tolist()
        row: dict[str, Any] = {
            "step": self.step,
            "epoch": epoch,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": sums[0] / sums[2] if sums[2] else None,
            "train_acc": sums[1] / sums[2] if sums[2] else None,
            **result,
            "img_per_s": self.sums.images / self.sums.seconds if self.sums.seconds else None,
        }
        for observer, probe in zip(self.observers, probes, strict=True):
            row.update(observer.on_evaluation(self.step, epoch, probe))
        if distributed.is_main():
            metrics.append_row(self.run_dir.metrics, row)
        self.reporter.row(row)
        self.sums = RunningSums.zeros(self.device)

    def save_resume(self) -> None:
        self.check_finite()
        if distributed.is_main():
            checkpoint.save_resume(
                self.run_dir, self.resume_state(), self.cfg.checkpoint.keep_resume
            )
        distributed.barrier()
