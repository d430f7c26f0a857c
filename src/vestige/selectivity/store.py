"""The on-disk form of selectivity measurements in a run directory (the one place that knows it).

    selectivity/units.npz          unit table: layer, stage, block, channel (one row per unit)
    selectivity/step_N.npz         si (float32), preferred_class (int32) per unit, step, epoch
    selectivity/summary.csv        one row per snapshot and stage (+ stage "all": network mean)

Other settings than the defaults (block outputs, negative values clamped, eps 1e-6, fp32, the
snapshot's own BatchNorm statistics) go to `selectivity-<units>-<negative>-eps<eps>-<precision>-
<bn_stats>/` (each part only when it differs), so results measured differently never mix.
Aggregates follow docs/science.md §2: block mean over units, stage mean over
blocks, network mean over stages.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from vestige.config import SelectivityConfig
from vestige.io import (
    atomic_write_bytes,
    atomic_write_text,
    settings_folder,
    step_file,
    step_files,
    table_text,
)
from vestige.selectivity.index import SelectivityResult
from vestige.selectivity.units import UnitLayer, unit_table

STORE, UNITS = "selectivity", "units.npz"


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


class SelectivityStore:
    def __init__(
        self, run_path: Path, settings: SelectivityConfig, bn_stats: str = "running"
    ) -> None:
        """`settings`: the `selectivity` config section; `bn_stats`: "running", or the label of
        re-estimated statistics (analysis/batchnorm.py: `bn_label`)."""
        default = SelectivityConfig()
        parts = [
            settings.units if settings.units != default.units else "",
            settings.negative if settings.negative != default.negative else "",
            f"eps{settings.eps:g}" if settings.eps != default.eps else "",
            settings.precision if settings.precision != default.precision else "",
            bn_stats if bn_stats != "running" else "",
        ]
        self.folder = settings_folder(run_path, STORE, *parts)

    def write_units(self, layers: list[UnitLayer]) -> None:
        atomic_write_bytes(self.folder / UNITS, _npz(**unit_table(layers)))

    def write_snapshot(self, step: int, epoch: float, result: SelectivityResult) -> None:
        table = result.unit_table()
        atomic_write_bytes(
            step_file(self.folder, step, ".npz"),
            _npz(
                si=table["si"].astype(np.float32),
                preferred_class=table["preferred_class"].astype(np.int32),
                step=np.int64(step),
                epoch=np.float64(epoch),
            ),
        )

    def steps(self) -> list[int]:
        return step_files(self.folder, ".npz")

    def units(self) -> dict[str, np.ndarray]:
        with np.load(self.folder / UNITS) as data:
            return {key: data[key] for key in data.files}

    def snapshot(self, step: int) -> dict[str, np.ndarray]:
        with np.load(step_file(self.folder, step, ".npz")) as data:
            return {key: data[key] for key in data.files}

    def drop_after(self, step: int) -> None:
        """Forget measurements of an abandoned trajectory (a run resumed from `step`)."""
        for later in (s for s in self.steps() if s > step):
            step_file(self.folder, later, ".npz").unlink(missing_ok=True)

    def table(self) -> dict[str, np.ndarray]:
        """Per-unit values of every snapshot, stacked: step, epoch, layer, stage, block,
        channel, si, preferred_class (one row per unit and snapshot)."""
        units = self.units()
        columns: dict[str, list[np.ndarray]] = {
            k: [] for k in ("step", "epoch", *units, "si", "preferred_class")
        }
        for step in self.steps():
            values = self.snapshot(step)
            n = len(values["si"])
            columns["step"].append(np.full(n, step, dtype=np.int64))
            columns["epoch"].append(np.full(n, float(values["epoch"])))
            for key, column in units.items():
                columns[key].append(column)
            columns["si"].append(values["si"])
            columns["preferred_class"].append(values["preferred_class"])
        return {k: np.concatenate(v) if v else np.array([]) for k, v in columns.items()}

    def rebuild_summary(self) -> None:
        """summary.csv from the per-unit files: block -> stage -> network means."""
        units = self.units()
        rows = []
        for step in self.steps():
            values = self.snapshot(step)
            stage_means: dict[str, float] = {}
            for stage in dict.fromkeys(units["stage"]):
                in_stage = units["stage"] == stage
                layers = dict.fromkeys(units["layer"][in_stage])
                block_means = [values["si"][units["layer"] == layer].mean() for layer in layers]
                stage_means[str(stage)] = float(np.mean(block_means))
            stage_means["all"] = float(np.mean(list(stage_means.values())))
            for stage, si in stage_means.items():
                rows.append(
                    {"step": step, "epoch": float(values["epoch"]), "stage": stage, "si": si}
                )
        columns = ["step", "epoch", "stage", "si"]
        atomic_write_text(self.folder / "summary.csv", table_text(rows, columns))
