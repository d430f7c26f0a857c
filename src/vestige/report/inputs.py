"""Which runs a report covers (`run=`, `runs=[...]` or `sweep=`) and where it is written.

A sweep's runs are those its record names (rundir.SweepDir), the ones that have started.

Every check here raises a one-line `ConfigError`; tasks/checks.py calls `report_runs` so that a
bad input is reported before any work starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vestige.errors import ConfigError
from vestige.io import short_hash
from vestige.rundir import RunDir, SweepDir, analysed_run


def is_run_directory(path: Path) -> bool:
    return RunDir(path).config.is_file()


def report_runs(cfg: Mapping[str, Any]) -> list[Path]:
    """The run directories named by exactly one of `run`, `runs` or `sweep`, resolved, in the
    order given (duplicates dropped); with none of them, the run this config trains."""
    given = [key for key in ("run", "runs", "sweep") if cfg.get(key) is not None]
    if not given and "model" in cfg:  # a whole config: the run it trains, if trained
        own = analysed_run(cfg)  # (`vestige-run experiment=X task=report`)
        if is_run_directory(own):
            return [own]
    if len(given) != 1:
        raise ConfigError(
            f"task=report takes one of run=<dir>, runs=[<dir>,...] or sweep=<dir>; got "
            f"{' and '.join(given) or 'none'}: set exactly one"
            + ("" if given else " (or train this config first: its run is reported then)")
        )
    key = given[0]
    if key == "sweep":
        sweep = Path(cfg["sweep"]).expanduser()
        if not sweep.is_dir():
            raise ConfigError(f"sweep={cfg['sweep']!r} is invalid: no such directory")
        paths = [run for run, _ in SweepDir(sweep).runs() if is_run_directory(run)]
        if not paths:
            raise ConfigError(
                f"sweep={cfg['sweep']!r} is invalid: none of its runs has started yet"
            )
    else:
        paths = [Path(cfg["run"])] if key == "run" else [Path(p) for p in cfg["runs"]]
        if not paths:
            raise ConfigError("runs=[] is invalid: name at least one run directory")
    for path in paths:
        if not is_run_directory(path.expanduser()):
            raise ConfigError(
                f"{key}={str(path)!r} is invalid: {path} is not a run directory (no "
                "config.yaml); pass directories under outputs/runs/"
            )
    return list(dict.fromkeys(path.expanduser().resolve() for path in paths))


def report_folder(cfg: Mapping[str, Any], runs: list[Path] | None = None) -> Path:
    """`report.out`, or by default `<sweep>/report` for a sweep, `<run>/report` for one run and
    `<outputs>/reports/<hash of the run names>` for several (the same runs, the same folder);
    `runs`: the config's `report_runs`, when the caller has them already."""
    out = (cfg.get("report") or {}).get("out")
    if out is not None:
        return Path(out).expanduser().resolve()
    runs = report_runs(cfg) if runs is None else runs
    if cfg.get("sweep") is not None:
        return SweepDir(Path(cfg["sweep"]).expanduser().resolve()).report
    if len(runs) == 1:
        return RunDir(runs[0]).report
    digest = short_hash("\n".join(sorted(run.name for run in runs)))
    return (Path(cfg.get("outputs") or "outputs") / "reports" / digest).expanduser().resolve()
