"""`init.from=<run> init.at=<step>`: a new run whose model starts from another run's snapshot,
with its own optimiser and schedule; named by the source's hash and the step, not the path."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY, run_cli

import vestige
from vestige.rundir import run_name
from vestige.tasks.compose import compose_point


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("init")
    result = run_cli([*TINY, f"hydra.run.dir={folder / 'source'}"], folder)
    assert result.returncode == 0, result.stderr
    return folder / "source"


def snapshot(run_dir: Path, index: int) -> dict[str, torch.Tensor]:
    run = vestige.load_run(run_dir)
    return torch.load(run.snapshots[index].path, weights_only=True)["model"]


def test_the_model_starts_as_the_source_snapshot_and_then_trains_on(source):
    child = source.parent / "child"
    overrides = [*TINY, "optim.lr=0.05", f"init.from={source}", "init.at=1ep"]
    result = run_cli([*overrides, f"hydra.run.dir={child}"], source.parent)
    assert result.returncode == 0, result.stderr
    started, given = snapshot(child, 0), snapshot(source, 1)
    assert vestige.load_run(child).snapshots[0].step == 0
    assert all(torch.equal(started[key], given[key]) for key in given)
    assert not torch.equal(snapshot(child, -1)["fc.weight"], given["fc.weight"])


def test_the_identity_names_the_source_by_hash_and_step_not_path(source, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(source, moved)
    here = run_name(compose_point([*TINY, f"init.from={source}", "init.at=1ep"]))
    there = run_name(compose_point([*TINY, f"init.from={moved}", "init.at=1ep"]))
    later = run_name(compose_point([*TINY, f"init.from={source}", "init.at=2ep"]))
    assert here == there
    assert len({here, later, run_name(compose_point(TINY))}) == 3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["init.at=1ep"], "init.from and init.at go together"),
        (["init.from={source}", "init.at=5it"], "has no snapshot at step 5; its snapshots are"),
        (["init.from={source}", "init.at=1ep", "model.width=0.25"], "model.width=0.25 differs"),
        (["init.from={source}", "init.at=1ep", "model=resnet34"], "model.name='resnet34' differs"),
        (["init.from={tmp}", "init.at=1ep"], "point it at a vestige run directory"),
        (["init.from={source}", "init.at=1ep", "+init.step=3"], "unknown config key"),
    ],
)
def test_a_start_that_cannot_be_made_is_one_clear_error(source, tmp_path, overrides, message):
    filled = [o.format(source=source, tmp=tmp_path) for o in overrides]
    result = run_cli([*TINY, *filled], tmp_path)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert message in line
