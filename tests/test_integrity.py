"""Everything a run keeps is checked when read: a damaged snapshot is never used silently, a
damaged metrics row costs only itself, a lost manifest is rebuilt from the snapshot files."""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import logging
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import TINY, finished_run, run_cli

import vestige
from vestige.errors import DamagedFile
from vestige.rundir import read_metrics
from vestige.train.metrics import trim_after

SNAPSHOTS = "checkpoint.snapshots=[0it,every 4it until 1ep,every 1ep]"


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> Path:
    return finished_run([*TINY, SNAPSHOTS], tmp_path_factory.mktemp("integrity"))


@pytest.fixture
def run(original: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(original, copy)
    return copy


def flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for offset in (len(data) // 3, len(data) // 2, 2 * len(data) // 3):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_damaged_snapshot_stops_an_analysis_in_one_line_or_is_skipped(run: Path):
    snapshots = vestige.load_run(run).snapshots
    damaged = snapshots[1].path
    flip_bytes(damaged)
    with pytest.raises(DamagedFile, match="is damaged: its SHA-256 differs"):
        vestige.load_run(run).load_model(snapshots[1])
    args = ["task=analyze", f"run={run}", "analysis=selectivity", "selectivity.eps=1e-7"]
    stopped = run_cli(args, run)
    assert stopped.returncode == 2
    (line,) = stopped.stderr.strip().splitlines()
    assert line.startswith(f"error: snapshot {damaged} is damaged")
    skipped = run_cli([*args, "analysis.skip_damaged=true"], run)
    assert skipped.returncode == 0, skipped.stderr
    assert f"step {snapshots[1].step:>8d}  skipped: snapshot {damaged}" in skipped.stdout
    measured = vestige.load_run(run).selectivity(eps=1e-7)["step"]
    assert sorted(set(measured.tolist())) == [s.step for s in snapshots if s.path != damaged]


def test_a_snapshot_listed_but_missing_is_one_line(run: Path):
    snapshot = vestige.load_run(run).snapshots[-1]
    snapshot.path.unlink()
    with pytest.raises(DamagedFile, match="is listed in the run's manifest but missing"):
        vestige.load_run(run).load_model(snapshot.step)


def test_a_lost_manifest_is_rebuilt_from_the_snapshot_files(run: Path, caplog):
    before = vestige.load_run(run).snapshots
    (run / "checkpoints" / "manifest.json").unlink()
    with caplog.at_level(logging.WARNING):
        after = vestige.load_run(run).snapshots
    assert after == before
    assert "manifest.json is missing: listing the" in caplog.text


def test_a_damaged_metrics_row_costs_only_itself(run: Path, caplog):
    path = run / "metrics.jsonl"
    lines = path.read_text().splitlines()
    intact = [json.loads(line) for line in lines]
    lines[1] = lines[1][: len(lines[1]) // 2]  # damaged in the middle of the file
    path.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING):
        rows = read_metrics(path)
    assert rows == intact[:1] + intact[2:]
    assert f"skipping damaged line 2 of {path}" in caplog.text
    # a resume keeps every valid row of a kept step, also those after the damaged one
    kept = intact[-2]["step"]
    trim_after(path, kept)
    assert read_metrics(path) == [r for r in intact[:1] + intact[2:] if r["step"] <= kept]


def test_a_truncated_run_json_is_one_line_to_readers_and_rewritten_by_training(run: Path):
    info = run / "run.json"
    info.write_text(info.read_text()[:40])
    with pytest.raises(DamagedFile, match="is damaged"):
        _ = vestige.load_run(run).info
    # choosing snapshots by epoch needs run.json's iterations per epoch
    args = ["task=analyze", f"run={run}", "analysis=selectivity", "analysis.snapshots=[1ep]"]
    analysed = run_cli(args, run)
    assert analysed.returncode == 2
    (line,) = analysed.stderr.strip().splitlines()
    assert line == f"error: {info} is damaged (not valid JSON): the same training command " + (
        "rewrites it"
    )
    trained = run_cli([*TINY, SNAPSHOTS, f"hydra.run.dir={run}"], run.parent)
    assert trained.returncode == 0, trained.stderr
    assert f"warning: {info} is damaged" in trained.stderr
    assert json.loads(info.read_text())["status"] == "complete"


def test_a_damaged_config_is_one_line(run: Path):
    (run / "config.yaml").write_text("model: [unclosed\n")
    with pytest.raises(DamagedFile, match="config.yaml is damaged"):
        vestige.load_run(run)
    result = run_cli(["task=report", f"run={run}"], run)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {run / 'config.yaml'} is damaged (")


def test_a_snapshot_holding_code_is_refused_without_advice_to_run_it(run: Path):
    snapshot = vestige.load_run(run).snapshots[0]
    data = io.BytesIO()
    torch.save({"model": {}, "step": 0, "epoch": 0.0, "made": datetime.date(2026, 1, 1)}, data)
    snapshot.path.write_bytes(data.getvalue())
    checksum = snapshot.path.with_suffix(".sha256")
    checksum.write_text(hashlib.sha256(data.getvalue()).hexdigest() + "\n")
    with pytest.raises(DamagedFile) as caught:
        vestige.load_run(run).load_model(snapshot)
    message = str(caught.value)
    assert "holds more than tensors" in message and "weights_only" not in message


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 1.5 MB file system: room for the run's start, not for all its snapshots."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(disk)])
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    yield disk
    subprocess.run(["umount", str(disk)])


def test_a_full_disk_is_one_line_and_the_same_command_continues(small_disk: Path):
    args = [*TINY, SNAPSHOTS, f"outputs={small_disk}"]
    full = run_cli(args, small_disk.parent)
    assert full.returncode == 1
    (line,) = full.stderr.strip().splitlines()
    assert line.startswith("error: no space left for ") and "run the same command again" in line
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    again = run_cli(args, small_disk.parent)
    assert again.returncode == 0, again.stderr
    (run_dir,) = (small_disk / "runs").iterdir()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "complete"
