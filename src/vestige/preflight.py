"""Check a command line before Hydra starts: every run it would launch composes and passes its
checks.

Hydra reports composition errors as several lines and only after creating the output directory;
here the same overrides are composed first (each point of a `-m` sweep, tasks/compose.py), and
the first mistake becomes one line naming the key, the value and the fix, with nothing written
to disk. The command line is read with Hydra's own argument parser.
"""

from __future__ import annotations

from hydra._internal.utils import get_args_parser

from vestige.distributed import launched_world_size
from vestige.tasks.checks import check
from vestige.tasks.compose import compose_point, expand_sweep, is_hydra_override, sweep_overrides


def preflight(argv: list[str]) -> None:
    """Raise ConfigError for the first point of the command line that would fail; a request for
    help or information, or a flag Hydra itself will refuse, is left to Hydra."""
    args, unknown = get_args_parser().parse_known_args(argv)
    asks = (args.help, args.hydra_help, args.cfg, args.info, args.shell_completion)
    if any(asks) or unknown:
        return
    points = expand_sweep(sweep_overrides(args.overrides, args.multirun))
    world = launched_world_size()
    for point in points:
        check(compose_point(point), world_size=world)
    if any(is_hydra_override(o) for o in points[0]):
        compose_point(points[0], with_hydra=True)
