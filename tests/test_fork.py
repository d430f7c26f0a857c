"""A fork continues its parent's full state from step k: forking the baseline at epoch 1 with
"alpha -20 from epoch 1" gives exactly the weights of a from-scratch run with that schedule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY, run_cli

import vestige
from vestige.rundir import run_name
from vestige.tasks.compose import compose_point

BASE = [*TINY, "trainer.epochs=3", "trainer.deterministic=true"]
WINDOW = ["regularizer=selectivity", "regularizer.alpha=[{from:1ep,alpha:-20.0}]"]


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    run = vestige.load_run(run_dir)
    return torch.load(run.snapshots[-1].path, weights_only=True)["model"]


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fork")
    result = run_cli(
        [*BASE, "checkpoint.forkable=[1ep]", f"hydra.run.dir={folder / 'parent'}"], folder
    )
    assert result.returncode == 0, result.stderr
    return folder / "parent"


@pytest.fixture(scope="module")
def forked(parent) -> Path:
    """The parent forked at epoch 1 with the window (each test that reads it gets it, whichever
    worker runs it)."""
    folder = parent.parent
    fork = run_cli(
        [*BASE, *WINDOW, f"fork.from={parent}", "fork.at=1ep", f"hydra.run.dir={folder / 'fork'}"],
        folder,
    )
    assert fork.returncode == 0, fork.stderr
    return folder / "fork"


def test_fork_at_k_equals_the_run_from_scratch(parent, forked):
    folder = parent.parent
    scratch = run_cli([*BASE, *WINDOW, f"hydra.run.dir={folder / 'scratch'}"], folder)
    assert scratch.returncode == 0, scratch.stderr
    a, b = final_weights(folder / "fork"), final_weights(folder / "scratch")
    assert all(torch.equal(a[key], b[key]) for key in a)
    rows_fork = vestige.load_run(folder / "fork").metrics
    rows_scratch = vestige.load_run(folder / "scratch").metrics
    assert [r["step"] for r in rows_fork] == [r["step"] for r in rows_scratch]
    after = [(r["step"], r["eval_acc"], r["si/mean"]) for r in rows_fork if r["epoch"] > 1]
    assert after == [
        (r["step"], r["eval_acc"], r["si/mean"]) for r in rows_scratch if r["epoch"] > 1
    ]
    assert json.loads((folder / "fork" / "run.json").read_text())["identity"]["fork.at"] == "1ep"


def test_a_fork_has_its_parents_history_up_to_k(forked):
    fork = vestige.load_run(forked)
    ipe = fork.info["iterations_per_epoch"]
    mine = [s.step for s in fork.snapshots]
    assert mine == [0, ipe, 2 * ipe, 3 * ipe]
    assert (forked / "selectivity" / f"step_{0:08d}.npz").exists()


def test_a_forks_identity_names_the_parent_by_hash_not_path(parent, tmp_path):
    moved = tmp_path / "moved"
    import shutil

    shutil.copytree(parent, moved)
    here = run_name(compose_point([*BASE, *WINDOW, f"fork.from={parent}", "fork.at=1ep"]))
    there = run_name(compose_point([*BASE, *WINDOW, f"fork.from={moved}", "fork.at=1ep"]))
    assert here == there
    assert here != run_name(compose_point([*BASE, *WINDOW]))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["fork.at=2ep"], "kept no full state at step"),
        (["fork.at=7ep"], "is past the end of run parent, which trains"),
        (["fork.at=1ep", "optim.lr=0.05"], "optim.lr=0.05 differs from the parent run's 0.1"),
        (["fork.at=1ep", "seed=3"], "seed=3 differs"),
    ],
)
def test_a_fork_that_cannot_start_is_one_clear_error(parent, overrides, message):
    result = run_cli([*BASE, *WINDOW, f"fork.from={parent}", *overrides], parent.parent)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert message in line


def test_a_window_after_the_baseline_starts_from_its_kept_state_and_ends_as_from_scratch(
    tmp_path,
):
    """The regularization-windows sweep shares the common prefix: a run with alpha 0 until
    epoch 1 starts from its alpha = 0 baseline's state at epoch 1, found by its config alone."""
    kept = [*BASE, "regularizer=selectivity", "checkpoint.forkable=[1ep]"]
    window = [*kept, "regularizer.alpha=-20@1ep"]
    shared, alone = tmp_path / "shared", tmp_path / "alone"
    for folder, runs in ((shared, [[*kept, "regularizer.alpha=0.0"], window]), (alone, [window])):
        folder.mkdir()
        for args in runs:
            result = run_cli(args, folder)
            assert result.returncode == 0, result.stderr
    (with_prefix,) = [
        run
        for run in (shared / "outputs" / "runs").iterdir()
        if "forked" in (run / "log.txt").read_text()
    ]
    (from_scratch,) = (alone / "outputs" / "runs").iterdir()
    assert with_prefix.name == from_scratch.name  # the same run, whichever way it started
    a, b = final_weights(with_prefix), final_weights(from_scratch)
    assert all(torch.equal(a[key], b[key]) for key in a)
    steps = [row["step"] for row in vestige.load_run(with_prefix).metrics]
    assert steps == [row["step"] for row in vestige.load_run(from_scratch).metrics]
