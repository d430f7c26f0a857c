"""Alpha schedules: the weight of the selectivity regularizer as a pure function of the step.

loss = CE - alpha * R (docs/science.md §3); alpha < 0 suppresses selectivity. The
paper's conditions are schedules over epochs: baseline (0 throughout), "from epoch 0" (-20 for all
epochs) and "from epoch 5" (0 for epochs 0-4, then -20). `regularizer.alpha` takes three forms:

- a number, constant for the whole of training: `-20.0` (an integer such as `-20` is read as a
  float; the public code's alpha was parsed as an integer only, §8);
- a shorthand string for one window, 0 outside it: `"-20@5ep"` is -20 from step 5ep to the end
  (the paper's "from epoch 5"), `"-20@0ep..5ep"` is -20 in epochs 0-4 and 0 after (regularize,
  then release);
- a list of windows, each `{from: STEP, until: STEP, alpha: FLOAT, ramp: STEP, alpha_start:
  FLOAT}` with `from` and `alpha` required. A window covers the steps in [from, until) (no
  `until`: to the end). With `ramp`, alpha moves linearly from `alpha_start` (default 0) at
  `from` to `alpha` at `from + ramp`, then holds: `{from: 5ep, ramp: 1ep, alpha: -20}` eases in
  the "from epoch 5" condition over one epoch.

Steps are written as in `vestige.step` ("5ep", "100it", "1ep50it"); epoch e is the iterations
[e * ipe, (e + 1) * ipe). Outside every window alpha is 0; windows may leave gaps but never overlap.
A schedule is resolved once the iterations per epoch are known and then maps the *absolute*
iteration to alpha, so a resumed run continues its schedule where it stopped (the public code
restarted it at 0, §8). Overlaps that hold whatever the epoch length (always so when every bound
uses one unit) are reported when the config is validated, the others when training starts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from vestige.errors import ConfigError
from vestige.step import Step

KEY = "regularizer.alpha"
WINDOW_KEYS = ("from", "until", "alpha", "ramp", "alpha_start")
_SHORTHAND = re.compile(r"^(?P<alpha>[^@]+)@(?P<start>[^.]+)(?:\.\.(?P<until>.+))?$")
_FIX = (
    "expected a number (-20.0), 'ALPHA@FROM' ('-20@5ep'), 'ALPHA@FROM..UNTIL' ('-20@0ep..5ep') or "
    "windows [{from: 0ep, until: 5ep, alpha: 0.0}, {from: 5ep, alpha: -20.0}]"
)
# An epoch length large enough to stand for "any": with it, bounds compare by epochs first.
_LONGEST_EPOCH = 10**12


@dataclass(frozen=True)
class AlphaWindow:
    """alpha over [start, until), reached by a linear ramp from `alpha_start` when `ramp` > 0."""

    start: Step
    alpha: float
    until: Step | None = None
    ramp: Step = Step()
    alpha_start: float = 0.0

    def describe(self) -> str:
        until = f"..{self.until}" if self.until is not None else ""
        ramp = f" (ramp {self.ramp} from {self.alpha_start:g})" if self.ramp != Step() else ""
        return f"{self.alpha:g}@{self.start}{until}{ramp}"


@dataclass(frozen=True)
class ResolvedWindow:
    """A window in absolute iterations; `stop` None = to the end of training."""

    start: int
    stop: int | None
    ramp: int
    alpha_start: float
    alpha: float

    def covers(self, step: int) -> bool:
        return self.start <= step and (self.stop is None or step < self.stop)

    def value(self, step: int) -> float:
        if step - self.start >= self.ramp:
            return self.alpha
        return self.alpha_start + (self.alpha - self.alpha_start) * (step - self.start) / self.ramp


@dataclass(frozen=True)
class ResolvedAlphaSchedule:
    """Windows in iterations, sorted by start: `alpha_at(step)` for any absolute step."""

    windows: tuple[ResolvedWindow, ...]

    def alpha_at(self, step: int) -> float:
        for window in self.windows:
            if window.covers(step):
                return window.value(step)
        return 0.0


@dataclass(frozen=True)
class AlphaSchedule:
    """A parsed `regularizer.alpha`, still in the user's epochs and iterations."""

    windows: tuple[AlphaWindow, ...]

    @classmethod
    def parse(cls, value: Any) -> AlphaSchedule:
        """Any of the three config forms; raises ConfigError naming `regularizer.alpha`."""
        plain = (
            OmegaConf.to_container(value) if isinstance(value, DictConfig | ListConfig) else value
        )
        try:
            schedule = cls(tuple(_windows(plain)))
            problem = schedule.problem(1)
            if problem != schedule.problem(_LONGEST_EPOCH):
                problem = None  # depends on the epoch length: checked by `resolve`
        except ValueError as err:
            problem = str(err)
        if problem:
            raise ConfigError(f"{KEY}={plain!r} is invalid: {problem}")
        return schedule

    def problem(self, iterations_per_epoch: int) -> str | None:
        """What is wrong with the windows at this epoch length, with its fix, or None."""
        resolved = [_resolve(w, iterations_per_epoch) for w in self.windows]
        for window, bounds in zip(self.windows, resolved, strict=True):
            if bounds.stop is not None and bounds.stop <= bounds.start:
                return f"window {window.describe()} ends before it starts: make until later"
            if bounds.stop is not None and bounds.start + bounds.ramp > bounds.stop:
                return f"window {window.describe()} is shorter than its ramp: shorten the ramp"
        order = sorted(range(len(resolved)), key=lambda i: resolved[i].start)
        for before, after in zip(order, order[1:], strict=False):
            stop = resolved[before].stop
            if stop is None or stop > resolved[after].start:
                first, second = self.windows[before], self.windows[after]
                return (
                    f"windows {first.describe()} and {second.describe()} overlap: end the first "
                    "at or before the second's from"
                )
        return None

    def resolve(self, iterations_per_epoch: int) -> ResolvedAlphaSchedule:
        """The schedule over absolute iterations; ConfigError if windows overlap at this length."""
        problem = self.problem(iterations_per_epoch)
        if problem:
            raise ConfigError(
                f"{KEY} is invalid with {iterations_per_epoch} iterations per epoch: {problem} "
                "(or write all bounds in one unit, 'ep' or 'it')"
            )
        windows = (_resolve(w, iterations_per_epoch) for w in self.windows)
        return ResolvedAlphaSchedule(tuple(sorted(windows, key=lambda w: w.start)))


def _resolve(window: AlphaWindow, iterations_per_epoch: int) -> ResolvedWindow:
    return ResolvedWindow(
        start=window.start.to_iterations(iterations_per_epoch),
        stop=None if window.until is None else window.until.to_iterations(iterations_per_epoch),
        ramp=window.ramp.to_iterations(iterations_per_epoch),
        alpha_start=window.alpha_start,
        alpha=window.alpha,
    )


def _windows(value: Any) -> list[AlphaWindow]:
    """The windows of a number, a shorthand string or a list of mappings (ValueError if none)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [AlphaWindow(Step(), _number("alpha", value))]
    if isinstance(value, str):
        return [_shorthand(value)]
    if isinstance(value, Sequence) and value:
        return [_window(item) for item in value]
    raise ValueError(_FIX)


def _shorthand(text: str) -> AlphaWindow:
    if "@" not in text:
        return AlphaWindow(Step(), _number("alpha", text))
    match = _SHORTHAND.match(text.replace(" ", ""))
    if not match:
        raise ValueError("write the shorthand as ALPHA@FROM ('-20@5ep') or ALPHA@FROM..UNTIL")
    until = match.group("until")
    return AlphaWindow(
        start=_step(match.group("start")),
        alpha=_number("alpha", match.group("alpha")),
        until=None if until is None else _step(until),
    )


def _window(item: Any) -> AlphaWindow:
    if not isinstance(item, Mapping):
        raise ValueError(f"window {item!r} is not a mapping: {_FIX}")
    unknown = sorted(set(item) - set(WINDOW_KEYS))
    if unknown:
        raise ValueError(f"window keys {unknown} are unknown (use {', '.join(WINDOW_KEYS)})")
    missing = [key for key in ("from", "alpha") if key not in item]
    if missing:
        raise ValueError(
            f"window {dict(item)} lacks {' and '.join(missing)}: every window needs both"
        )
    if "alpha_start" in item and "ramp" not in item:
        raise ValueError(f"window {dict(item)} has alpha_start but no ramp: add ramp: 1ep")
    until = item.get("until")
    return AlphaWindow(
        start=_step(item["from"]),
        alpha=_number("alpha", item["alpha"]),
        until=None if until is None else _step(until),
        ramp=_step(item.get("ramp", "0it")),
        alpha_start=_number("alpha_start", item.get("alpha_start", 0.0)),
    )


def _step(text: Any) -> Step:
    try:
        return Step.parse(text)
    except ValueError as err:
        raise ValueError(f"step {text!r}: {err}") from None


def _number(name: str, value: Any) -> float:
    """A finite float from an int, a float or a numeric string (never a bool)."""
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise ValueError(f"{name} {value!r} is not a finite number: write one such as -20.0")
    return number
