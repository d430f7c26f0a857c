"""`vestige-run`: compose conf/, check it, and dispatch by `task`.

vestige-run                                   # train the default (synthetic data, CPU)
vestige-run data=fashion_mnist model=resnet18 trainer.epochs=3
"""

from __future__ import annotations

import logging
import platform
import shutil
import socket
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import hydra
import torch
import torchvision
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import vestige
from vestige.config import register_configs, validate
from vestige.errors import ConfigError
from vestige.launch.signals import StopRequest
from vestige.launch.slurm import export_torch_environment
from vestige.plugins import build_observers, build_regularizers
from vestige.preflight import CONF_DIR, preflight
from vestige.rundir import RunDir, atomic_write_text, identity, register_resolvers, run_hash
from vestige.train import distributed
from vestige.train.loop import Preempted, Training, TrainingDiverged
from vestige.train.metrics import read_metrics
from vestige.train.progress import Reporter, print_summary

log = logging.getLogger("vestige")

register_configs()
register_resolvers()


def versions() -> dict[str, Any]:
    """Versions that produced a run: python, torch, torchvision, vestige and the git commit."""
    source = Path(__file__).resolve().parent

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


def silence_log_file() -> None:
    """Other ranks share rank 0's run directory but write nothing to it: drop the log file
    handler before it opens the file (it is configured with `delay: true`)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        root.removeHandler(handler)
        handler.close()


def train(cfg: DictConfig) -> None:
    run = RunDir(HydraConfig.get().runtime.output_dir)
    main = distributed.is_main()
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
        try:
            training = Training(
                cfg,
                run,
                build_observers(cfg, run),
                build_regularizers(cfg),
                Reporter(cfg.trainer.progress, enabled=main),
                should_stop=stop.requested,
            )
        except ConfigError:
            if main and fresh:
                shutil.rmtree(run.path, ignore_errors=True)
            raise
        if main:
            atomic_write_text(run.config, OmegaConf.to_yaml(cfg, resolve=True))
            info = run.read_info()
            run.update_info(
                status="running",
                run_hash=run_hash(cfg),
                identity=identity(cfg),
                seed=cfg.seed,
                created=info.get("created", time.strftime("%Y-%m-%dT%H:%M:%S%z")),
                versions=versions(),
                host=socket.gethostname(),
                world_size=training.world,
                device=str(training.device),
                dataset=training.dataset_info,
                iterations_per_epoch=training.iterations_per_epoch,
                command=sys.argv,
            )
        log.info(
            "%s %s on %s, %d rank(s)",
            "starting" if fresh else "continuing",
            run.path,
            training.device,
            training.world,
        )
        try:
            rows = training.run()
        except TrainingDiverged:
            if main:
                run.update_info(status="diverged")
            raise
        except Preempted as stopped:
            requeued = False
            if main:
                run.update_info(status="preempted", steps=stopped.step)
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


def analyze(cfg: DictConfig) -> None:
    from vestige.analysis.driver import analyze_run

    analyze_run(cfg)


def collect(cfg: DictConfig) -> None:
    from vestige.report.collect import collect as collect_sweep

    collect_sweep(Path(cfg.sweep).expanduser().resolve(), cfg.trainer.progress)


def report(cfg: DictConfig) -> None:
    from vestige.report.build import build_report

    print(f"report: {build_report(cfg)}")


TASKS = {"train": train, "analyze": analyze, "collect": collect, "report": report}


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def hydra_main(cfg: DictConfig) -> None:
    export_torch_environment()  # SLURM tasks (srun, submitit) become DDP ranks
    if distributed.launched_rank() != 0:
        silence_log_file()
    try:
        validate(cfg, world_size=distributed.launched_world_size())
        TASKS[cfg.task](cfg)
    except (ConfigError, TrainingDiverged) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2 if isinstance(err, ConfigError) else 1)
    finally:
        distributed.destroy_process_group()


def main() -> None:
    """Console entry point: validate the whole command line first, then hand it to Hydra."""
    try:
        preflight(sys.argv[1:])
    except ConfigError as err:
        if distributed.local_rank() == 0:  # every rank finds the same error: say it once
            print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    hydra_main()


if __name__ == "__main__":
    main()
