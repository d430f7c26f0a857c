"""`vestige-run task=list`: the runs and sweeps of a folder, and how far each got.

One row a run: its status (rundir.RunDir.status: running only while a process holds the run's
lock), its progress in steps, the last evaluation's accuracy and mean class selectivity, its
settings (what differs from the defaults, and its seed) and when its directory last changed.
Each sweep under `<outputs>/sweeps` gets the same rows for its points, by the settings that vary
between them (as task=collect tables them). A table on a terminal; aligned plain lines elsewhere
(a pipe, a SLURM log).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from vestige.errors import ConfigError, DamagedFile
from vestige.results import Point, Sweep, read_point, setting_text
from vestige.rundir import RunDir, SweepDir

NUMBERS = ("step", "eval acc", "SI mean")  # right-aligned; every other column is text
Section = tuple[str, list[dict[str, str]]]  # a title and its rows


def listed_folder(cfg: Mapping[str, Any]) -> Path:
    """`sweep=` when given, else `outputs=` (default outputs/)."""
    return Path(cfg.get("sweep") or cfg["outputs"]).expanduser().resolve()


def check_list(cfg: Mapping[str, Any]) -> None:
    """task=list needs a folder to read: one line naming the key otherwise."""
    if not listed_folder(cfg).is_dir():
        key = "sweep" if cfg.get("sweep") else "outputs"
        raise ConfigError(
            f"{key}={cfg[key]!r} is invalid: no such folder; task=list lists the runs and sweeps "
            "under outputs=<folder> (default outputs), or one sweep=<folder>"
        )


def last_touched(run: Path) -> str:
    """When the run directory or anything at its top (run.json, metrics, log, checkpoints)
    last changed, in local time; '-' for a point whose directory is not there yet."""
    stamps = []
    for path in (run, *(run.iterdir() if run.is_dir() else ())):
        try:
            stamps.append(path.stat().st_mtime)
        except FileNotFoundError:  # a temporary file of an atomic write, gone since
            pass
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(max(stamps))) if stamps else "-"


def progress(point: Point) -> str:
    """`<step>/<total>`: the step a stopped or finished run recorded, or of its last evaluation
    (a running run's); `-` before the run starts, `?` when its run.json cannot be read."""
    if point.status == "damaged":
        return "?"
    info = RunDir(point.run).read_info()
    if not info:
        return "-"
    per_epoch = info.get("iterations_per_epoch")
    evaluated = round(point.epoch * per_epoch) if point.epoch is not None and per_epoch else 0
    done = max(info.get("steps", 0), evaluated)
    total = info.get("total_steps") or (done if point.status == "complete" else "?")
    return f"{done}/{total}"


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def row(point: Point, keys: list[str]) -> dict[str, str]:
    """A point's row; its settings column holds those of `keys` that it has."""
    given = [key for key in keys if key in point.settings]
    settings = [f"{key}={setting_text(point.settings[key])}" for key in given]
    return {
        "run": point.run.name,
        "status": point.status,
        "step": progress(point),
        "eval acc": number(point.metrics.get("eval_acc")),
        "SI mean": number(point.metrics.get("si/mean")),
        "touched": last_touched(point.run),
        "settings": " ".join(settings),
    }


def listed_point(run: Path) -> Point:
    """A run as read for collect; one whose run.json is damaged is listed as damaged rather than
    stopping the whole listing (its own commands say what is wrong with it)."""
    try:
        return read_point(run, None)
    except DamagedFile:
        return Point(run, {}, "damaged", None, {})


def runs_section(folder: Path) -> Section:
    """Every run directory below `folder`, the most recently touched last, each with its own
    settings."""
    points = [listed_point(run) for run, _ in SweepDir(folder).runs()]
    rows = sorted((row(p, list(p.settings)) for p in points), key=lambda r: r["touched"])
    return f"runs in {folder}: {len(rows)}", rows


def sweep_section(folder: Path) -> Section:
    """A sweep's points in its order, each with the settings that vary between them."""
    sweep = Sweep(folder)
    counts = Counter(point.status for point in sweep.points)
    tally = ", ".join(f"{count} {status}" for status, count in counts.items())
    title = f"sweep {folder.name}: {len(sweep.points)} points" + (f" ({tally})" if tally else "")
    return title, [row(point, sweep.varying) for point in sweep.points]


def sections(folder: Path) -> list[Section]:
    """A sweep folder is one sweep; any other folder: its runs (those under its runs/ if it has
    one, as outputs/ does), then each sweep recorded under its sweeps/, oldest first."""
    if SweepDir(folder).record.exists():
        return [sweep_section(folder)]
    runs = folder / "runs" if (folder / "runs").is_dir() else folder
    found = (folder / "sweeps").iterdir() if (folder / "sweeps").is_dir() else ()
    records = [SweepDir(f).record for f in found if SweepDir(f).record.exists()]
    sweeps = [r.parent for r in sorted(records, key=lambda r: r.stat().st_mtime)]
    return [runs_section(runs), *(sweep_section(sweep) for sweep in sweeps)]


def plain_lines(rows: list[dict[str, str]]) -> str:
    """Rows as aligned columns, a header first; numbers right-aligned, the last column ragged."""
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}

    def line(cells: dict[str, str]) -> str:
        padded = [
            cells[c].rjust(widths[c]) if c in NUMBERS else cells[c].ljust(widths[c])
            for c in columns
        ]
        return "  ".join(padded).rstrip()

    return "\n".join([line({c: c for c in columns}), *(line(r) for r in rows)])


def rich_table(title: str, rows: list[dict[str, str]]) -> Table:
    """Rows as a table; on a narrow terminal a cell folds onto more lines, never cut short."""
    table = Table(title=title)
    for column in rows[0]:
        justify = "right" if column in NUMBERS else "left"
        table.add_column(column, justify=justify, overflow="fold")
    for cells in rows:
        table.add_row(*cells.values())
    return table


def show_listing(folder: Path, style: str = "auto") -> None:
    """Print every section of `folder`: a rich table per section on a terminal (style auto) or
    with style=rich, aligned plain lines otherwise."""
    rich = style == "rich" or (style == "auto" and sys.stdout.isatty())
    console = Console(highlight=False)
    for title, rows in sections(folder):
        if not rows:
            print(title)
        elif rich:
            console.print(rich_table(title, rows))
        else:
            print(f"{title}\n{plain_lines(rows)}")
