"""`vestige-run` under torchrun, with each rank recording what it writes and what it measures.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_worker.py \
        RECORD_DIR WATCHED_DIR [overrides...]

Runs the console entry point `vestige.run.main` unchanged. A `sys.addaudithook` hook notes every
file this rank opens for writing, creates, renames or removes under WATCHED_DIR, and every
metrics row the rank computed (the rows handed to its reporter, which is silent off rank 0) is
kept; both go to RECORD_DIR/rank<N>.json when the run ends, whatever its exit status.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
CHANGING_EVENTS = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree"}


def record_writes(watched: Path, writes: list[list[str]]) -> None:
    """Append [event, path] for each change this process makes under `watched`."""

    def inside(path: Any) -> bool:
        if not isinstance(path, str | bytes | os.PathLike):
            return False
        return Path(os.path.abspath(os.fsdecode(path))).is_relative_to(watched)

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writing = bool(flags & WRITE_FLAGS) or any(c in (mode or "") for c in "wax+")
            if writing and inside(path):
                writes.append([event, os.path.abspath(os.fsdecode(path))])
        elif event in CHANGING_EVENTS:
            for path in args[: 2 if event == "os.rename" else 1]:
                if inside(path):
                    writes.append([event, os.path.abspath(os.fsdecode(path))])

    sys.addaudithook(hook)


def main() -> None:
    record_dir, watched, *overrides = sys.argv[1:]
    rank = int(os.environ["RANK"])
    writes: list[list[str]] = []
    rows: list[dict[str, Any]] = []

    from vestige import run
    from vestige.train.progress import Reporter

    show_row = Reporter.row

    def keep_row(self: Reporter, row: dict[str, Any]) -> None:
        rows.append(dict(row))
        show_row(self, row)

    Reporter.row = keep_row  # type: ignore[method-assign]
    record_writes(Path(watched).resolve(), writes)
    sys.argv = ["vestige-run", *overrides]
    status: int | str | None = 0
    try:
        run.main()
    except SystemExit as exit_:
        status = exit_.code
    finally:
        recorded = {"writes": list(writes), "rows": rows, "status": status}
        Path(record_dir, f"rank{rank}.json").write_text(json.dumps(recorded, default=str))
    sys.exit(status)


if __name__ == "__main__":
    main()
