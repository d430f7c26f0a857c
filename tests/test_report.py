"""task=report: figures and one self-contained HTML page from one run or several, seeds grouped."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, finished_run, run_cli
from matplotlib.container import ErrorbarContainer
from matplotlib.image import imread
from omegaconf import OmegaConf

from vestige.config import RunConfig
from vestige.errors import ConfigError
from vestige.report.build import build_report, render_figures
from vestige.report.figures import FIGURES, accuracy_curves, final_accuracy
from vestige.report.grouping import group_by_seed, readable, seed_band
from vestige.report.inputs import report_folder, report_runs
from vestige.report.page import render_page
from vestige.report.plotting import STYLES, epoch_axis, panels
from vestige.report.ranges import band_edges
from vestige.report.summaries import runs_table
from vestige.report.tables import Curve, RunRecord, metric_curve, read_table, table_curve
from vestige.rundir import run_name
from vestige.tasks.checks import check
from vestige.tasks.compose import compose_point

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# sub-epoch snapshots (8 iterations per epoch): the epoch axis goes logarithmic
SNAPSHOTS = "checkpoint.snapshots=[0it,2it,4it,every 1ep]"


def record(
    name: str,
    identity: dict | None = None,
    seed: int = 0,
    parent: Path | None = None,
    **tables,
) -> RunRecord:
    """A run as the report sees it, made by hand: two evaluations unless `metrics` is given."""
    metrics = tables.pop(
        "metrics",
        [{"step": 0, "epoch": 0.0, "eval_acc": 0.1}, {"step": 8, "epoch": 1.0, "eval_acc": 0.5}],
    )
    config = OmegaConf.structured(RunConfig)
    config.fork["from"] = None if parent is None else str(parent)
    return RunRecord(
        path=Path("/runs") / name,
        config=config,
        config_text=f"seed: {seed}\n",
        identity={**(identity or {}), **({"seed": seed} if seed else {})},
        seed=seed,
        status="complete",
        metrics=metrics,
        **tables,
    )


def table(**columns) -> dict[str, np.ndarray]:
    return {key: np.asarray(values) for key, values in columns.items()}


def embedded_pngs(page: str) -> list[bytes]:
    """The bytes of every <img> of a page; each must be a PNG data URI."""
    sources = re.findall(r"<img [^>]*src=\"([^\"]*)\"", page)
    prefix = "data:image/png;base64,"
    assert all(source.startswith(prefix) for source in sources), "an image is not embedded"
    return [base64.b64decode(source.removeprefix(prefix)) for source in sources]


def assert_valid_png(data: bytes) -> None:
    assert data.startswith(PNG_SIGNATURE)
    height, width, _ = imread(io.BytesIO(data)).shape
    assert width > 100 and height > 100


# --- seeds: mean and band ------------------------------------------------------------------


def test_two_seeds_give_their_mean_and_a_band_of_two_standard_errors():
    band = seed_band([Curve(np.array([0.0, 1.0]), np.array([0.2, 0.4])),
                      Curve(np.array([0.0, 1.0]), np.array([0.4, 0.8]))])  # fmt: skip
    # sd (n-1) of {0.2, 0.4} is 0.1414, SE = sd / sqrt(2) = 0.1; of {0.4, 0.8}: SE = 0.2
    assert band.x.tolist() == [0.0, 1.0]
    np.testing.assert_allclose(band.mean, [0.3, 0.6])
    np.testing.assert_allclose(band.spread, [0.2, 0.4])
    assert band.count.tolist() == [2, 2]


def test_a_snapshot_only_one_seed_reached_has_its_value_and_no_band():
    band = seed_band([Curve(np.array([0.0, 1.0]), np.array([0.2, 0.4])),
                      Curve(np.array([0.0]), np.array([0.4]))])  # fmt: skip
    assert band.mean[1] == 0.4 and band.count[1] == 1 and np.isnan(band.spread[1])


# --- grouping ------------------------------------------------------------------------------


def test_runs_that_differ_only_in_seed_form_one_group_named_by_what_differs():
    runs = [
        record("a", {"optim.lr": 0.05}, seed=0),
        record("b", {"optim.lr": 0.01}, seed=0),
        record("c", {"optim.lr": 0.05}, seed=2),
        record("d", {"optim.lr": 0.05}, seed=1),
    ]
    groups = group_by_seed(runs)
    assert [[run.name for run in g.runs] for g in groups] == [["a", "d", "c"], ["b"]]
    assert [g.name for g in groups] == ["lr = 0.05", "lr = 0.01"]
    assert [g.overrides for g in groups] == ["optim.lr=0.05", "optim.lr=0.01"]


def test_a_group_that_keeps_a_varying_setting_at_its_default_is_named_with_the_default():
    groups = group_by_seed([record("base", {}), record("low", {"optim.lr": 0.01})])
    assert [g.name for g in groups] == ["lr = 0.1", "lr = 0.01"]


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("optim.lr", 0.1, "lr = 0.1"),
        ("model.name", "deit_ti", "model = deit_ti"),
        ("trainer.epochs", 90, "epochs = 90"),
        ("regularizer.alpha", "-20@0ep..1ep", "alpha = -20 in epoch 0"),
        ("regularizer.alpha", "-20@0ep..5ep", "alpha = -20 in epochs 0-4"),
        ("regularizer.alpha", "-20@5ep", "alpha = -20 from epoch 5"),
        ("regularizer.alpha", -20.0, "alpha = -20"),
        ("regularizer.alpha", 0.0, "baseline (alpha = 0)"),
        ("regularizer.alpha", "-20@0it..100it", "alpha = -20 in iterations 0-99"),
        ("regularizer.alpha", "-20@1ep50it", "alpha = -20 from step 1ep50it"),
        (
            "regularizer.alpha",
            [{"from": "0ep", "until": "5ep", "alpha": 0.0}, {"from": "5ep", "alpha": -20.0}],
            "alpha = -20 from epoch 5",
        ),
        (
            "regularizer.alpha",
            [{"from": "0ep", "until": "1ep", "alpha": -20}, {"from": "5ep", "alpha": 10}],
            "alpha = -20 in epoch 0; 10 from epoch 5",
        ),
        (
            "regularizer.alpha",
            [{"from": "5ep", "ramp": "1ep", "alpha": -20.0}],
            "alpha = -20 from epoch 5 (ramp 1ep from 0)",
        ),
    ],
)
def test_a_setting_reads_in_words(key, value, words):
    assert readable(key, value) == words


def test_conditions_are_named_in_words_with_their_overrides_in_the_table_and_configs():
    groups = group_by_seed(
        [record(f"base{s}", {}, seed=s) for s in (0, 1)]
        + [record(f"reg{s}", {"regularizer.alpha": "-20@0ep..1ep"}, seed=s) for s in (0, 1)]
    )
    assert [g.name for g in groups] == ["baseline (alpha = 0)", "alpha = -20 in epoch 0"]
    figure = accuracy_curves(groups, STYLES["screen"])
    (legend,) = figure.legends
    assert [text.get_text() for text in legend.get_texts()] == [g.name for g in groups]
    page = render_page("t", "", groups, [], [runs_table(groups)])
    assert "<th>settings</th>" in page and "<td>regularizer.alpha=-20@0ep..1ep</td>" in page
    assert page.count("<code>regularizer.alpha=-20@0ep..1ep seed=1</code>") == 1


def test_one_group_is_named_by_its_model_and_data():
    groups = group_by_seed([record("resnet18-synthetic-0123456789", seed=s) for s in (0, 1)])
    assert [g.name for g in groups] == ["resnet18-synthetic"]


def parent_run(folder: Path, run_hash: str, identity: dict) -> Path:
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"run_hash": run_hash, "identity": identity}))
    (folder / "config.yaml").write_text("fork:\n  from: null\n  at: null\n")
    return folder


def test_forks_of_the_seeds_of_one_baseline_form_one_group(tmp_path):
    """A fork names its parent by run hash, which differs between the parent's seeds."""
    keep = {"checkpoint.forkable": ["5ep"]}
    parents = [
        parent_run(tmp_path / "p0", "aaaa", keep),
        parent_run(tmp_path / "p1", "bbbb", {**keep, "seed": 1}),
        parent_run(tmp_path / "lr", "cccc", {**keep, "optim.lr": 0.01}),
    ]
    fork = {"fork.at": "5ep", "regularizer.name": "selectivity"}
    groups = group_by_seed(
        [
            record("f0", {**fork, "fork.parent": "aaaa"}, seed=0, parent=parents[0]),
            record("f1", {**fork, "fork.parent": "bbbb"}, seed=1, parent=parents[1]),
            record("f2", {**fork, "fork.parent": "cccc"}, seed=0, parent=parents[2]),
        ]
    )
    assert [[run.name for run in g.runs] for g in groups] == [["f0", "f1"], ["f2"]]
    assert groups[1].settings["fork.parent.optim.lr"] == 0.01


# --- figures -------------------------------------------------------------------------------


def test_rows_that_share_an_epoch_are_averaged_into_one_point():
    gates = table(epoch=[0.0, 0.0, 1.0, 1.0, 1.0], layer=[0, 0, 0, 0, 1],
                  gate=[0.2, 0.4, 0.6, 0.8, 9.0])  # fmt: skip
    curve = table_curve(gates, "gate", layer=0)
    assert curve.x.tolist() == [0.0, 1.0]
    np.testing.assert_allclose(curve.y, [0.3, 0.7])
    assert table_curve(gates, "gate", layer=7) is None


def drawn_tick_labels(axes) -> list:
    """The x tick labels matplotlib draws (ticks within the view), once the figure is drawn."""
    low, high = sorted(axes.get_xlim())
    ticks = zip(axes.get_xticks(), axes.xaxis.get_ticklabels(), strict=True)
    return [label for tick, label in ticks if low <= tick <= high and label.get_text()]


def overlapping_tick_labels(figure) -> list[tuple[str, str]]:
    """Pairs of x tick labels of any panel whose drawn boxes overlap."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    pairs = []
    for axes in figure.axes:
        boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in drawn_tick_labels(axes)]
        pairs += [(a, b) for n, (a, box) in enumerate(boxes)
                  for b, other in boxes[n + 1:] if box.overlaps(other)]  # fmt: skip
    return pairs


# every hundredth of the first tenth of an epoch, then on to epoch 90
DENSE_EARLY = [0.0, *(k / 100 for k in range(1, 11)), 0.2, 0.3, 0.5, 1, 2, 3, 5, 10, 20, 45, 90]


@pytest.mark.parametrize("style", ["screen", "paper"])
@pytest.mark.parametrize("epochs", [DENSE_EARLY, DENSE_EARLY[:12], [0.0, 0.001, 0.002, 0.003, 1]])
def test_tick_labels_of_a_log_epoch_axis_never_overlap(style, epochs):
    metrics = [{"step": n, "epoch": e, "eval_acc": 0.5, "eval_loss": 1.0, "train_loss": 1.0}
               for n, e in enumerate(epochs)]  # fmt: skip
    groups = group_by_seed([record("a", metrics=metrics)])
    figure = accuracy_curves(groups, STYLES[style])
    assert figure.axes[0].get_xscale() == "symlog"
    assert overlapping_tick_labels(figure) == []
    for axes in figure.axes:  # the start, the first epoch and later decades stay marked
        labels = [label.get_text() for label in drawn_tick_labels(axes)]
        assert labels[0] == "0" and len(labels) >= 3, labels
        assert {"1", "10"} & set(labels) if max(epochs) >= 1 else True, labels


def test_sub_epoch_snapshots_put_the_epoch_axis_on_a_log_scale():
    (sub_epoch,), (whole,) = panels(1), panels(1)
    epoch_axis(sub_epoch, [0.0, 0.25, 0.5, 1.0, 2.0])
    epoch_axis(whole, [0.0, 1.0, 2.0])
    assert (sub_epoch.get_xscale(), whole.get_xscale()) == ("symlog", "linear")


def seeds_of(name: str, identity: dict, accuracies: list[list[float]]) -> list[RunRecord]:
    """One run per seed with the given eval accuracies at epochs 0, 1, 2, ... (loss = acc)."""
    return [
        record(f"{name}{seed}", identity, seed=seed,
               metrics=[{"step": n, "epoch": float(n), "eval_acc": a, "eval_loss": a}
                        for n, a in enumerate(values)])
        for seed, values in enumerate(accuracies)
    ]  # fmt: skip


def test_seed_bands_stay_within_the_values_a_quantity_can_take():
    # at epoch 0 the mean is 0.02 and 2 SE is 0.02 * 2: unclipped, the band would reach -0.02;
    # at epoch 1 the mean is 0.98 and would reach 1.02
    groups = group_by_seed(
        seeds_of("low", {}, [[0.0, 0.96], [0.04, 1.0]])
        + seeds_of("lr", {"optim.lr": 0.01}, [[0.0, 0.9], [0.0, 1.0], [0.3, 0.95]])
    )
    mean, spread = seed_band_of(groups[0])
    assert (mean - spread).min() < 0 and (mean + spread).max() > 1, "the data would go outside"
    accuracy, loss = accuracy_curves(groups, STYLES["screen"]).axes
    for axes, (low, high) in ((accuracy, (0, 1)), (loss, (0, np.inf))):
        shaded = np.concatenate(
            [path.vertices[:, 1] for band in axes.collections for path in band.get_paths()]
        )
        assert len(axes.collections) == 2 and low <= shaded.min() and shaded.max() <= high
    (axes,) = final_accuracy(groups, STYLES["screen"]).axes
    whiskers = [c.lines[2][0] for c in axes.containers if isinstance(c, ErrorbarContainer)]
    bars = np.concatenate([segment[:, 1] for lines in whiskers for segment in lines.get_segments()])
    assert bars.min() >= 0 and bars.max() <= 1


def seed_band_of(group) -> tuple[np.ndarray, np.ndarray]:
    band = seed_band([metric_curve(run, "eval_acc") for run in group.runs])
    return band.mean, band.spread


def test_a_band_is_clipped_to_its_range_but_never_past_its_mean():
    lower, upper = band_edges(np.array([0.1, 0.5, 1.2]), np.array([0.3, 0.2, 0.1]), "si")
    np.testing.assert_allclose(lower, [0.0, 0.3, 1.1])  # a mean above 1 keeps its own band
    np.testing.assert_allclose(upper, [0.4, 0.7, 1.2])
    lower, upper = band_edges(np.array([-2.0]), np.array([1.0]), "mu")  # mu is unbounded
    assert (lower[0], upper[0]) == (-3.0, -1.0)


def test_captions_say_what_the_band_is_and_over_how_many_seeds():
    three = group_by_seed(seeds_of("a", {}, [[0.1, 0.5]] * 3))
    (figure,) = render_figures(three)
    assert "Shaded: mean ± 2 SE over 3 seeds" in figure.caption
    mixed = group_by_seed(
        seeds_of("a", {}, [[0.1, 0.5]] * 3) + seeds_of("b", {"optim.lr": 0.01}, [[0.1, 0.5]])
    )
    captions = {figure.name: figure.caption for figure in render_figures(mixed)}
    assert "Shaded: mean ± 2 SE over 1-3 seeds per condition" in captions["accuracy"]
    assert "none for a condition of one seed" in captions["accuracy"]
    assert "Bars: mean ± 2 SE over 1-3 seeds" in captions["final_accuracy"]
    (single,) = render_figures(group_by_seed([record("a")]))
    assert single.caption.endswith("One seed per condition: no band.")


def test_a_figure_whose_data_no_run_has_is_left_out():
    one = render_figures(group_by_seed([record("a")]))
    assert [figure.name for figure in one] == ["accuracy"]
    two = render_figures(group_by_seed([record("a"), record("b", {"optim.lr": 0.01})]))
    assert [figure.name for figure in two] == ["accuracy", "final_accuracy"]


def analysed(name: str, identity: dict, seed: int, gated: bool) -> RunRecord:
    """A run with every analysis table, made by hand (columns as the analyses write them)."""
    steps, epochs = [0, 2, 8, 16], [0.0, 0.25, 1.0, 2.0]
    pairs = {"step": steps[1:], "epoch": epochs[1:]}  # pair probes: no row for the first
    grid = [(s, e, stage, c, f) for s, e in zip(steps, epochs, strict=True)
            for stage in ("layer1", "layer2") for c in ("selective", "random")
            for f in (0.0, 0.5, 1.0)]  # fmt: skip
    s, e, stage, c, f = (np.array(column) for column in zip(*grid, strict=True))
    whole = np.full(len(s), "all")
    first = f == 0  # one AUC row per snapshot, stage and condition
    by_layer = {"step": np.repeat(steps, 2), "epoch": np.repeat(epochs, 2), "layer": [0, 1] * 4,
                "head": [0] * 8}  # fmt: skip
    return record(
        name, identity, seed,
        selectivity=table(step=np.repeat(steps, 2), epoch=np.repeat(epochs, 2),
                          stage=["layer1", "all"] * 4, si=[0.1, 0.2, 0.3, 0.4] * 2),
        ablation=table(step=s, epoch=e, stage=stage, block=whole, condition=c, fraction=f,
                       top1_norm=1 - f * np.where(c == "selective", 0.9, 0.5)),
        ablation_auc=table(step=s[first], epoch=e[first], stage=stage[first],
                           block=whole[first], condition=c[first],
                           auc_top1=np.where(c[first] == "selective", 0.55, 0.75)),
        linearity={
            "linearized": table(**pairs, agreement=[0.9, 0.95, 1.0],
                                relative_error=[0.5, 0.2, 0.1], acc_linearized=[0.2, 0.4, 0.5]),
            "linear_classifier": table(step=steps, epoch=epochs, mu=[0.0, 0.2, 0.3, 0.1]),
            "relu_flips": table(**pairs, flip_fraction=[0.2, 0.1, 0.05]),
        },
        gates=table(**by_layer, gate=np.linspace(0.2, 0.9, 8)) if gated else None,
        nonlocality=table(**by_layer, nonlocality=np.linspace(1, 3, 8)),
        robustness={
            "summary": table(step=steps, epoch=epochs, clean_accuracy=[0.1, 0.3, 0.5, 0.6],
                             mean_corruption_accuracy=[0.1, 0.2, 0.4, 0.5]),
            "adversarial": table(step=steps, epoch=epochs, attack=["pgd"] * 4,
                                 norm=["linf"] * 4, epsilon=[8 / 255] * 4,
                                 accuracy=[0.1, 0.1, 0.2, 0.1]),
            "change": table(step=steps, epoch=epochs, stage=["layer4"] * 4,
                            participation_ratio=[5.0, 4.0, 3.0, 3.5]),
        },
    )  # fmt: skip


@pytest.mark.parametrize("style", ["screen", "paper"])
def test_every_figure_is_drawn_from_the_analysis_tables_of_two_conditions(style):
    groups = group_by_seed(
        [
            analysed("convit-a", {"model.name": "convit_ti"}, 0, gated=True),
            analysed("convit-b", {"model.name": "convit_ti"}, 1, gated=True),
            analysed("deit", {"model.name": "deit_ti"}, 0, gated=False),
        ]
    )
    figures = render_figures(groups, STYLES[style])
    assert [figure.name for figure in figures] == [spec.name for spec in FIGURES]
    for figure in figures:
        assert_valid_png(figure.png)
    page = render_page("t", "", groups, figures, [runs_table(groups)])
    assert len(embedded_pngs(page)) == len(FIGURES)
    for section in ("Class selectivity", "Ablation", "Linear regime", "Attention", "Robustness"):
        assert f"<h2>{section}</h2>" in page


def test_the_page_embeds_its_figures_and_configs_and_loads_nothing_from_elsewhere():
    groups = group_by_seed([record("a", seed=0), record("b", seed=1)])
    page = render_page("<title>", "", groups, render_figures(groups), [runs_table(groups)])
    for png in embedded_pngs(page):
        assert_valid_png(png)
    assert not re.search(r"(src|href)=\"(?!data:)", page), "a resource outside the page"
    assert page.count("<details>") == 2 and "seed: 1" in page
    assert "&lt;title&gt;" in page, "text is not escaped"
    assert "<td>0, 1</td>" in page, "the two seeds are not one row of the runs table"


def test_csv_columns_are_read_by_name_as_numbers_or_text(tmp_path):
    (tmp_path / "t.csv").write_text("step,stage,channel,si\n0,layer1,,0.5\n8,all,,nan\n")
    read = read_table(tmp_path / "t.csv")
    assert read["step"].tolist() == [0.0, 8.0] and read["stage"].tolist() == ["layer1", "all"]
    assert np.isnan(read["si"][1]) and np.isnan(read["channel"]).all()
    assert read_table(tmp_path / "absent.csv") is None


# --- inputs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([], "takes one of run=<dir>, runs=[<dir>,...] or sweep=<dir>; got none"),
        (["runs=[]"], "runs=[] is invalid"),
        (["run=/no/such/run"], "is not a run directory"),
        (["runs=[/no/such/run]"], "is not a run directory"),
        (["sweep=/no/such/sweep"], "no such directory"),
        (["run=/a", "runs=[/b]"], "got run and runs: set exactly one"),
        (["report.style=poster"], "report.style='poster' is invalid: choose screen or paper"),
    ],
)
def test_report_inputs_are_checked_before_any_work(overrides, message, tmp_path):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check(compose_point(["task=report", f"outputs={tmp_path}", *overrides]))


def test_a_sweep_reports_the_runs_its_record_names_that_have_started(tmp_path):
    runs = [tmp_path / name for name in ("a", "b")]
    for run in runs:
        run.mkdir()
        (run / "config.yaml").write_text("seed: 0\n")
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    points = [{"run": str(run), "overrides": []} for run in (*runs, tmp_path / "not-yet")]
    (sweep / "sweep.json").write_text(json.dumps({"points": points}))
    assert report_runs({"sweep": str(sweep)}) == runs
    assert report_folder({"sweep": str(sweep)}) == sweep.resolve() / "report"


def test_the_same_runs_in_any_order_find_the_same_report_folder(tmp_path):
    runs = [tmp_path / name for name in ("a", "b")]
    for run in runs:
        run.mkdir()
        (run / "config.yaml").write_text("seed: 0\n")
    outputs = str(tmp_path / "outputs")
    first = report_folder({"runs": [str(r) for r in runs], "outputs": outputs})
    again = report_folder({"runs": [str(r) for r in runs[::-1]], "outputs": outputs})
    assert first == again and first.parent == tmp_path / "outputs" / "reports"
    assert report_folder({"run": str(runs[0])}) == runs[0] / "report"
    assert report_folder({"run": str(runs[0]), "report": {"out": str(tmp_path / "r")}}) == (
        tmp_path / "r"
    )


def test_report_settings_leave_a_runs_identity_alone():
    name = run_name(compose_point([]))
    same = ["runs=[/a,/b]", "sweep=/s", "report.out=/r", "report.title=t"]
    assert run_name(compose_point(same)) == name


# --- end to end ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory) -> tuple[Path, list[Path]]:
    """(workdir, [seed 0 run, seed 1 run]) of one tiny config with sub-epoch snapshots."""
    workdir = tmp_path_factory.mktemp("report")
    args = [*TINY, "trainer.epochs=1", SNAPSHOTS, "trainer.progress=none"]
    runs = []
    for seed in (0, 1):
        (workdir / f"seed{seed}").mkdir()
        runs.append(finished_run([*args, f"seed={seed}"], workdir / f"seed{seed}"))
    return workdir, runs


@pytest.fixture(scope="module")
def two_seed_page(two_seeds) -> Path:
    workdir, runs = two_seeds
    result = run_cli(["task=report", f"runs=[{runs[0]},{runs[1]}]"], workdir)
    assert result.returncode == 0, result.stderr
    (page,) = (workdir / "outputs" / "reports").glob("*/index.html")
    assert f"report: {page}" in result.stdout
    return page


def test_report_of_one_run_writes_its_page_and_pngs_into_the_run(two_seeds):
    workdir, (run, _) = two_seeds
    result = run_cli(["task=report", f"run={run}", "report.title=seed zero"], workdir)
    assert result.returncode == 0, result.stderr
    folder = run / "report"
    page = (folder / "index.html").read_text()
    assert "<h1>seed zero</h1>" in page
    pngs = embedded_pngs(page)
    assert sorted(p.name for p in folder.glob("*.png")) == ["accuracy.png", "selectivity.png"]
    assert sorted(pngs) == sorted(p.read_bytes() for p in folder.glob("*.png"))
    for png in pngs:
        assert_valid_png(png)
    for pdf in ("accuracy.pdf", "selectivity.pdf"):  # each figure also as a vector file
        assert (folder / pdf).read_bytes().startswith(b"%PDF")


def pdf_page_size(data: bytes) -> tuple[float, float]:
    """A one-page PDF's width and height in points."""
    (box,) = re.findall(rb"/MediaBox \[\s*0 0 ([\d.]+) ([\d.]+)\s*\]", data)
    return float(box[0]), float(box[1])


def test_a_paper_style_report_draws_column_wide_figures_in_print_sizes(two_seeds, tmp_path):
    _, (run, _) = two_seeds
    out = tmp_path / "paper"
    build_report(compose_point(["task=report", f"run={run}", "report.style=paper",
                                f"report.out={out}"]))  # fmt: skip
    for name in ("accuracy", "selectivity"):
        width, _ = pdf_page_size((out / f"{name}.pdf").read_bytes())
        assert width == 3.5 * 72, f"{name}.pdf is {width / 72} in wide, not a 3.5 in column"
        height, png_width, _ = imread(out / f"{name}.png").shape
        assert png_width == 3.5 * STYLES["paper"].dpi
    screen = build_report(compose_point(["task=report", f"run={run}", f"report.out={tmp_path}"]))
    width, _ = pdf_page_size((screen.parent / "accuracy.pdf").read_bytes())
    assert width > 3.5 * 72 * 2  # three panels side by side on screen


def test_paper_figures_have_print_font_sizes():
    (axes, *_) = accuracy_curves(group_by_seed([record("a")]), STYLES["paper"]).axes
    ticks = {label.get_fontsize() for label in axes.xaxis.get_ticklabels()}
    sizes = {*ticks, axes.xaxis.label.get_fontsize(), axes.title.get_fontsize()}
    assert sizes <= {8, 9} and axes.figure.get_figwidth() == 3.5


def test_report_of_two_seeds_shows_them_as_one_condition(two_seed_page, two_seeds):
    page = two_seed_page.read_text()
    assert "<td>0, 1</td>" in page and page.count("<details>") == 2
    for png in embedded_pngs(page):
        assert_valid_png(png)
    assert (two_seed_page.parent / "selectivity.png").exists()


def test_a_report_over_hand_made_analysis_tables_adds_their_sections(two_seeds, tmp_path):
    _, (run, _) = two_seeds
    copy = shutil.copytree(run, tmp_path / "run", ignore=shutil.ignore_patterns("report"))
    (copy / "attention").mkdir()
    (copy / "attention" / "nonlocality.csv").write_text(
        "step,epoch,layer,head,nonlocality\n0,0,0,0,1.5\n0,0,0,1,2.5\n8,1,0,0,2.0\n8,1,0,1,2.0\n"
    )
    page_path = build_report(compose_point(["task=report", f"run={copy}"]))
    page = page_path.read_text()
    assert "<h2>Attention</h2>" in page and "<h2>Ablation</h2>" not in page
    assert (copy / "report" / "attention.png").exists()


def test_a_missing_run_is_one_line_and_writes_nothing(workdir):
    result = run_cli(["task=report", f"run={workdir / 'nothing'}"], workdir)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "is not a run directory" in result.stderr
    assert list(workdir.iterdir()) == []


# --- the page in a browser -----------------------------------------------------------------

# Appended to a copy of the page: once everything has loaded, record each image's decoded width.
MARK_IMAGES = """<script>
window.addEventListener("load", () => {
  document.body.dataset.imageWidths = Array.from(document.images, i => i.naturalWidth).join(",");
});
</script>"""


def chromium() -> str:
    """Chromium's path; skip without it, unless VESTIGE_REQUIRE_CHROMIUM=1 (CI) makes it a
    failure."""
    path = shutil.which("chromium")
    if path is not None:
        return path
    reason = "chromium is not installed (Debian: apt-get install chromium)"
    if os.environ.get("VESTIGE_REQUIRE_CHROMIUM") == "1":
        pytest.fail(f"{reason}, but VESTIGE_REQUIRE_CHROMIUM=1 requires it", pytrace=False)
    pytest.skip(reason)


def test_every_figure_of_the_page_loads_in_headless_chromium(two_seed_page, tmp_path):
    browser = chromium()
    page = two_seed_page.read_text()
    marked = tmp_path / "index.html"
    marked.write_text(page.replace("</body>", MARK_IMAGES + "\n</body>"))
    result = subprocess.run(
        [browser, "--headless", "--disable-gpu", "--no-sandbox",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", marked.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    widths = re.search(r'data-image-widths="([^"]*)"', result.stdout)
    assert widths, "the page's load event never ran in chromium"
    loaded = [int(w) for w in widths.group(1).split(",")]
    assert len(loaded) == len(embedded_pngs(page)) >= 2
    assert all(width > 0 for width in loaded), f"images that did not load: {loaded}"
