"""What a person watching a run sees: a rich live bar on a terminal, plain lines elsewhere.

SLURM logs and CI capture stdout to files, where carriage returns and ANSI codes turn into noise;
there, every `log_every` steps one plain line (epoch, step, loss, acc, img/s, ETA) is printed and
one fixed-width row per evaluation, in the spirit of airbench's per-epoch table.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

Column = tuple[str, str, str]  # (metrics key, heading, format)
# the columns of every evaluation's row; the selectivity of each stage goes between the two
# lists, so that its rise and fall in the first epoch reads down the table (docs/science.md §1)
LEADING_COLUMNS: list[Column] = [
    ("step", "step", "d"),
    ("epoch", "epoch", ".2f"),
    ("train_loss", "train loss", ".4f"),
    ("train_acc", "train acc", ".4f"),
    ("eval_loss", "eval loss", ".4f"),
    ("eval_acc", "eval acc", ".4f"),
]
TRAILING_COLUMNS: list[Column] = [("si/mean", "SI mean", ".4f"), ("img_per_s", "img/s", ".0f")]
_WIDTH = 7  # at least; a column is as wide as its heading


def row_columns(row: dict[str, Any]) -> list[Column]:
    """The columns of a run's rows: the fixed ones and `SI <stage>` for each stage measured."""
    stages = [key for key in row if key.startswith("si/") and key != "si/mean"]
    return [*LEADING_COLUMNS, *((key, f"SI {key[3:]}", ".4f") for key in stages), *TRAILING_COLUMNS]


def _format(value: Any, spec: str, width: int = _WIDTH) -> str:
    return ("-" if value is None else format(value, spec)).rjust(width)


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _bar(label: str, *fields: str) -> Progress:
    """The live bar of training and of analyses: label, bar, their fields, time spent and left."""
    texts = (TextColumn(field) for field in fields)
    return Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        *texts,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )


class Reporter:
    """Progress output; `style` is rich, plain or none (auto picks rich only on a TTY)."""

    def __init__(self, style: str = "auto", enabled: bool = True) -> None:
        if style == "auto":
            style = "rich" if sys.stdout.isatty() else "plain"
        self.style = style if enabled else "none"
        self._progress: Progress | None = None
        self._task: Any = None
        self._columns: list[Column] | None = None

    def start(self, step: int, total: int, epochs: int) -> None:
        self.total, self.epochs = total, epochs
        if self.style == "rich":
            self._progress = _bar("train", "{task.completed}/{task.total}", "{task.fields[stats]}")
            self._progress.start()
            self._task = self._progress.add_task("train", total=total, completed=step, stats="")

    def advance(self, step: int) -> None:
        """Every step: moves the live bar (nothing is printed in plain mode)."""
        if self._progress is not None:
            self._progress.update(self._task, completed=step)

    def stats(
        self, step: int, epoch: int, loss: float, acc: float, img_per_s: float, eta_seconds: float
    ) -> None:
        """Every `trainer.log_every` steps: running loss and accuracy, throughput, time left."""
        if self._progress is not None:
            stats = f"loss {loss:.4f} acc {acc:.3f} {img_per_s:.0f} img/s"
            self._progress.update(self._task, completed=step, stats=stats)
        elif self.style == "plain":
            print(
                f"epoch {epoch + 1}/{self.epochs}  step {step}/{self.total}  loss {loss:.4f}  "
                f"acc {acc:.4f}  {img_per_s:.0f} img/s  ETA {_duration(eta_seconds)}",
                flush=True,
            )

    def row(self, row: dict[str, Any]) -> None:
        """One fixed-width line per evaluation."""
        if self.style == "none":
            return
        lines = []
        if self._columns is None:
            self._columns = row_columns(row)
            lines.append("  ".join(title.rjust(_WIDTH) for _, title, _ in self._columns))
        lines.append(
            "  ".join(
                _format(row.get(key), spec, max(_WIDTH, len(title)))
                for key, title, spec in self._columns
            )
        )
        self.message("\n".join(lines))

    def message(self, text: str) -> None:
        if self.style == "none":
            return
        if self._progress is not None:
            self._progress.console.print(text, highlight=False, markup=False)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class Countdown:
    """How far a task is through a known number of items that each take many batches (an
    analysis through its snapshots): a rich bar on a terminal; elsewhere a plain line per
    finished item and, while one runs, at most one line every `every` seconds. Progress inside
    an item is counted in batches; the time left comes from the batches the finished items took
    and the time a batch takes."""

    def __init__(
        self,
        label: str,
        total: int,
        style: str = "auto",
        every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if style == "auto":
            style = "rich" if sys.stdout.isatty() else "plain"
        self.label, self.total, self.style = label, total, style
        self.every, self.clock = every, clock
        self.done = self.batches = self.batches_of_done = self.in_item = 0
        self.item = ""
        self.started = self.last_line = clock()
        self._progress: Progress | None = None
        if style == "rich":
            self._progress = _bar(label, "{task.fields[item]}")
            self._progress.start()
            self._task = self._progress.add_task(label, total=total, item="")

    def begin(self, item: str) -> None:
        self.item, self.in_item = item, 0
        if self._progress is not None:
            self._progress.update(self._task, item=f"{self.done + 1}/{self.total} {item}")

    def batch(self) -> None:
        """One batch through the network: moves the bar, or prints a line when one is due."""
        self.batches += 1
        self.in_item += 1
        if self._progress is not None:
            per_item = self.batches_of_done / self.done if self.done else None
            inside = min(self.in_item / per_item, 0.99) if per_item else 0.0
            self._progress.update(self._task, completed=self.done + inside)
        elif self.style == "plain" and self.clock() - self.last_line >= self.every:
            self._print(f"{self.item}: {self.in_item} batches so far")

    def finish(self, text: str) -> None:
        """The current item is done: one line saying what it found."""
        self.done += 1
        self.batches_of_done += self.in_item
        self.in_item = 0
        if self._progress is not None:
            self._progress.update(self._task, completed=self.done)
            self._progress.console.print(text, highlight=False, markup=False)
        elif self.style == "plain":
            self._print(text)

    def seconds_left(self) -> float | None:
        """None until an item has finished (how many batches an item takes is unknown)."""
        if not self.done or not self.batches:
            return None
        per_batch = (self.clock() - self.started) / self.batches
        batches_left = self.batches_of_done / self.done * (self.total - self.done) - self.in_item
        return max(0.0, batches_left) * per_batch

    def _print(self, text: str) -> None:
        self.last_line = self.clock()
        left = self.seconds_left()
        print(
            f"{text}  [{self.label} {self.done}/{self.total}, elapsed "
            f"{_duration(self.last_line - self.started)}, ETA "
            f"{'-' if left is None else _duration(left)}]",
            flush=True,
        )

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def summary_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    columns = row_columns(rows[0] if rows else {})
    for _, heading, _ in columns:
        table.add_column(heading, justify="right")
    for row in rows:
        table.add_row(*(_format(row.get(key), spec).strip() for key, _, spec in columns))
    return table


def print_summary(rows: list[dict[str, Any]], title: str, style: str = "auto") -> None:
    """The closing table; rich renders it without colour codes when stdout is not a terminal."""
    if style == "none":
        return
    Console(highlight=False).print(summary_table(rows, title))
