"""`vestige-run`: the front door. Check the whole command line, then compose with Hydra and run
the task (tasks/).

vestige-run                                   # train the default (synthetic data, CPU)
vestige-run data=fashion_mnist model=resnet18 trainer.epochs=3
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import traceback

import hydra
from omegaconf import DictConfig

from vestige import distributed
from vestige.choices import register_choices_resolver
from vestige.config import register_configs
from vestige.errors import ConfigError
from vestige.launch.slurm import export_torch_environment
from vestige.preflight import preflight
from vestige.tasks import TASKS
from vestige.tasks.checks import check
from vestige.tasks.compose import CONF_DIR, sweep_overrides
from vestige.tasks.directories import register_resolvers
from vestige.tasks.sweep import record_failure, skip_failed, sweep_of_this_job, sweep_preview
from vestige.train.loop import TrainingDiverged

register_configs()
register_resolvers()

FULL = (errno.ENOSPC, errno.EDQUOT)  # a full disk or quota: nothing written is half-written
def silence_log_file() -> None:
    """Other ranks share rank 0's run directory but write nothing to it: drop the log file
    handler before it opens the file (it is configured with `delay: true`)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        root.removeHandler(handler)
        handler.close()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def hydra_main(cfg: DictConfig) -> None:
    export_torch_environment()  # a SLURM task started by submitit becomes a DDP rank here
    if distributed.launched_rank() != 0:
        silence_log_file()
    sweep = sweep_of_this_job()  # a point of a sweep fails alone: the sweep goes on

    def failed(err: BaseException, exit_code: int, recurs: bool) -> None:
        """A single run ends with `exit_code`; a sweep's point is recorded and the sweep goes on."""
        if sweep is None:
            sys.exit(exit_code)
        if distributed.launched_rank() == 0:
            record_failure(sweep, err, recurs)

    try:
        check(cfg, world_size=distributed.launched_world_size())
        if sweep is not None and skip_failed(sweep, cfg.retry_failed):
            return
        TASKS[cfg.task](cfg)
    except (ConfigError, TrainingDiverged) as err:
        print(f"error: {err}", file=sys.stderr)
        failed(err, 2 if isinstance(err, ConfigError) else 1, recurs=True)
    except KeyboardInterrupt:  # Ctrl-C outside training's clean stop (launch/signals.py)
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except OSError as err:
        if err.errno not in FULL:
            raise
        print(
            f"error: no space left for {err.filename or 'a file'} ({os.strerror(err.errno)}): "
            "free some and run the same command again; it continues from its last intact "
            "checkpoint",
            file=sys.stderr,
        )
        failed(err, 1, recurs=False)
    except Exception as err:  # a crash: its traceback, and in a sweep the next point
        if sweep is None:
            raise
        traceback.print_exc()
        failed(err, 1, recurs=False)
    finally:
        distributed.destroy_process_group()


def main() -> None:
    """Console entry point: check the whole command line first, then hand it to Hydra."""
    export_torch_environment()  # SLURM tasks (srun) become DDP ranks, once, before anything
    argv = sys.argv[1:]
    try:
        args, unknown = preflight(argv)
        if args.multirun and args.cfg and not unknown:  # Hydra cannot print a sweep's config
            print(sweep_preview(sweep_overrides(args.overrides, multirun=True)))
            return
    except ConfigError as err:
        if distributed.local_rank() == 0:  # every rank finds the same error: say it once
            print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    register_choices_resolver()
    hydra_main()


if __name__ == "__main__":
    main()
