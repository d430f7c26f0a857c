"""A sweep's table: its record of points, the settings that vary, and means over seeds with
95% intervals; a local sweep writes its record and its table by itself."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from conftest import TINY, run_cli

from vestige.report.collect import group_rows, mean_and_interval
from vestige.results import Point, varying_keys
from vestige.rundir import SweepDir, run_directory
from vestige.tasks.compose import compose_point
from vestige.tasks.sweep import write_record


def test_interval_is_students_t_over_seeds():
    mean, half = mean_and_interval([0.70, 0.72, 0.74])
    assert mean == pytest.approx(0.72)
    assert half == pytest.approx(4.303 * 0.02 / math.sqrt(3))  # t(0.975, 2 dof) * sd / sqrt(n)
    assert mean_and_interval([0.5]) == (0.5, None)


def test_points_equal_but_for_seed_form_one_group():
    points = [
        Point(Path(f"r{i}"), {"seed": seed, "optim.lr": lr}, "complete", 1.0, {"eval_acc": acc})
        for i, (seed, lr, acc) in enumerate([(0, 0.1, 0.8), (1, 0.1, 0.6), (0, 0.05, 0.5)])
    ]
    keys = varying_keys(points)
    assert keys == ["optim.lr", "seed"]
    groups = {row["optim.lr"]: row for row in group_rows(points, keys)}
    assert groups[0.1]["seeds"] == 2 and groups[0.1]["eval_acc"] == pytest.approx(0.7)
    assert groups[0.1]["eval_acc ±95%"] == pytest.approx(12.706 * math.sqrt(0.02) / math.sqrt(2))
    assert groups[0.05]["seeds"] == 1 and groups[0.05]["eval_acc ±95%"] is None


def test_a_folder_without_record_collects_every_run_directory_below_it(tmp_path):
    for name in ("a", "b"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "config.yaml").write_text("seed: 0\n")
    assert [run.name for run, _ in SweepDir(tmp_path).runs()] == ["a", "b"]


def test_collect_needs_an_existing_sweep_folder(workdir):
    result = run_cli(["task=collect", f"sweep={workdir / 'nowhere'}"], workdir)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: sweep='{workdir / 'nowhere'}' is invalid: task=collect needs sweep=<a sweep "
        "directory, e.g. outputs/sweeps/<name>, or any folder holding run directories>"
    ]
    assert not (workdir / "outputs").exists()


@pytest.mark.slow
def test_local_sweep_records_its_points_tables_them_and_resubmission_skips_them(workdir):
    sweep = [*[o for o in TINY if not o.startswith("trainer.epochs")], "trainer.epochs=1"]
    result = run_cli(["-m", *sweep, "seed=0,1"], workdir)
    assert result.returncode == 0, result.stderr
    (folder,) = (workdir / "outputs" / "sweeps").iterdir()
    record = json.loads((folder / "sweep.json").read_text())
    runs = [Path(point["run"]) for point in record["points"]]
    assert [point["overrides"][-1] for point in record["points"]] == ["seed=0", "seed=1"]
    assert all(run.parent == workdir / "outputs" / "runs" for run in runs)
    with open(folder / "collect.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["seed"], row["status"], row["run"]) for row in rows] == [
        ("0", "complete", runs[0].name),
        ("1", "complete", runs[1].name),
    ]
    for row, run in zip(rows, runs, strict=True):
        last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
        assert float(row["eval_acc"]) == pytest.approx(last["eval_acc"])
    assert "| seeds |" in (folder / "collect.md").read_text()

    again = run_cli(["-m", *sweep, "seed=0,1"], workdir)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("is already complete; nothing to do") == 2
    assert list((workdir / "outputs" / "sweeps").iterdir()) == [folder]
    assert len(json.loads((folder / "sweep.json").read_text())["submissions"]) == 2


def test_a_sweep_of_more_than_1024_points_is_recorded_whole(tmp_path):
    write_record(tmp_path, ["seed=range(0,1100)", "trainer.epochs=1"])
    points = json.loads(SweepDir(tmp_path).record.read_text())["points"]
    assert len(points) == 1100
    assert len({point["run"] for point in points}) == 1100  # every seed its own run
    last = compose_point(["seed=1099", "trainer.epochs=1"])
    assert points[-1]["run"] == run_directory(last, True)
    assert [point["overrides"][0] for point in points[:2]] == ["seed=0", "seed=1"]


@pytest.mark.slow
def test_a_failing_point_fails_alone_and_a_resubmission_skips_it_unless_retried(workdir):
    """A diverging point is recorded with its reason; the points after it still run; the table
    shows every status; the exit status says a point failed."""
    sweep = [*[o for o in TINY if not o.startswith("trainer.epochs")], "trainer.epochs=1"]
    sweep += ["trainer.deterministic=true", "optim.lr=0.05,1e6,0.02"]
    result = run_cli(["-m", *sweep], workdir)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "1 of 3 points failed" in result.stderr
    (folder,) = (workdir / "outputs" / "sweeps").iterdir()
    with open(folder / "collect.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["optim.lr"], row["status"]) for row in rows] == [
        ("0.05", "complete"),
        ("1000000.0", "failed"),
        ("0.02", "complete"),
    ]
    failed = rows[1]["run"]
    reason = json.loads((folder / "failed" / f"{failed}.json").read_text())
    assert reason["recurs"] and "the training loss became nan" in reason["error"]
    assert f"- {failed}: " in (folder / "collect.md").read_text()

    again = run_cli(["-m", *sweep], workdir)
    assert again.returncode == 1
    assert f"skipping {failed}: it failed before (" in again.stdout
    assert again.stdout.count("is already complete; nothing to do") == 2

    retried = run_cli(["-m", *sweep, "retry_failed=true"], workdir)
    assert retried.returncode == 1
    assert "skipping" not in retried.stdout and "became nan" in retried.stderr


def test_a_sweep_in_progress_is_tabled_with_unstarted_points(workdir):
    """collect while a sweep runs: a point not started yet (the first, here) is a row with its
    status and empty values."""
    point = [*[o for o in TINY if not o.startswith("trainer.epochs")], "trainer.epochs=1"]
    point.append(f"outputs={workdir / 'outputs'}")
    folder = workdir / "sweep"
    write_record(folder, [*point, "seed=0,1"])
    trained = run_cli([*point, "seed=1"], workdir)
    assert trained.returncode == 0, trained.stderr
    result = run_cli(["task=collect", f"sweep={folder}"], workdir)
    assert result.returncode == 0, result.stderr
    with open(folder / "collect.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["seed"], row["status"], row["eval_acc"]) for row in rows][0] == (
        "0",
        "not started",
        "",
    )
    assert rows[1]["status"] == "complete" and float(rows[1]["eval_acc"]) > 0
    # a folder of runs without a sweep record keeps only runs: its tables go to outputs/sweeps
    runs = workdir / "outputs" / "runs"
    plain = run_cli(["task=collect", f"sweep={runs}", "trainer.progress=plain"], workdir)
    assert plain.returncode == 0, plain.stderr
    assert sorted(p.name for p in runs.iterdir()) == [Path(rows[1]["run"]).name]
    (tables,) = (workdir / "outputs" / "sweeps").glob("folder-*")
    assert f"tables: {tables / 'collect.csv'}" in plain.stdout
