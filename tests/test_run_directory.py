"""Same config -> same run directory; what a run writes can be read back with load_run."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pytest
import torch
from conftest import TINY, run_cli

import vestige
from vestige.io import atomic_write_text
from vestige.rundir import RunDir, run_name
from vestige.tasks.compose import compose_point
from vestige.train.evaluate import evaluate


def name_of(*overrides: str) -> str:
    return run_name(compose_point(list(overrides)))


def test_default_run_name_is_pinned():
    """Changing this name moves every existing run: do it only on purpose (the last time: the
    default run's harder synthetic task and dense first-epoch snapshots)."""
    assert name_of() == "resnet18-synthetic-22b77fd37a"


def test_how_a_run_is_shown_or_where_its_data_lives_does_not_change_its_identity():
    assert name_of("trainer.progress=none", "trainer.log_every=1", "device=cpu") == name_of()
    assert name_of("data=fashion_mnist") == name_of("data=fashion_mnist", "data.root=/tmp")


def test_setting_an_option_to_its_default_keeps_the_identity():
    assert name_of("optim.momentum=0.9", "trainer.grad_accum=1") == name_of()


@pytest.mark.parametrize(
    "override", ["seed=1", "optim.lr=0.05", "model=resnet50", "trainer.epochs=4"]
)
def test_any_hyperparameter_change_is_a_different_run(override):
    assert name_of(override) != name_of()


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    """(workdir, run dir) of one tiny finished run, its output captured through a pipe."""
    workdir = tmp_path_factory.mktemp("finished")
    result = run_cli([*TINY, "trainer.progress=auto"], workdir)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (workdir / "outputs" / "runs").iterdir()
    (workdir / "stdout.txt").write_text(result.stdout)
    return workdir, run_dir


def test_output_to_a_pipe_is_plain_lines_without_control_characters(finished):
    stdout = (finished[0] / "stdout.txt").read_text()
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", stdout), (
        "control characters in non-TTY output"
    )
    progress = [line for line in stdout.splitlines() if line.startswith("epoch ")]
    assert progress and all(
        "img/s" in line and "ETA" in line and "loss" in line for line in progress
    )


def test_running_the_same_command_again_finds_the_same_directory_complete(finished):
    workdir, run_dir = finished
    result = run_cli([*TINY, "trainer.progress=plain"], workdir)
    assert result.returncode == 0, result.stderr
    assert "already complete" in result.stdout
    assert [p.name for p in (workdir / "outputs" / "runs").iterdir()] == [run_dir.name]


def test_a_directory_holding_a_run_of_other_settings_is_not_taken_over(finished):
    workdir, run_dir = finished
    before = {p.relative_to(run_dir): p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    result = run_cli([*TINY, "optim.lr=0.01", f"hydra.run.dir={run_dir}"], workdir)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {run_dir} holds a run of other settings: optim.lr=0.01")
    assert "(the run's: default); choose another hydra.run.dir, or continue it with" in line
    after = {p.relative_to(run_dir): p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    assert before == after


def test_a_run_in_use_is_refused_and_left_untouched(finished):
    workdir, run_dir = finished
    info = run_dir / "run.json"
    complete = info.read_text()
    info.write_text(json.dumps({"status": "running"}))
    before = {p.relative_to(run_dir): p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    with RunDir(run_dir).exclusive():
        result = run_cli([*TINY], workdir)
    after = {p.relative_to(run_dir): p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    info.write_text(complete)
    assert result.returncode == 2
    assert "in use" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    changed = {p for p in after if before.get(p) != after[p]} - {Path("run.lock")}
    assert not changed, f"a refused run touched {changed}"


def test_load_run_gives_config_metrics_snapshots_and_models(finished):
    _, run_dir = finished
    run = vestige.load_run(run_dir)
    assert run.config.trainer.batch_size == 32 and run.config.model.width == 0.125
    ipe = 256 // 32
    assert [s.step for s in run.snapshots] == [0, ipe, 2 * ipe]
    assert [row["step"] for row in run.metrics] == [0, ipe, 2 * ipe]
    assert run.info["versions"]["torch"] == torch.__version__

    model = run.load_model(run.snapshots[-1])
    assert not model.training
    saved = torch.load(run.snapshots[-1].path, weights_only=True)["model"]
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())

    from vestige.data import build_datasets

    splits = build_datasets(run.config.data, 0)
    loader = torch.utils.data.DataLoader(splits.eval, batch_size=64)
    result = evaluate(model, loader, torch.device("cpu"), probes=[])
    assert result["eval_acc"] == pytest.approx(run.metrics[-1]["eval_acc"])


def test_load_run_of_a_folder_that_is_not_a_run_is_one_clear_error(tmp_path):
    with pytest.raises(vestige.errors.ConfigError, match="not a vestige run directory"):
        vestige.load_run(tmp_path)


def test_a_diverging_run_stops_with_a_clear_message_and_keeps_its_checkpoint(workdir):
    result = run_cli([*TINY, "optim.lr=1e6", "trainer.log_every=1"], workdir)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert "became nan" in line or "became inf" in line
    (run_dir,) = (workdir / "outputs" / "runs").iterdir()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "diverged"
    assert f"error: {line.removeprefix('error: ')}" in (run_dir / "log.txt").read_text()
    snapshot = vestige.load_run(run_dir).snapshots[0]
    weights = torch.load(snapshot.path, weights_only=True)["model"]
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())


def test_files_are_written_as_the_umask_allows_not_private_to_the_owner(tmp_path):
    """A cluster's group reads results: atomic writes must not keep the temp file's 0600."""
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "table.csv", "step\n0\n")
    finally:
        os.umask(old)
    assert (tmp_path / "table.csv").stat().st_mode & 0o777 == 0o644


def test_with_dense_snapshots_a_diverging_run_keeps_only_finite_states(workdir):
    """A step's update can break the weights after a finite loss: nothing non-finite is saved
    or evaluated, and the last good checkpoint named is truly finite."""
    dense = ["checkpoint.snapshots=[0it,every 1it]", "checkpoint.resume_every=1it"]
    args = [*TINY, "optim.lr=1e6", "trainer.log_every=1000", *dense, "checkpoint.keep_resume=50"]
    result = run_cli(args, workdir)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert "became" in line and "the last good checkpoint is kept in" in line
    (run_dir,) = (workdir / "outputs" / "runs").iterdir()
    saved = [*(run_dir / "checkpoints" / "snapshots").glob("*.pt")]
    saved += [*(run_dir / "checkpoints" / "resume").glob("*.pt")]
    assert saved
    for path in saved:
        state = torch.load(path, weights_only=True)["model"]
        assert all(torch.isfinite(w).all() for w in state.values() if w.is_floating_point()), path
    rows = vestige.load_run(run_dir).metrics
    assert all(math.isfinite(row["eval_loss"]) for row in rows)
