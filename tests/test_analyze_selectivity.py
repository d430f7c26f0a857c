"""task=analyze analysis=selectivity measures every snapshot of a run, resumably, exactly as the
measurement made during training does."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, run_cli

import vestige
from vestige.config import SelectivityConfig
from vestige.selectivity.store import SelectivityStore

SNAPSHOTS = "checkpoint.snapshots=[0it,every 2it until 1ep,every 1ep]"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """The same training twice: selectivity measured while training, and not measured."""
    workdir = tmp_path_factory.mktemp("analyze")
    dirs = []
    for enabled in ("true", "false"):
        target = workdir / f"measured-{enabled}"
        args = [*TINY, SNAPSHOTS, "trainer.deterministic=true", f"selectivity.enabled={enabled}"]
        result = run_cli([*args, f"hydra.run.dir={target}"], workdir)
        assert result.returncode == 0, result.stderr
        dirs.append(target)
    return dirs[0], dirs[1]


def test_analysis_measures_every_snapshot_like_training_does(runs):
    measured, unmeasured = runs
    result = run_cli(["task=analyze", f"run={unmeasured}", "analysis=selectivity"], unmeasured)
    assert result.returncode == 0, result.stderr
    # off a terminal: a plain line per snapshot, with how far the analysis is and the time left
    steps = [s.step for s in vestige.load_run(unmeasured).snapshots]
    lines = [line for line in result.stdout.splitlines() if "[selectivity " in line]
    assert len(lines) == len(steps)
    for done, (step, line) in enumerate(zip(steps, lines, strict=True), start=1):
        assert line.startswith(f"step {step:>8d}")
        assert f"[selectivity {done}/{len(steps)}, elapsed 0:" in line and ", ETA 0:" in line
    during = vestige.load_run(measured).selectivity()
    after = vestige.load_run(unmeasured).selectivity()
    steps = [s.step for s in vestige.load_run(unmeasured).snapshots]
    assert sorted(set(after["step"].tolist())) == steps
    for key in ("step", "layer", "channel", "preferred_class"):
        assert np.array_equal(during[key], after[key]), key
    np.testing.assert_allclose(during["si"], after["si"], rtol=1e-5, atol=1e-6)


def test_analysis_skips_snapshots_already_done(runs):
    measured, _ = runs
    result = run_cli(["task=analyze", f"run={measured}", "analysis=selectivity"], measured)
    assert result.returncode == 0, result.stderr
    assert "0 of" in result.stdout


def test_summary_table_has_a_row_per_snapshot_and_stage_matching_the_metrics(runs):
    measured, _ = runs
    run = vestige.load_run(measured)
    with open(measured / "selectivity" / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    stages = ["layer1", "layer2", "layer3", "layer4", "all"]
    assert [(int(r["step"]), r["stage"]) for r in rows] == [
        (s.step, stage) for s in run.snapshots for stage in stages
    ]
    network = {int(r["step"]): float(r["si"]) for r in rows if r["stage"] == "all"}
    for row in run.metrics:
        assert network[row["step"]] == pytest.approx(row["si/mean"], rel=1e-5)


def test_analyze_without_a_run_of_this_config_is_one_clear_error(tmp_path):
    result = run_cli(["task=analyze", "analysis=selectivity"], tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: run=None is invalid: this config's run (")
    assert line.endswith(
        "has not been trained; train it first (the same command without "
        "task=analyze), or set run=<a run directory>"
    )
    assert not (tmp_path / "outputs").exists()


def test_analyze_without_run_analyses_the_run_its_config_trains(tmp_path):
    trained = run_cli([*TINY, "trainer.epochs=1"], tmp_path)
    assert trained.returncode == 0, trained.stderr
    result = run_cli([*TINY, "trainer.epochs=1", "task=analyze", "analysis=selectivity"], tmp_path)
    assert result.returncode == 0, result.stderr
    (run,) = (tmp_path / "outputs" / "runs").iterdir()
    assert f"of {run.name} to do" in result.stdout


def test_every_setting_that_changes_the_values_names_the_store_folder(tmp_path):
    def folder(bn_stats: str = "running", **settings) -> str:
        return SelectivityStore(tmp_path, SelectivityConfig(**settings), bn_stats).folder.name

    assert folder() == "selectivity"
    assert folder(eps=1e-7) == "selectivity-eps1e-07"
    assert folder(negative="keep", precision="bf16") == "selectivity-keep-bf16"
    assert folder("recompute", units="all_relu") == "selectivity-all_relu-recompute"


def test_a_run_shows_what_it_is_and_a_missing_snapshot_is_a_key_error(runs):
    measured, _ = runs
    run = vestige.load_run(measured)
    shown = repr(run)
    assert shown.startswith(f"Run({str(measured)!r}, status='complete'")
    assert f"snapshots={len(run.snapshots)})" in shown
    with pytest.raises(KeyError, match="has no snapshot at step 999: it has 0, 2"):
        run.load_model(999)


def test_images_for_another_analysis_are_one_line(runs):
    measured, _ = runs
    args = ["task=analyze", f"run={measured}", "analysis=selectivity", "analysis.images=500"]
    result = run_cli(args, measured)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: analysis.images=500 is invalid: it counts analysis=attention's")
