"""A small value type for training time ("100it", "2ep", "1ep50it") and snapshot schedules.

Config files speak in epochs and iterations; the loop speaks in absolute iterations. `Step`
keeps the user's words until the number of iterations per epoch is known, so one config works
for any dataset size or world size.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from vestige.errors import ConfigError, invalid

_STEP = re.compile(r"^\s*(?:(\d+)\s*ep)?\s*(?:(\d+)\s*it)?\s*$")


@dataclass(frozen=True)
class Step:
    epochs: int = 0
    iterations: int = 0

    @classmethod
    def parse(cls, text: str | int) -> Step:
        match = _STEP.match(str(text))
        if not match or not any(match.groups()):
            raise ValueError("write a step as '100it', '2ep' or '1ep50it'")
        epochs, iterations = match.groups()
        return cls(int(epochs or 0), int(iterations or 0))

    def to_iterations(self, iterations_per_epoch: int) -> int:
        return self.epochs * iterations_per_epoch + self.iterations

    def __str__(self) -> str:
        if self.epochs and self.iterations:
            return f"{self.epochs}ep{self.iterations}it"
        return f"{self.epochs}ep" if self.epochs else f"{self.iterations}it"


@dataclass(frozen=True)
class SnapshotSpec:
    """One rule of a snapshot schedule; `iterations()` lists the absolute steps it selects."""

    kind: str  # "at" | "every" | "log"
    start: Step
    stop: Step | None = None
    count: int = 0

    def iterations(self, iterations_per_epoch: int, total: int) -> set[int]:
        start = self.start.to_iterations(iterations_per_epoch)
        stop = (
            total
            if self.stop is None
            else min(total, self.stop.to_iterations(iterations_per_epoch))
        )
        if self.kind == "at":
            return {start} if start <= total else set()
        if self.kind == "every":
            return set(range(start, stop + 1, start)) if start > 0 else set()
        low, high = math.log(max(start, 1)), math.log(max(stop, 1))
        points = (
            round(math.exp(low + (high - low) * i / max(self.count - 1, 1)))
            for i in range(self.count)
        )
        return {p for p in points if p <= total}


_EVERY = re.compile(r"^every\s+(\S+)(?:\s+until\s+(\S+))?$")
_LOG = re.compile(r"^log\s+(\d+)\s+from\s+(\S+)\s+to\s+(\S+)$")


def parse_snapshot_spec(text: str) -> SnapshotSpec:
    """Parse "0it", "every 1ep", "every 50it until 2ep" or "log 8 from 1it to 3ep"."""
    text = str(text).strip()
    if match := _EVERY.match(text):
        every = Step.parse(match.group(1))
        if every == Step():
            raise ValueError("'every' needs a positive period such as 'every 1ep'")
        until = Step.parse(match.group(2)) if match.group(2) else None
        return SnapshotSpec("every", every, until)
    if match := _LOG.match(text):
        count = int(match.group(1))
        if count < 2:
            raise ValueError("'log N from A to B' needs N >= 2 points")
        return SnapshotSpec("log", Step.parse(match.group(2)), Step.parse(match.group(3)), count)
    try:
        return SnapshotSpec("at", Step.parse(text))
    except ValueError:
        raise ValueError(
            "write a snapshot rule as '2ep', 'every 1ep', 'every 50it until 2ep' "
            "or 'log 8 from 1it to 3ep'"
        ) from None


def snapshot_iterations(specs: list[str], iterations_per_epoch: int, total: int) -> list[int]:
    """All absolute iterations selected by a schedule, sorted, within [0, total]."""
    selected: set[int] = set()
    for spec in specs:
        selected |= parse_snapshot_spec(spec).iterations(iterations_per_epoch, total)
    return sorted(selected)


@dataclass(frozen=True)
class Clock:
    """A run's time in iterations: the one place that turns the config's step strings ("2ep",
    "every 50it until 2ep") into absolute iterations, once the epoch length is known. `total`
    (the last step) bounds snapshot schedules."""

    iterations_per_epoch: int
    total: int | None = None

    def iterations(self, step: str | Step) -> int:
        """The absolute iteration of a step such as '2ep' or '1ep50it'."""
        parsed = step if isinstance(step, Step) else Step.parse(step)
        return parsed.to_iterations(self.iterations_per_epoch)

    def schedule(self, specs: Sequence[str]) -> list[int]:
        """The iterations a snapshot schedule selects, sorted, within [0, total]."""
        if self.total is None:
            raise ValueError("a schedule needs the clock's total number of iterations")
        return snapshot_iterations(list(specs), self.iterations_per_epoch, self.total)


def check_step(key: str, text: str) -> None:
    """One-line ConfigError naming `key` unless `text` is a step such as '100it' or '2ep'."""
    try:
        Step.parse(text)
    except ValueError as err:
        raise ConfigError(f"{key}={text!r} is invalid: {err}") from None


def check_snapshot_specs(key: str, specs: Sequence[str]) -> None:
    """One-line ConfigError naming `key[i]` for the first rule of a schedule that is not one."""
    for i, spec in enumerate(specs):
        try:
            parse_snapshot_spec(spec)
        except ValueError as err:
            raise invalid(f"{key}[{i}]", spec, str(err)) from None
