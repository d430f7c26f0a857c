"""What task=analyze and task=report add to a run's experiment trackers (`logger=`): an
analysis's summary values at its snapshots' steps (analysis/summary_values.py), a report's
figures. They go to the tracker runs the run's training started, which its `tracking.json`
names (a tracker the run has no run of gets one, as a training would start it).

The trackers are this command's when its `logger=` chooses any (checked before any work, as for
a training), else the run's own, where its curves already are; of those, one not installed here
is left out with a warning, since this command did not ask for it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from vestige import tracking
from vestige.analysis.summary_values import summary_values
from vestige.config import LoggerConfig, RunConfig
from vestige.report.figures import FIGURES
from vestige.results import Run, load_run
from vestige.rundir import RunDir
from vestige.tasks.train import tracked_run
from vestige.tracking import Tracking, build_tracking, recorded_sweep


def chosen_trackers(cfg: RunConfig, run: Run) -> tuple[LoggerConfig, list[str]]:
    """This command's logger and trackers when it chooses any, else the run's own that are
    installed here."""
    if tracking.chosen(cfg.logger):
        return cfg.logger, tracking.chosen(cfg.logger)
    own = run.config.logger
    for name in tracking.chosen(own):
        if tracking.missing(name):
            print(
                f"warning: {run.path.name} was trained with logger={name}, which is not "
                f"installed here: nothing goes to it (pip install 'vestige[{name}]')",
                file=sys.stderr,
            )
    return own, [name for name in tracking.chosen(own) if not tracking.missing(name)]


def run_tracking(cfg: RunConfig, run: Run) -> Tracking | None:
    """The trackers of an analysed or reported run, continuing its tracker runs: grouped by
    the sweep it was trained in, named by its own config."""
    logger, names = chosen_trackers(cfg, run)
    if not names:
        return None
    directory = RunDir(run.path)
    tracked = tracked_run(run.config, directory, recorded_sweep(directory.tracking))
    return build_tracking(logger, tracked, names)


def log_analysis(cfg: RunConfig, run: Run, analysis: str, folder: Path) -> None:
    """The summary values of `analysis`'s tables in `folder`, each once per tracker run."""
    trackers = run_tracking(cfg, run)
    if trackers is not None:
        added = trackers.add_values(summary_values(analysis, folder))
        if added:
            print(f"{analysis}: summary values logged to {', '.join(added)}")


def figure_prefix(folder: Path, run: Path) -> str:
    """`report` for a run's own page (`<run>/report`), `report/<page>` for a page of several
    runs (a sweep's name, or the report folder's), so that pages never replace each other's
    figures."""
    owner = folder.parent if folder.name == "report" else folder
    return "report" if owner == run else f"report/{owner.name}"


def log_report(cfg: RunConfig, runs: list[Path], page: Path) -> None:
    """Each figure of the page, to each of its runs' tracker runs at the run's last step (the
    step the figure shows it at); a figure is logged again only when it changed."""
    folder = page.parent
    drawn = [spec.name for spec in FIGURES if (folder / f"{spec.name}.png").is_file()]
    for path in runs:
        run = load_run(path)
        trackers = run_tracking(cfg, run)
        if trackers is None:
            continue
        prefix = figure_prefix(folder, path)
        figures = {f"{prefix}/{name}": folder / f"{name}.png" for name in drawn}
        last = max((row["step"] for row in run.metrics), default=0)
        added = trackers.add_figures(last, figures)
        if added:
            print(f"report: figures of {path.name} logged to {', '.join(added)}")
