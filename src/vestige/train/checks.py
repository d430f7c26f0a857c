"""The checks of what the loop reads (`optim`, `sched`, `trainer`, `checkpoint`, `fork`,
`init`): one-line ConfigErrors, before any work (tasks/checks.py runs them)."""

from __future__ import annotations

from vestige.config import RunConfig, TrainerConfig
from vestige.data import known_train_size
from vestige.errors import invalid
from vestige.step import check_snapshot_specs, check_step
from vestige.train.fork import check_fork
from vestige.train.initialization import check_init
from vestige.train.optim import OPTIMIZERS, SCHEDULES

PRECISIONS = ("auto", "bf16", "fp32")
PROGRESS = ("auto", "rich", "plain", "none")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def check_training(cfg: RunConfig, world_size: int) -> None:
    """The first bad value of the sections the training loop reads, for `world_size` ranks."""
    if cfg.optim.name not in OPTIMIZERS:
        raise invalid("optim", cfg.optim.name, "choose sgd or adamw")
    if cfg.optim.lr <= 0:
        raise invalid("optim.lr", cfg.optim.lr, "use a positive learning rate such as 0.1")
    if cfg.optim.weight_decay < 0:
        raise invalid("optim.weight_decay", cfg.optim.weight_decay, "use 0 or a positive value")
    if cfg.sched.name not in SCHEDULES:
        raise invalid("sched", cfg.sched.name, "choose constant, step, multistep or cosine")
    check_step("sched.step_size", cfg.sched.step_size)
    check_step("sched.warmup", cfg.sched.warmup)
    for i, milestone in enumerate(cfg.sched.milestones):
        check_step(f"sched.milestones[{i}]", milestone)
    _check_trainer(cfg.trainer, world_size)
    size = known_train_size(cfg.data)
    if size is not None and size // world_size < cfg.trainer.batch_size // world_size:
        fix = f"it is larger than the training split ({size} images): lower it or use more data"
        raise invalid("trainer.batch_size", cfg.trainer.batch_size, fix)
    check_snapshot_specs("checkpoint.snapshots", cfg.checkpoint.snapshots)
    check_snapshot_specs("checkpoint.forkable", cfg.checkpoint.forkable)
    check_fork(cfg)
    check_init(cfg)
    if cfg.checkpoint.resume_every is not None:
        check_step("checkpoint.resume_every", cfg.checkpoint.resume_every)
    if cfg.checkpoint.keep_resume < 1:
        raise invalid("checkpoint.keep_resume", cfg.checkpoint.keep_resume, "keep at least 1")
    if cfg.checkpoint.pending_writes < 1:
        fix = "allow at least 1 write in flight"
        raise invalid("checkpoint.pending_writes", cfg.checkpoint.pending_writes, fix)


def _check_trainer(t: TrainerConfig, world_size: int) -> None:
    if t.compile not in COMPILE_MODES:
        raise invalid("trainer.compile", t.compile, f"choose {', '.join(COMPILE_MODES)}")
    if t.epochs <= 0:
        raise invalid("trainer.epochs", t.epochs, "train for at least 1 epoch")
    if t.batch_size <= 0:
        raise invalid("trainer.batch_size", t.batch_size, "use a positive global batch size")
    if t.batch_size % (world_size * t.grad_accum) != 0:
        raise invalid(
            "trainer.batch_size",
            t.batch_size,
            f"must be divisible by world size x grad_accum = {world_size * t.grad_accum}",
        )
    if t.eval_batch_size <= 0:
        raise invalid("trainer.eval_batch_size", t.eval_batch_size, "use a positive batch size")
    if t.grad_accum <= 0:
        raise invalid("trainer.grad_accum", t.grad_accum, "use 1 or more micro-batches per step")
    if not 0 <= t.label_smoothing < 1:
        raise invalid("trainer.label_smoothing", t.label_smoothing, "use a value in [0, 1)")
    if t.precision not in PRECISIONS:
        raise invalid("trainer.precision", t.precision, "choose auto, bf16 or fp32")
    if str(t.channels_last) not in ("auto", "true", "false", "True", "False"):
        raise invalid("trainer.channels_last", t.channels_last, "choose auto, true or false")
    if t.progress not in PROGRESS:
        raise invalid("trainer.progress", t.progress, "choose auto, rich, plain or none")
    if t.log_every <= 0:
        raise invalid("trainer.log_every", t.log_every, "log every 1 or more steps")
    if t.max_steps is not None and t.max_steps <= 0:
        raise invalid("trainer.max_steps", t.max_steps, "use a positive number of steps, or null")
