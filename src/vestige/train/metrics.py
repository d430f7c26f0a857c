"""`metrics.jsonl`: one JSON row per evaluation, append-only, trimmed on resume.

Rows are appended and fsynced one at a time; a resumed run first drops rows written after the
state it resumes from (and a torn last line), so no row is ever duplicated.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vestige.io import atomic_write_text
from vestige.rundir import read_metrics


def append_row(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(row, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Replace the file with these rows, atomically."""
    atomic_write_text(path, "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))


def trim_after(path: Path, step: int) -> None:
    """Keep only rows up to and including `step`."""
    write_rows(path, [row for row in read_metrics(path) if row["step"] <= step])
