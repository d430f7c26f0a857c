"""task=train: the run directory, the plug-ins a config asks for, the loop, and run.json.

The only place that wires regularizers and observers into the loop, and that knows how a
regularized run finds the alpha = 0 baseline whose kept state it can start from.
"""

from __future__ import annotations

import logging
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
import torchvision
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

import vestige
from vestige import distributed
from vestige.config import RunConfig
from vestige.errors import DamagedFile, invalid
from vestige.io import atomic_write_json, atomic_write_text
from vestige.launch.signals import StopRequest
from vestige.rundir import (
    RunDir,
    SweepDir,
    check_same_run,
    identity,
    read_metrics,
    run_directory,
    run_hash,
)
from vestige.selectivity.observer import SelectivityObserver
from vestige.selectivity.regularizer import SelectivityRegularizer
from vestige.tasks.compose import parse_overrides
from vestige.tasks.sweep import sweep_of_this_job
from vestige.tracking import TrackedRun, Tracking, build_tracking
from vestige.train.loop import Preempted, Training, TrainingDiverged
from vestige.train.plugins import Observer, Regularizer
from vestige.train.progress import Reporter, print_summary

log = logging.getLogger("vestige")


def build_observers(cfg: RunConfig, run: RunDir) -> list[Observer]:
    return [SelectivityObserver(cfg.selectivity, run.path)] if cfg.selectivity.enabled else []


def varying_settings(sweep: SweepDir, run: Path) -> dict[str, str]:
    """This point's values of the settings that differ between its sweep's points: what a
    tracker's comparison of the points is by."""
    points = {
        point: {o.get_key_element(): o.get_value_element_as_str() for o in parse_overrides(given)}
        for point, given in sweep.runs()
        if given is not None
    }
    mine = points.get(run, {})
    return {k: v for k, v in mine.items() if len({p.get(k) for p in points.values()}) > 1}


def tracked_run(
    cfg: RunConfig, run: RunDir, sweep: tuple[str | None, dict[str, str]] | None = None
) -> TrackedRun:
    """What the trackers are told about this run. A point of a sweep names the sweep, so that
    its points are grouped: `sweep` is (its name, this point's varying settings), by default
    those of this job's sweep (the record tasks/sweep.py keeps)."""
    directory = run.path.resolve()
    if sweep is None:
        job = sweep_of_this_job()
        sweep = (job.path.name, varying_settings(job, directory)) if job else (None, {})
    return TrackedRun(
        name=directory.name,
        directory=directory,
        config=OmegaConf.to_container(cfg, resolve=True),
        run_hash=run_hash(cfg),
        identity=identity(cfg),
        outputs=Path(cfg.outputs).expanduser(),
        sweep=sweep[0],
        varying=sweep[1],
        history=lambda: read_metrics(run.metrics),
        state=run.tracking,
    )


@contextmanager
def tracked(tracking: Tracking | None) -> Iterator[None]:
    """The trackers' runs end as the training does: finished; killed when it is stopped (it
    continues later); failed when it diverges or crashes."""
    if tracking is None:
        yield
        return
    try:
        yield
    except (Preempted, KeyboardInterrupt):
        tracking.finish("killed")
        raise
    except BaseException:
        tracking.finish("failed")
        raise
    tracking.finish("finished")


def build_regularizers(cfg: RunConfig) -> list[Regularizer]:
    selective = cfg.regularizer.name == "selectivity"
    return [SelectivityRegularizer(cfg.regularizer, cfg.selectivity.negative)] if selective else []


def shared_prefix(
    cfg: RunConfig, regularizers: list[Regularizer], iterations_per_epoch: int
) -> tuple[RunDir, int] | None:
    """Where a regularized run can start instead of step 0: its alpha = 0 baseline's kept state.

    A run whose regularizers change nothing for its first k steps computes exactly what the same
    config with alpha = 0 computes up to k (tests/test_fork.py), so when that baseline has run and
    kept a full state at some step s <= k (`checkpoint.forkable`), starting from it changes
    nothing but the time taken. Without such a state the run trains from step 0; either way its
    identity and results are those of the run from scratch. The regularization-windows sweep
    relies on this to share the common prefix with its baseline.
    """
    if cfg.fork["from"] is not None or not regularizers:
        return None
    starts = [r.inactive_until(iterations_per_epoch) for r in regularizers]
    if None in starts or min(starts) == 0:
        return None
    tree = OmegaConf.to_container(cfg, resolve=True)
    tree["regularizer"]["alpha"] = 0.0
    baseline = RunDir(Path(run_directory(tree)).resolve())
    kept = [
        int(path.stem.removeprefix("step_"))
        for path in baseline.forkable.glob("step_*.sha256")  # written last
    ]
    usable = [step for step in kept if 0 < step <= min(starts)]
    return (baseline, max(usable)) if usable else None


def versions() -> dict[str, Any]:
    """Versions that produced a run: python, torch, torchvision, vestige and the git commit."""
    source = Path(vestige.__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=source, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "vestige": vestige.__version__,
        "git_sha": sha,
        "git_dirty": None
        if sha is None
        else bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def check_train(cfg: RunConfig) -> None:
    """`run=` chooses the run that task=analyze or report reads; training is never pointed at
    another run that way (the config names its own directory), so the command is refused."""
    if cfg.run is None:
        return
    try:
        command = RunDir(cfg.run).read_info().get("command")
    except (OSError, ValueError):
        command = None
    how = (
        f"to continue that run, rerun its own command: vestige-run {' '.join(command[1:])}"
        if command
        else "drop run= (a run's config names its directory) or set hydra.run.dir=<directory>"
    )
    raise invalid("run", cfg.run, f"task=train does not take run=; {how}")


def warn_if_resumed_differently(
    before: dict[str, Any], now: dict[str, Any], model: torch.nn.Module
) -> None:
    """What a resume cannot keep bitwise: another CPU thread count changes the order of float
    sums; another world size changes BatchNorm's per-rank batch statistics."""
    if before["threads"] != now["threads"] and now["device"] == "cpu":
        log.warning(
            "resumed with %d CPU threads where the run so far used %d: results continue "
            "correctly but not bitwise as an uninterrupted run",
            now["threads"],
            before["threads"],
        )
    norms = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.SyncBatchNorm)
    if before["world_size"] != now["world_size"] and any(
        isinstance(m, norms) for m in model.modules()
    ):
        log.warning(
            "resumed on %d rank(s) where the run so far used %d: BatchNorm now normalises over "
            "batches of another size per rank, so the run differs from one on a fixed number",
            now["world_size"],
            before["world_size"],
        )


def record_start(run: RunDir, cfg: RunConfig, training: Training) -> None:
    """config.yaml, and run.json with this invocation added to the run's history."""
    atomic_write_text(run.config, OmegaConf.to_yaml(cfg, resolve=True))
    info = run.read_info()
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    invocation = {
        "time": now,
        "host": socket.gethostname(),
        "world_size": training.world,
        "device": str(training.device),
        "threads": torch.get_num_threads(),
        "command": sys.argv,
    }
    earlier = info.get("invocations", [])
    if earlier:
        warn_if_resumed_differently(earlier[-1], invocation, training.model)
    run.update_info(
        invocations=[*earlier, invocation],
        status="running",
        run_hash=run_hash(cfg),
        identity=identity(cfg),
        seed=cfg.seed,
        created=info.get("created", now),
        versions=versions(),
        host=invocation["host"],
        world_size=training.world,
        device=invocation["device"],
        dataset=training.dataset_info,
        iterations_per_epoch=training.iterations_per_epoch,
        total_steps=training.total,
        command=sys.argv,
    )


def train(cfg: RunConfig) -> None:
    """Train one run, or continue it, in the directory its config names (outputs/runs/<name>)."""
    run = RunDir(HydraConfig.get().runtime.output_dir)
    main = distributed.is_main()
    try:
        check_same_run(run, cfg)
    except DamagedFile as err:  # its resume states hold all a run needs to go on
        if main:
            print(f"warning: {err}", file=sys.stderr)
            atomic_write_json(run.info, {})
        distributed.barrier()
    if run.read_info().get("status") == "complete":
        if main:
            print(f"run {run.path} is already complete; nothing to do.")
            print_summary(
                read_metrics(run.metrics), f"{run.path.name} (complete)", cfg.trainer.progress
            )
        return
    stop = StopRequest()
    with stop.installed(), run.exclusive() if main else nullcontext():
        fresh = not run.info.exists()
        regularizers = build_regularizers(cfg)
        # only rank 0 logs: the other ranks have no trackers at all
        tracking = build_tracking(cfg.logger, tracked_run(cfg, run)) if main else None
        try:
            training = Training(
                cfg,
                run,
                [*build_observers(cfg, run), *([tracking] if tracking else [])],
                regularizers,
                Reporter(cfg.trainer.progress, enabled=main),
                should_stop=stop.requested,
                prefix=lambda ipe: shared_prefix(cfg, regularizers, ipe),
            )
        except BaseException:  # a run that could not start leaves no directory behind
            if main and fresh:
                run.remove_unstarted()
            raise
        if main:
            record_start(run, cfg, training)
        log.info(
            "%s %s on %s, %d rank(s)",
            "starting" if fresh else "continuing",
            run.path,
            training.device,
            training.world,
        )
        try:
            with tracked(tracking):
                rows = training.run()
        except TrainingDiverged as err:
            if main:
                run.update_info(status="diverged")
                with run.log.open("a") as log_file:  # the terminal gets it from run.py
                    log_file.write(f"error: {err}\n")
            raise
        except Preempted as stopped:
            requeued = False
            if main:
                status = "stopped" if stop.interrupted else "preempted"
                run.update_info(status=status, steps=stopped.step)
                requeued = stop.requeue()
                cause = stop.received.name if stop.received else "a signal to another rank"
                print(
                    f"{cause}: stopped at step {stopped.step} with the resume state "
                    f"saved in {run.path}; "
                    + ("the job is requeued" if requeued else "the same command continues")
                )
            sys.exit(stop.exit_code(requeued))
        if main:
            run.update_info(status="complete", steps=training.total)
            print_summary(rows, run.path.name, cfg.trainer.progress)
            print(f"run directory: {run.path}")
