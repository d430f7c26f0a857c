"""Checkpoints: rolling resume states and immutable weights-only snapshots, written atomically.

Resume states carry everything needed to continue bitwise-identically (model, optimiser, lr
schedule, RNG states, data position, running sums); a sidecar SHA-256 written after the file
lets a truncated or corrupted one be detected and skipped. Snapshots hold only the weights and
are listed in `manifest.json`. Every load uses `weights_only=True`. The loop hands both to the
background writer (train/writer.py) as host copies (`host_copy`), serialised to the same bytes.
"""

from __future__ import annotations

import io
import logging
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vestige.io import atomic_write_json, step_file
from vestige.rundir import (
    RunDir,
    checksum_path,
    matches_checksum,
    read_manifest,
    snapshot_path,
    write_with_checksum,
)

log = logging.getLogger(__name__)


def _serialize(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def host_copy(state: Any) -> Any:
    """`state` with every tensor copied to host memory, so that later in-place updates of the
    model or optimiser cannot reach what is written. Containers keep their type and attributes
    (a state dict's `_metadata`: module versions), so the serialised bytes are those of `state`
    (from a GPU, but for the device each tensor is recorded on)."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        copied = type(state)((key, host_copy(value)) for key, value in state.items())
        if hasattr(state, "__dict__"):
            copied.__dict__.update(state.__dict__)
        return copied
    if isinstance(state, list | tuple):
        return type(state)(host_copy(value) for value in state)
    return state


def save_snapshot(run: RunDir, weights: dict[str, Any], step: int, epoch: float) -> None:
    """Write snapshots/step_N.pt of the model's state dict `weights`, its .sha256, then list it
    in the manifest."""
    path = snapshot_path(run, step)
    entries = [s for s in read_manifest(run) if s["step"] != step]
    write_with_checksum(path, _serialize({"model": weights, "step": step, "epoch": epoch}))
    entries.append({"step": step, "epoch": epoch, "path": str(path.relative_to(run.path))})
    atomic_write_json(run.manifest, {"snapshots": sorted(entries, key=lambda s: s["step"])})


def drop_snapshots_after(run: RunDir, step: int) -> None:
    """Forget snapshots from an abandoned trajectory (written after the state we resume from)."""
    entries = read_manifest(run)
    for entry in entries:
        if entry["step"] > step:
            (run.path / entry["path"]).unlink(missing_ok=True)
            checksum_path(run.path / entry["path"]).unlink(missing_ok=True)
    if entries:
        atomic_write_json(run.manifest, {"snapshots": [s for s in entries if s["step"] <= step]})


def rng_state() -> dict[str, Any]:
    """RNG states of python, numpy, torch and CUDA, in types `weights_only` loading accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_resume(run: RunDir, state: dict[str, Any], keep: int) -> Path:
    """Write resume/step_N.pt then its .sha256; keep the newest `keep` states."""
    path = step_file(run.resume, state["step"], ".pt")
    write_with_checksum(path, _serialize(state))
    for old in sorted(run.resume.glob("step_*.pt"))[:-keep]:
        old.unlink(missing_ok=True)
        checksum_path(old).unlink(missing_ok=True)
    return path


def load_resume_file(path: Path) -> dict[str, Any] | None:
    """A resume state if its checksum matches and it loads; None (with a warning naming the
    file) if it is truncated, corrupted or unreadable."""
    data = path.read_bytes()
    if not matches_checksum(path, data):  # a state without its checksum was never finished
        log.warning("skipping damaged resume checkpoint %s (checksum missing or wrong)", path)
        return None
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's message would advise weights_only=False: never
        log.warning("skipping resume checkpoint %s: it holds more than tensors", path)
        return None
    except Exception as err:  # noqa: BLE001 - any unreadable file is skipped the same way
        log.warning("skipping unreadable resume checkpoint %s (%s)", path, err)
        return None


def load_latest_resume(run: RunDir) -> dict[str, Any] | None:
    """The newest resume state that is complete and intact; damaged ones are skipped."""
    for path in sorted(run.resume.glob("step_*.pt"), reverse=True):
        state = load_resume_file(path)
        if state is not None:
            return state
    return None
