"""DataFrame views of a run and of a sweep: the same values as the tables they view, and one
line naming the install when pandas is absent (pandas is optional)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY, finished_run

import vestige
from vestige.errors import ConfigError
from vestige.report.tables import selectivity_summary

# two iterations of one epoch: snapshots (and selectivity) at steps 0 and 2
FEW = [
    *(o for o in TINY if not o.startswith(("trainer.epochs", "data.synthetic.train_size"))),
    "trainer.epochs=1",
    "data.synthetic.train_size=64",
]
WINDOW = "regularizer.alpha=[{from:0it,alpha:-1.0}]"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A folder of two runs, a baseline and one regularized by a window of alpha (a list)."""
    folder = tmp_path_factory.mktemp("frames")
    for name, settings in [("baseline", []), ("reg", ["regularizer=selectivity", WINDOW])]:
        (folder / name).mkdir()
        finished_run([*FEW, *settings], folder / name)
    return folder


def same(cell: object, value: object) -> bool:
    """A frame's cell holds the table's value; a missing value (None, NaN) is NaN there."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return bool(pd.isna(cell))
    return cell == value


def test_metrics_frame_has_every_metrics_row_and_value(runs):
    run = vestige.load_run(runs / "baseline" / "run")
    frame, rows = run.metrics_frame(), run.metrics
    assert len(rows) > 1
    assert frame["step"].tolist() == [row["step"] for row in rows]
    assert set(frame.columns) == {key for row in rows for key in row}
    for column in frame.columns:
        assert all(same(c, row.get(column)) for c, row in zip(frame[column], rows, strict=True))


def test_selectivity_frame_is_the_per_unit_table_and_groups_into_the_stage_means(runs):
    run = vestige.load_run(runs / "baseline" / "run")
    table, frame = run.selectivity(), run.selectivity_frame()
    assert list(frame.columns) == list(table)
    for column, values in table.items():
        np.testing.assert_array_equal(frame[column].to_numpy(), values)
    assert sorted(frame["step"].unique()) == [snapshot.step for snapshot in run.snapshots]
    # a ResNet's blocks of one stage are equally wide: the mean over a stage's units is the
    # mean of its block means, the stage value of summary.csv (docs/science.md §2)
    stages = frame.groupby(["step", "stage"])["si"].mean()
    summary = selectivity_summary(run)
    for step, stage, si in zip(summary["step"], summary["stage"], summary["si"], strict=True):
        if stage != "all":
            assert stages[(int(step), stage)] == pytest.approx(si, rel=1e-5)


def test_sweep_frame_has_one_row_per_point_with_what_varies_and_the_final_metrics(runs):
    sweep = vestige.load_sweep(runs)
    frame, rows = sweep.frame(), sweep.rows()
    assert sweep.varying == ["regularizer.alpha", "regularizer.name"]
    assert list(frame.columns) == list(rows[0])
    assert frame["run"].tolist() == [point.run.name for point in sweep.points]
    for column in frame.columns.drop("regularizer.alpha"):
        assert all(same(c, row[column]) for c, row in zip(frame[column], rows, strict=True))
    # the window (a list) is written as on the command line (its keys sorted, as in the run's
    # identity), and so is the other point's alpha, so the column is one of text
    assert frame["regularizer.alpha"].tolist() == ["0.0", "[{alpha:-1.0,from:0it}]"]
    for point, row in zip(sweep.points, frame.itertuples(), strict=True):
        last = [m for m in vestige.load_run(point.run).metrics if "eval_acc" in m][-1]
        assert (row.status, row.epoch) == ("complete", last["epoch"])
        assert row.eval_acc == last["eval_acc"]
    by_alpha = frame.groupby("regularizer.alpha")["eval_acc"].mean()
    alphas, accuracies = frame["regularizer.alpha"], frame["eval_acc"]
    assert by_alpha.to_dict() == dict(zip(alphas, accuracies, strict=True))


def test_without_pandas_each_frame_is_one_line_naming_the_install(runs, monkeypatch):
    run, sweep = vestige.load_run(runs / "baseline" / "run"), vestige.load_sweep(runs)
    monkeypatch.setitem(sys.modules, "pandas", None)
    for view in (run.metrics_frame, run.selectivity_frame, sweep.frame):
        with pytest.raises(ConfigError) as raised:
            view()
        (line,) = str(raised.value).splitlines()
        assert line.endswith("needs pandas, which is not installed: pip install pandas "
                             "(or pip install 'vestige[pandas]')")


def test_a_sweep_that_is_not_a_folder_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"nowhere is not a folder: pass a sweep folder"):
        vestige.load_sweep(tmp_path / "nowhere")
