"""Check a command line before Hydra starts: every run it would launch composes and passes its
checks.

Hydra reports composition errors as several lines and only after creating the output directory;
here the same overrides are composed first (each point of a `-m` sweep, tasks/compose.py), and
the first mistake becomes one line naming the key, the value and the fix, with nothing written
to disk. The command line is read with Hydra's own argument parser.
"""

from __future__ import annotations

from argparse import Namespace

from hydra._internal.utils import get_args_parser
from omegaconf import OmegaConf

from vestige.config import RunConfig
from vestige.distributed import launched_world_size
from vestige.errors import ConfigError
from vestige.tasks.checks import check
from vestige.tasks.compose import compose_point, expand_sweep, is_hydra_override, sweep_overrides
from vestige.tasks.directories import check_directory, working_directory


def preflight(argv: list[str]) -> tuple[Namespace, list[str]]:
    """Raise ConfigError for the first point of the command line that would fail (a print-only
    `--cfg` command too); a request for help or information, or a flag Hydra itself will refuse,
    is left to Hydra. Returns the command line as Hydra's parser reads it."""
    args, unknown = get_args_parser().parse_known_args(argv)
    asks = (args.help, args.hydra_help, args.info, args.shell_completion)
    if any(asks) or unknown:
        return args, unknown
    if not args.multirun:
        check_single_point(args.overrides)
    points = expand_sweep(sweep_overrides(args.overrides, args.multirun))
    world = launched_world_size()
    for point in points:
        cfg = compose_point(point)
        check(cfg, world_size=world, here=runs_here(point))
        check_job_directory(cfg, point)
    if any(is_hydra_override(o) for o in points[0]):
        compose_point(points[0], with_hydra=True)
    return args, unknown


def check_job_directory(cfg: RunConfig, point: list[str]) -> None:
    """The folder Hydra will make for the job (`hydra.run.dir=`, or the one the config names)."""
    chosen = [o.partition("=")[2] for o in point if o.startswith("hydra.run.dir=")]
    key = "hydra.run.dir" if chosen else "outputs"
    tree = OmegaConf.to_container(cfg, resolve=True)
    check_directory(chosen[-1] if chosen else working_directory(tree), key)


def runs_here(point: list[str]) -> bool:
    """Hydra's basic launcher runs a point on this machine; any other (SLURM) submits it to
    another, whose devices this one cannot see."""
    launchers = [o.partition("=")[2] for o in point if o.startswith("hydra/launcher=")]
    return launchers in ([], ["basic"])


def check_single_point(overrides: list[str]) -> None:
    """A preset that is a sweep (`hydra.sweeper.params`), run without -m, would train or analyse
    one point silently: refused in one line, unless the command line sets every swept key."""
    if not any(o.startswith("experiment=") for o in overrides):
        return
    cfg = compose_point(overrides, with_hydra=True)
    if cfg.task not in ("train", "analyze"):
        return
    given = {o.lstrip("+~").partition("=")[0] for o in overrides}
    swept = list(cfg.hydra.sweeper.params or {})
    unset = [key for key in swept if key not in given]
    if unset:
        raise ConfigError(
            f"{next(o for o in overrides if o.startswith('experiment='))} is a sweep over "
            f"{', '.join(swept)}: run it with -m (vestige-run -m {' '.join(overrides)}), or choose "
            f"one point by also setting {', '.join(unset)}"
        )
