"""Where `analysis=linearity` keeps its numbers: one JSON record per snapshot (its base, the
settings it was measured with, the numbers), and one CSV table per probe rebuilt from them.

    linearity/step_NNNNNNNN.json    one snapshot
    linearity/<probe>.csv           one row per snapshot (pair), columns in docs/outputs.md
    linearity/linear_classifier.pt  the cached softmax regression (linear_classifier.py)

With re-estimated BatchNorm statistics the folder is `linearity-recompute/`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vestige.analysis.linearity.probes import PAIR_PROBES
from vestige.io import atomic_write_text, settings_folder, step_file, step_files, table_text


def linearity_folder(run_path: Path, bn_stats: str = "running") -> Path:
    """`linearity/`, or `linearity-<bn_stats>/` for snapshots with re-estimated BatchNorm
    statistics (analysis/batchnorm.py: `bn_label`)."""
    return settings_folder(run_path, "linearity", bn_stats if bn_stats != "running" else "")


class LinearityRecords:
    """The records of one results folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.classifier = folder / "linear_classifier.pt"

    def read(self, settings: dict[str, Any]) -> dict[int, dict[str, Any]]:
        """Every stored snapshot measured with `settings`, by step."""
        records = {}
        for step in step_files(self.folder, ".json"):
            record = json.loads(step_file(self.folder, step, ".json").read_text())
            if record["settings"] == settings:
                records[record["step"]] = record
        return records

    def write(self, record: dict[str, Any]) -> None:
        text = json.dumps(record, indent=2)  # in the order written: the tables' column order
        atomic_write_text(step_file(self.folder, record["step"], ".json"), text + "\n")

    def write_tables(self, records: list[dict[str, Any]], probes: list[str]) -> None:
        """`<probe>.csv` for each probe: a row per record (snapshot or pair) that has it."""
        for probe in probes:
            rows = [_row(record, probe) for record in records if probe in record]
            if rows:
                atomic_write_text(self.folder / f"{probe}.csv", table_text(rows, digits=6))


def _row(record: dict[str, Any], probe: str) -> dict[str, Any]:
    pair = {"base_step": record["base_step"], "base_epoch": record["base_epoch"]}
    return {
        "step": record["step"],
        "epoch": record["epoch"],
        **(pair if probe in PAIR_PROBES else {}),
        "images": record["images"],
        **record[probe],
    }
