"""The training loop: read it top to bottom in `Training.run`.

At every step of the snapshot schedule the loop writes a weights-only snapshot, evaluates (with
the observers' probes riding along) and appends one metrics row; at every resume point it writes
the rolling resume state. Both are copied to host memory and written by a background writer
(train/writer.py), which the loop closes however training ends. Regularizers add to the loss;
observers measure. Nothing here knows what they compute.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from vestige import distributed, precision
from vestige.config import RunConfig
from vestige.data import build_datasets
from vestige.data.transforms import batch_mixing
from vestige.errors import ConfigError
from vestige.models import build_model
from vestige.rundir import RunDir, read_metrics
from vestige.seeding import configure_determinism, derive_seed, seed_everything
from vestige.step import Clock
from vestige.train import checkpoint, fork, metrics
from vestige.train.batches import eval_loader, train_loader
from vestige.train.evaluate import evaluate
from vestige.train.initialization import initial_weights
from vestige.train.optim import build_optimizer, build_scheduler
from vestige.train.plugins import Observer, Regularizer, RowSink
from vestige.train.progress import Reporter
from vestige.train.writer import CheckpointWriter

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class Preempted(Exception):
    """Training stopped on request before its end; the resume state at `step` is saved."""

    def __init__(self, step: int) -> None:
        super().__init__(f"stopped at step {step}")
        self.step = step


# Under DDP the ranks agree on stopping through an all-reduce, every this many steps; a single
# process checks its own flag every step.
STOP_CHECK_EVERY = 10


def never() -> bool:
    return False


PrefixFinder = Callable[[int], tuple[RunDir, int] | None]


def no_prefix(iterations_per_epoch: int) -> None:
    return None


@dataclass
class RunningSums:
    """Sums since the last metrics row, kept on the device so that no step waits for the host.

    `loss`, `correct` and `count` are per image; any other key (a regularizer's alpha or R) is
    summed per step and reported as its mean over the steps.
    """

    device: torch.device
    values: dict[str, torch.Tensor] = field(default_factory=dict)
    seconds: float = 0.0
    images: int = 0

    def add(self, key: str, value: torch.Tensor | float) -> None:
        if key not in self.values:
            self.values[key] = torch.zeros((), dtype=torch.float64, device=self.device)
        self.values[key] += value

    def get(self, key: str) -> torch.Tensor:
        return self.values.get(key, torch.zeros((), dtype=torch.float64, device=self.device))

    def summed_over_ranks(self) -> dict[str, torch.Tensor]:
        """Every key's sum over all ranks, on every rank (a collective)."""
        keys = sorted(self.values)
        if not keys:
            return {}
        totals = distributed.all_reduce_sum(torch.stack([self.values[k] for k in keys]))
        return dict(zip(keys, totals.unbind(), strict=True))

    def reduced_means(self) -> dict[str, float | None]:
        """Means over all ranks: train loss and accuracy per image, other keys per step."""
        totals = {key: value.item() for key, value in self.summed_over_ranks().items()}
        if not totals:
            return {"train_loss": None, "train_acc": None}
        count, steps = totals.pop("count"), totals.pop("steps")  # steps: summed over ranks
        means = {
            "train_loss": totals.pop("loss") / count,
            "train_acc": totals.pop("correct") / count,
        }
        return means | {key: value / steps for key, value in totals.items()}

    def state_dict(self) -> dict[str, Any]:
        """The sums of all ranks (a collective), so that rank 0 alone can save them."""
        return {
            "values": {k: v.cpu().clone() for k, v in self.summed_over_ranks().items()},
            "seconds": self.seconds,
            "images": self.images,
        }

    def load(self, state: dict[str, Any]) -> None:
        """Rank 0 continues from the saved sums of all ranks, the others from zeros: reduced
        over ranks, they add up to the totals of the uninterrupted run."""
        main = distributed.is_main()
        self.values = {
            k: (v if main else torch.zeros_like(v)).to(self.device)
            for k, v in state["values"].items()
        }
        self.seconds, self.images = state["seconds"], state["images"]


class Training:
    """One run's training, from its config to its finished run directory."""

    def __init__(
        self,
        cfg: RunConfig,
        run: RunDir,
        observers: list[Observer],
        regularizers: list[Regularizer],
        reporter: Reporter,
        should_stop: Callable[[], bool] = never,
        prefix: PrefixFinder = no_prefix,
    ) -> None:
        """`prefix(iterations_per_epoch)`: a run whose first steps another run has computed,
        and the step up to which it has (tasks/train.py: the alpha = 0 baseline of a
        regularized run), or None: see `restore`."""
        self.cfg, self.run_dir, self.observers, self.regularizers = (
            cfg,
            run,
            observers,
            regularizers,
        )
        self.reporter = reporter
        self.should_stop = should_stop
        self.prefix = prefix
        self.device = distributed.select_device(cfg.device)
        distributed.init_process_group(self.device)
        self.rank, self.world = distributed.rank(), distributed.world_size()
        configure_determinism(cfg.trainer.deterministic)
        t = cfg.trainer
        cuda = self.device.type == "cuda"
        self.autocast = t.precision == "bf16" or (t.precision == "auto" and cuda)
        if cuda and not self.autocast:
            precision.allow_tf32_matmuls()
        self.channels_last = str(t.channels_last).lower() == "true" or (
            t.channels_last == "auto" and cuda
        )

        seed_everything(derive_seed(cfg.seed, "init", scheme="sha256"))
        splits = build_datasets(cfg.data, derive_seed(cfg.seed, "augment", scheme="sha256"))
        self.train_set = splits.train
        self.mixing = batch_mixing(cfg.data.mixup, cfg.data.cutmix, splits.num_classes)
        self.dataset_info = {
            "num_classes": splits.num_classes,
            "channels": splits.channels,
            "image_size": splits.image_size,
            "train_size": len(splits.train),
            "eval_size": len(splits.eval),
            **splits.class_counts(),
        }
        model = build_model(
            cfg.model,
            splits.num_classes,
            splits.channels,
            splits.image_size,
            initial_weights(cfg),
        )
        model = model.to(self.device)
        if self.world > 1:
            # one init everywhere, then a stream per rank: dropout and stochastic depth draw
            # different masks on each rank's images
            seed_everything(derive_seed(cfg.seed, f"rank {self.rank}", scheme="sha256"))
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if t.sync_batchnorm and self.world > 1:
            if not cuda:
                raise ConfigError(
                    "trainer.sync_batchnorm=true is invalid on the CPU: SyncBatchNorm needs "
                    "CUDA; set it to false"
                )
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        workers = cfg.data.num_workers
        self.loader, self.batches = train_loader(
            splits.train,
            t.batch_size // self.world,
            derive_seed(cfg.seed, "data", scheme="sha256"),
            self.rank,
            self.world,
            workers,
            self.device,
        )
        self.eval_loader = eval_loader(
            splits.eval, t.eval_batch_size, self.rank, self.world, workers, self.device
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
        clock = Clock(ipe, self.total)
        self.scheduler = build_scheduler(cfg.sched, self.optimizer, clock)
        self.snapshot_steps = set(clock.schedule(cfg.checkpoint.snapshots)) | {self.total}
        self.forkable_steps = set(clock.schedule(cfg.checkpoint.forkable))
        self.resume_steps = self.forkable_steps | {self.total}
        if cfg.checkpoint.resume_every:
            every = clock.iterations(cfg.checkpoint.resume_every)
            self.resume_steps |= set(range(every, self.total + 1, every)) if every > 0 else set()
        self.step = 0
        self.sums = RunningSums(self.device)
        self.ddp_model: nn.Module = (
            DistributedDataParallel(model, device_ids=[self.device] if cuda else None)
            if self.world > 1
            else model
        )
        # the training step's forward (and so its backward); evaluations call the eager model
        self.train_forward: Callable[[torch.Tensor], torch.Tensor] = (
            self.ddp_model
            if t.compile == "off"
            else torch.compile(self.ddp_model, mode=t.compile)
        )

    # -- resume ------------------------------------------------------------------------------

    def restore(self) -> None:
        """Continue from the newest intact resume state, if there is one; else from a fork's
        parent's state (`fork.from`), or from the kept state of a run that computed this run's
        first steps (`prefix`).

        Files written after that state (metrics rows, snapshots) belong to a trajectory that is
        being recomputed and are dropped first, so nothing is duplicated.
        """
        state = checkpoint.load_latest_resume(self.run_dir)
        parent = None
        if state is None and self.cfg.fork["from"]:
            parent = RunDir(Path(self.cfg.fork["from"]).expanduser()), fork.fork_step(self.cfg)
        elif state is None:  # rank 0 decides, so that every rank starts from the same state
            found = self.prefix(self.iterations_per_epoch) if distributed.is_main() else None
            parent = distributed.broadcast_object(found)
        if parent is not None:
            if distributed.is_main():
                fork.inherit_history(*parent, self.run_dir)
                for observer in self.observers:
                    observer.inherit(parent[0].path, parent[1], self.run_dir.path)
            distributed.barrier()
            state = fork.parent_state(*parent)
            log.info("forked from %s at step %d", parent[0].path, state["step"])
            self.reporter.message(f"forked from {parent[0].path} at step {state['step']}")
        step = -1 if state is None else state["step"]
        if distributed.is_main():
            metrics.trim_after(self.run_dir.metrics, step)
            checkpoint.drop_snapshots_after(self.run_dir, step)
        if state is None:
            return
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.sums.load(state["sums"])
        # each rank's own stream (a run resumed on fewer ranks takes the first ones)
        checkpoint.set_rng_state(state["rng"][self.rank % len(state["rng"])])
        self.step = step
        log.info("resumed %s at step %d", self.run_dir.path, step)
        self.reporter.message(f"resumed {self.run_dir.path} at step {step}")

    def resume_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.step // self.iterations_per_epoch,
            "batch_in_epoch": self.step % self.iterations_per_epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "sums": self.sums.state_dict(),
            "rng": distributed.all_gather_object(checkpoint.rng_state()),
        }

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> list[dict[str, Any]]:
        self.restore()
        for observer in self.observers:
            observer.on_train_start(self.model, self.dataset_info["num_classes"], self.step)
        self.reporter.start(self.step, self.total, self.cfg.trainer.epochs)
        with ExitStack() as hooks:
            # closed last: every pending write is on disk before run() returns or raises
            self.writer = hooks.enter_context(
                CheckpointWriter(self.cfg.checkpoint.pending_writes)
            )
            for regularizer in self.regularizers:
                hooks.enter_context(regularizer.attach(self.model, self.iterations_per_epoch))
            try:
                if self.step == 0 and 0 in self.snapshot_steps:
                    self.snapshot_and_evaluate()
                while self.step < self.total:
                    self.train_epoch()
            finally:
                self.reporter.close()
        return read_metrics(self.run_dir.metrics)

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
            self.reporter.advance(self.step)
            if self.step % self.cfg.trainer.log_every == 0:
                self.report_progress(epoch)
            if self.step in self.snapshot_steps:
                self.snapshot_and_evaluate()
            if self.step in self.resume_steps:
                self.save_resume()
            if self.step >= self.total:
                break
            if self.stop_agreed():
                self.stop_early()
            started = time.perf_counter()

    def stop_agreed(self) -> bool:
        """Whether any rank was asked to stop; all ranks answer alike, so they stop together."""
        if self.world == 1:
            return self.should_stop()
        if self.step % STOP_CHECK_EVERY:
            return False
        flag = torch.tensor(float(self.should_stop()), device=self.device)
        return distributed.all_reduce_sum(flag).item() > 0

    def stop_early(self) -> None:
        if self.step not in self.resume_steps:
            self.save_resume()
        self.writer.close()  # every rank leaves once the state to continue from is on disk
        distributed.barrier()
        raise Preempted(self.step)

    def train_step(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        inputs = inputs.to(self.device, non_blocking=True)
        if self.channels_last and inputs.ndim == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        targets = targets.to(self.device, non_blocking=True)
        # Mixup/CutMix: the loss sees soft targets; accuracy and regularizers the true labels
        inputs, soft = self.mixing(inputs, targets) if self.mixing else (inputs, targets)
        accum = self.cfg.trainer.grad_accum
        self.optimizer.zero_grad(set_to_none=True)
        chunks = zip(inputs.chunk(accum), targets.chunk(accum), soft.chunk(accum), strict=True)
        for i, (x, y, y_loss) in enumerate(chunks):
            last = i == accum - 1
            sync = nullcontext() if last or self.world == 1 else self.ddp_model.no_sync()
            with sync:
                with precision.autocast(self.device, self.autocast):
                    logits = self.train_forward(x)
                    cross_entropy = F.cross_entropy(
                        logits.float(), y_loss, label_smoothing=self.cfg.trainer.label_smoothing
                    )
                    loss = cross_entropy
                    for regularizer in self.regularizers:
                        term, logs = regularizer.penalty(self.step, y)
                        loss = loss + term
                        for key, value in logs.items():
                            self.sums.add(key, value.detach().double() / accum)
                (loss / accum).backward()
            with torch.no_grad():
                # train_loss is the cross-entropy alone; regularizers log their own terms
                self.sums.add("loss", cross_entropy.detach().double() * len(y))
                self.sums.add("correct", (logits.argmax(1) == y).sum())
                self.sums.add("count", len(y))
        self.sums.add("steps", 1)
        self.optimizer.step()
        self.scheduler.step()

    def check_finite(self, weights: bool = False) -> None:
        """The loss since the last check is finite and, before anything is saved (`weights`),
        every parameter and buffer too: the last step's update may break the weights after a
        finite loss, and a saved state must be a good one to go back to."""
        loss = self.sums.get("loss")
        if not torch.isfinite(loss):
            broken = f"the training loss became {loss.item()}"
        elif weights and not self._weights_finite():
            broken = "the weights became infinite or NaN"
        else:
            return
        raise self.diverged(broken)

    def diverged(self, what: str) -> TrainingDiverged:
        return TrainingDiverged(
            f"{what} at step {self.step}; the last good checkpoint is kept in "
            f"{self.run_dir.checkpoints}: lower optim.lr or check the data"
        )

    def _weights_finite(self) -> bool:
        tensors = [*self.model.parameters(), *self.model.buffers()]
        flags = [t.detach().isfinite().all() for t in tensors if t.is_floating_point()]
        return bool(torch.stack(flags).all()) if flags else True

    def report_progress(self, epoch: int) -> None:
        self.check_finite()
        count = max(self.sums.get("count").item(), 1.0)
        rate = self.sums.images / max(self.sums.seconds, 1e-9)
        seconds_per_step = self.sums.seconds / max(self.sums.get("steps").item(), 1.0)
        self.reporter.stats(
            self.step,
            epoch,
            self.sums.get("loss").item() / count,
            self.sums.get("correct").item() / count,
            rate,
            (self.total - self.step) * seconds_per_step,
        )

    def snapshot_and_evaluate(self) -> None:
        """Snapshot, evaluate with the observers' probes, and append one metrics row."""
        self.check_finite(weights=True)
        epoch = self.step / self.iterations_per_epoch
        probes = [observer.probe(self.model) for observer in self.observers]
        result = evaluate(
            self.model,
            self.eval_loader,
            self.device,
            [p for p in probes if p is not None],
            self.autocast,
            self.channels_last,
        )
        if not math.isfinite(result["eval_loss"]):  # finite weights, but too large to use
            raise self.diverged(f"the evaluation loss became {result['eval_loss']}")
        if distributed.is_main():
            weights = checkpoint.host_copy(self.model.state_dict())
            self.writer.submit(
                partial(checkpoint.save_snapshot, self.run_dir, weights, self.step, epoch)
            )
        row: dict[str, Any] = {
            "step": self.step,
            "epoch": epoch,
            "lr": self.optimizer.param_groups[0]["lr"],
            **self.sums.reduced_means(),
            **result,
            "img_per_s": self.sums.images / self.sums.seconds if self.sums.seconds else None,
        }
        for observer, probe in zip(self.observers, probes, strict=True):
            row.update(observer.on_evaluation(self.step, epoch, probe))
        if distributed.is_main():
            metrics.append_row(self.run_dir.metrics, row)
            for sink in self.observers:
                if isinstance(sink, RowSink):
                    sink.on_row(row)
        self.reporter.row(row)
        self.sums = RunningSums(self.device)

    def save_resume(self) -> None:
        self.check_finite(weights=True)
        state = self.resume_state()  # every rank takes part: the running sums are reduced
        if distributed.is_main():
            self.writer.submit(partial(self.write_resume, checkpoint.host_copy(state)))
        distributed.barrier()

    def write_resume(self, state: dict[str, Any]) -> None:
        """On the writer thread: the resume state, then, at a forkable step, the links that
        keep it (which read the file just written)."""
        path = checkpoint.save_resume(self.run_dir, state, self.cfg.checkpoint.keep_resume)
        if state["step"] in self.forkable_steps:
            fork.keep_forkable(self.run_dir, path, state["step"])
