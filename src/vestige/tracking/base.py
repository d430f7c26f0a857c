"""What every tracker shares: the run it is told about, its protocol, and `Tracking`, which keeps
the trackers in step with metrics.jsonl across resumes and adds what is measured later.

A run directory is one tracker run, however often it is resumed or requeued: each tracker's
run id is kept in the run's `tracking.json`, with the last step it has logged. A resumed run
catches a tracker up on the rows it missed (a kill between a row and its logging, or a tracker
added midway) and never logs a step twice: a tracker that can overwrite (TensorBoard's purge)
drops what it logged after the resumed step and gets the recomputed rows; the others keep what
they logged and skip those steps.

What is measured after training (an analysis's summary values, a report's figures) goes to the
same tracker run, which is continued and then ended with the status it had. `tracking.json`
keeps what each tracker run was given that way, so a second analysis or report of the same
snapshots adds nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from vestige.io import atomic_write_json

STATUSES = ("finished", "failed", "killed")  # killed: stopped by a signal, to be continued


@dataclass(frozen=True)
class TrackedRun:
    """What a tracker is told about a run: the tracker run's name is the directory's."""

    name: str
    directory: Path
    config: dict[str, Any]  # resolved
    run_hash: str
    identity: dict[str, Any]
    outputs: Path  # where the local stores are by default
    sweep: str | None  # the sweep's name for a point of a sweep: its points' group
    varying: dict[str, str]  # this point's values of the settings its sweep varies
    history: Callable[[], list[dict[str, Any]]]  # the run's metrics rows so far
    state: Path  # tracking.json


class Tracker(Protocol):
    """One back end's run: started (or continued) once per invocation, fed rows in step order,
    ended with a status. `overwrites`: rows logged again from `first_step` on replace the
    earlier ones."""

    overwrites: bool

    def target(self) -> str:
        """Where it logs (a folder, a store): another target is another tracker run."""

    def start(self, run_id: str | None, first_step: int | None) -> str:
        """Start a run, or continue `run_id`, from `first_step`; None: to add values of steps
        already trained (`log_values`, `log_figure`), replacing nothing. Returns the run's id."""

    def log_row(self, step: int, values: dict[str, float]) -> None: ...

    def log_values(self, step: int, values: dict[str, float]) -> None:
        """Values measured later at an earlier step (an analysis's), in any step order."""

    def log_figure(self, step: int, name: str, png: Path) -> None:
        """An image (a report's figure) named `name` (`report/<page>/<figure>`), at `step`."""

    def finish(self, status: str) -> None:
        """End this invocation's part of the run: one of STATUSES."""


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """A metrics row's numbers, by their metrics.jsonl names (docs/outputs.md); `step` is the
    x axis, and a value not measured at this row (null) is left out."""
    return {
        key: float(value)
        for key, value in row.items()
        if key != "step" and isinstance(value, int | float) and not isinstance(value, bool)
    }


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def recorded_sweep(state: Path) -> tuple[str | None, dict[str, str]]:
    """The sweep a run was last trained in, and its varying settings, as `Tracking` recorded
    them: what its tracker runs are grouped by."""
    sweep = (json.loads(state.read_text()) if state.exists() else {}).get("sweep")
    return (sweep["name"], sweep["varying"]) if sweep else (None, {})


class Tracking:
    """The chosen trackers of one run (rank 0 only). As an observer of training
    (train/plugins.py: `Observer` and `RowSink`) it hands each metrics row, once, to each
    tracker; `add_values` and `add_figures` give them what is measured later."""

    def __init__(self, trackers: dict[str, Tracker], run: TrackedRun) -> None:
        self.trackers = trackers
        self.run = run
        # per tracker, the keys of its tracking.json entry this invocation writes
        self.state: dict[str, dict[str, Any]] = {}

    def stored(self) -> dict[str, Any]:
        return json.loads(self.run.state.read_text()) if self.run.state.exists() else {}

    def recorded(self, stored: dict[str, Any], name: str) -> dict[str, Any]:
        """The stored entry of tracker `name` when it is of the same target, else none."""
        earlier = stored.get(name, {})
        return earlier if earlier.get("target") == self.trackers[name].target() else {}

    def on_train_start(self, model: nn.Module, num_classes: int, step: int) -> None:
        """Start or continue each tracker's run. The rows metrics.jsonl keeps (the resume has
        dropped the abandoned trajectory's) are what a tracker may have already; every row
        after them is computed again from here on."""
        stored = self.stored()
        history = self.run.history()
        kept = max((row["step"] for row in history), default=-1)
        for name, tracker in self.trackers.items():
            earlier = self.recorded(stored, name)
            logged = earlier.get("logged_through", -1)
            first = min(logged, kept) + 1 if tracker.overwrites else logged + 1
            run_id = tracker.start(earlier.get("run_id"), first)
            self.state[name] = {
                "target": tracker.target(),
                "run_id": run_id,
                "logged_through": first - 1,
            }
        self.save()
        for row in history:  # what a tracker missed: a kill before it logged, or added later
            self.on_row(row)

    def probe(self, model: nn.Module) -> None:
        return None

    def on_evaluation(self, step: int, epoch: float, probe: object) -> dict[str, Any]:
        return {}

    def inherit(self, parent: Path, step: int, child: Path) -> None:
        """A fork is a tracker run of its own: it starts with the rows it inherited."""

    def on_row(self, row: dict[str, Any]) -> None:
        step = row["step"]
        due = [name for name, entry in self.state.items() if step > entry["logged_through"]]
        for name in due:
            self.trackers[name].log_row(step, scalars(row))
            self.state[name]["logged_through"] = step
        if due:
            self.save()

    def finish(self, status: str) -> None:
        """The trackers started by this training end with `status` (one of STATUSES)."""
        for name, entry in self.state.items():
            self.trackers[name].finish(status)
            entry["status"] = status
        self.save()

    def add_values(self, values: list[tuple[int, str, float]]) -> list[str]:
        """(step, name, value) measured after training (an analysis's summary values), each
        logged once per tracker run: what tracking.json says a run has is skipped. Returns the
        trackers that got any."""

        def pending(entry: dict[str, Any]) -> dict[int, dict[str, float]]:
            logged = entry["values"]
            by_step: dict[int, dict[str, float]] = {}
            for step, key, value in values:
                if step not in logged.get(key, []):
                    by_step.setdefault(step, {})[key] = value
            return by_step

        def log(tracker: Tracker, entry: dict[str, Any], todo: dict[int, dict[str, float]]) -> None:
            for step in sorted(todo):
                tracker.log_values(step, todo[step])
                for key in todo[step]:
                    entry["values"].setdefault(key, []).append(step)
                self.save()

        return self.add("values", pending, log)

    def add_figures(self, step: int, figures: dict[str, Path]) -> list[str]:
        """A report's figures (name -> PNG file) at `step`, the run's last: a figure is logged
        again only when its image changed. Returns the trackers that got any."""

        def pending(entry: dict[str, Any]) -> dict[str, str]:
            digests = {name: sha256(png) for name, png in figures.items()}
            return {name: d for name, d in digests.items() if entry["figures"].get(name) != d}

        def log(tracker: Tracker, entry: dict[str, Any], todo: dict[str, str]) -> None:
            for name, digest in todo.items():
                tracker.log_figure(step, name, figures[name])
                entry["figures"][name] = digest
                self.save()

        return self.add("figures", pending, log)

    def add(
        self,
        kind: str,
        pending: Callable[[dict[str, Any]], dict],
        log: Callable[[Tracker, dict[str, Any], dict], None],
    ) -> list[str]:
        """Continue each tracker's run that lacks something `pending` finds (start one when the
        run has none at this target), `log` it, and end the run with the status it had."""
        stored = self.stored()
        added = []
        for name, tracker in self.trackers.items():
            earlier = self.recorded(stored, name)
            entry = {kind: earlier.get(kind, {})}
            todo = pending(entry)
            if not todo:
                continue
            run_id = tracker.start(earlier.get("run_id"), None)
            self.state[name] = {"target": tracker.target(), "run_id": run_id, **entry}
            try:
                log(tracker, self.state[name], todo)
            finally:
                tracker.finish(earlier.get("status", "finished"))
            added.append(name)
        return added

    def save(self) -> None:
        """tracking.json, the keys this invocation owns written into each tracker's entry (a
        training's: how far it has logged, how it ended; an analysis's or report's: what it
        added), so that another invocation's keys, and the entries of trackers not chosen now,
        stay; an entry of another tracker run is replaced."""
        stored = self.stored()
        for name, entry in self.state.items():
            earlier = stored.get(name, {})
            same = all(earlier.get(key) == entry[key] for key in ("target", "run_id"))
            stored[name] = (earlier if same else {}) | entry
        sweep = {"name": self.run.sweep, "varying": self.run.varying} if self.run.sweep else None
        atomic_write_json(self.run.state, stored | {"sweep": sweep})
