"""Files, the same way everywhere: atomic writes, CSV tables, short hashes and step-named files.

Every result vestige keeps is written atomically (a temporary file, then a rename), so a kill at
any moment leaves the previous version; tables are CSV with a header; per-snapshot files are
named `step_NNNNNNNN<suffix>`, so they sort by step.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

_STEP_FILE = re.compile(r"^step_(\d{8})(.*)$")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that readers see the old or the new content, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from a group
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if is_dataclass(obj):
        return {f.name: getattr(obj, f.name) for f in fields(obj)}
    return str(obj)


def short_hash(text: str, length: int = 10) -> str:
    """The first `length` hex digits of the SHA-256 of `text`: names that are stable and short."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def table_text(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    digits: int | None = None,
) -> str:
    """CSV of `rows` under a header of `columns` (default: the first row's keys). None is written
    as an empty cell; with `digits`, floats as `{:.<digits>g}`."""
    rows = list(rows)
    columns = list(columns if columns is not None else rows[0])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _cell(value, digits) for key, value in row.items()})
    return buffer.getvalue()


def _cell(value: Any, digits: int | None) -> Any:
    if value is None:
        return ""
    if digits is not None and isinstance(value, float):
        return f"{value:.{digits}g}"
    return value


def read_rows(path: Path) -> list[dict[str, str]]:
    """A CSV file's rows as dicts of text by header name (none when the file is absent)."""
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def settings_folder(parent: Path, name: str, *settings: str) -> Path:
    """A results folder: `name/`, or `name-<settings>/` for results measured with settings other
    than the defaults (each non-empty part names one, e.g. `selectivity-recompute/`), so
    results measured differently never mix."""
    return parent / "-".join([name, *filter(None, settings)])


def step_file(folder: Path, step: int, suffix: str) -> Path:
    """`folder/step_NNNNNNNN<suffix>`: one snapshot's file (suffix: `.npz`, `-layer1.csv`, ...)."""
    return folder / f"step_{step:08d}{suffix}"


def step_files(folder: Path, suffix: str) -> list[int]:
    """The steps of the `step_NNNNNNNN<suffix>` files in `folder`, sorted (none if no folder)."""
    if not folder.is_dir():
        return []
    found = (_STEP_FILE.match(path.name) for path in folder.iterdir())
    return sorted(int(m.group(1)) for m in found if m and m.group(2) == suffix)
