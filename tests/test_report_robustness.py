"""The report of analysis=robustness: tiny Fashion-MNIST runs of two conditions (two seeds of the
baseline, one of alpha = -20), analysed, then reported; the figures and the table show the numbers
of the analysis' CSVs, one line (or colour) per condition, and only where a run has them."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import FASHION_MNIST_ROOT, FASHION_MNIST_TINY, run_cli

from vestige.report.build import render_figures
from vestige.report.figures import (
    Attack,
    representation_change,
    robustness_over_training,
    selectivity_vs_robustness,
)
from vestige.report.grouping import Group, group_by_seed
from vestige.report.plotting import STYLES
from vestige.report.summaries import robustness_table
from vestige.report.tables import load_record
from vestige.tasks.compose import compose_point

pytestmark = pytest.mark.skipif(
    not FASHION_MNIST_ROOT.is_dir(), reason="needs Debian's dataset-fashion-mnist"
)
TRAINING = [
    *FASHION_MNIST_TINY,  # 10 iterations per epoch
    "checkpoint.snapshots=[0it,5it,every 1ep]",
    "regularizer=selectivity",
]
# condition -> (its setting, its seeds)
CONDITIONS = {
    "baseline": ("regularizer.alpha=0.0", (0, 1)),
    "low": ("regularizer.alpha=-20.0", (0,)),
}
ROBUSTNESS = [
    "analysis=robustness",
    "analysis.robustness.corruptions=[contrast]",
    "analysis.robustness.severities=[1,5]",
    "analysis.robustness.epsilons=[0.0,0.1]",
    "analysis.robustness.steps=2",
    "analysis.robustness.attack_images=24",
    "analysis.robustness.change=contrast",
    "analysis.robustness.change_images=16",
]
# a table cell: `0.2 ± 0.05 (epoch 0.5)`, no spread for one seed
CELL = r"([\d.]+)(?: ± [\d.e-]+)? \(epoch ([\d.]+)\)"
STEPS = [0, 5, 10]  # the snapshots of each run
STAGES = ["layer1", "layer2", "layer3", "layer4"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, list[Path]]:
    """Condition -> its runs (by seed), each trained and analysed with ROBUSTNESS."""
    folder = tmp_path_factory.mktemp("robustness-report")
    found: dict[str, list[Path]] = {}
    for name, (alpha, seeds) in CONDITIONS.items():
        for seed in seeds:
            run = folder / f"{name}{seed}"
            trained = run_cli([*TRAINING, alpha, f"seed={seed}", f"hydra.run.dir={run}"], folder)
            assert trained.returncode == 0, trained.stderr
            analysed = run_cli(["task=analyze", f"run={run}", *ROBUSTNESS], folder)
            assert analysed.returncode == 0, analysed.stderr
            found.setdefault(name, []).append(run)
    return found


def every_run(runs: dict[str, list[Path]]) -> list[Path]:
    return [run for name in CONDITIONS for run in runs[name]]


def groups_of(runs: dict[str, list[Path]], *analysis: str) -> list[Group]:
    """The runs as the report groups them, their tables those of the `analysis` settings."""
    paths = every_run(runs)
    cfg = compose_point(["task=report", f"runs=[{','.join(map(str, paths))}]", *analysis])
    return group_by_seed([load_record(path, cfg.analysis) for path in paths])


def rows(run: Path, table: str) -> list[dict[str, str]]:
    """A robustness CSV of the run, read here independently of the report."""
    (folder,) = run.glob("robustness-*")
    with open(folder / f"{table}.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def network_si(run: Path) -> dict[int, float]:
    """The network-mean SI of each snapshot (selectivity/summary.csv, stage `all`)."""
    with open(run / "selectivity" / "summary.csv", newline="") as handle:
        found = list(csv.DictReader(handle))
    return {int(r["step"]): float(r["si"]) for r in found if r["stage"] == "all"}


def seed_means(paths: list[Path], table: str, column: str, **where: str) -> list[float]:
    """The mean over the runs of a column at each snapshot, in step order."""
    per_run = [
        [float(r[column]) for r in rows(path, table) if all(r[k] == v for k, v in where.items())]
        for path in paths
    ]
    assert all(len(values) == len(STEPS) for values in per_run)
    return np.mean(per_run, axis=0).tolist()


def test_every_panel_over_training_has_one_line_per_condition_at_the_seeds_mean(runs):
    groups = groups_of(runs, *ROBUSTNESS)
    assert [g.name for g in groups] == ["baseline (alpha = 0)", "alpha = -20"]
    figure = robustness_over_training(groups, STYLES["screen"])
    titles = [axes.get_title() for axes in figure.axes]
    assert titles[0] == "clean accuracy" and titles[1].startswith("mean corruption accuracy")
    assert [t.replace("\n", " ") for t in titles[2:]] == ["FGSM, L∞ ε = 0.1", "PGD, L∞ ε = 0.1"]
    expected = {
        "clean": ("summary", "clean_accuracy", {}),
        "corrupted": ("summary", "mean_corruption_accuracy", {}),
        "fgsm": ("adversarial", "accuracy", {"attack": "fgsm", "epsilon": "0.1"}),
        "pgd": ("adversarial", "accuracy", {"attack": "pgd", "epsilon": "0.1"}),
    }
    for axes, (table, column, where) in zip(figure.axes, expected.values(), strict=True):
        assert len(axes.lines) == len(groups)
        for line, name in zip(axes.lines, CONDITIONS, strict=True):
            assert line.get_xdata().tolist() == [0.0, 0.5, 1.0]
            np.testing.assert_allclose(
                line.get_ydata(), seed_means(runs[name], table, column, **where)
            )
    assert len(figure.axes[0].collections) == 1, "a band only for the condition of two seeds"
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert legend == [g.name for g in groups]


def test_representation_change_has_a_panel_per_stage_and_a_line_per_condition(runs):
    groups = groups_of(runs, *ROBUSTNESS)
    figure = representation_change(groups, STYLES["paper"])
    assert [axes.get_title() for axes in figure.axes] == STAGES
    for axes, stage in zip(figure.axes, STAGES, strict=True):
        assert len(axes.lines) == len(groups)
        means = seed_means(runs["baseline"], "change", "participation_ratio", stage=stage)
        np.testing.assert_allclose(axes.lines[0].get_ydata(), means)


def test_selectivity_vs_robustness_has_a_point_per_snapshot_of_every_run(runs):
    groups = groups_of(runs, *ROBUSTNESS)
    figure = selectivity_vs_robustness(groups, STYLES["screen"])
    corrupted, attacked = figure.axes
    assert attacked.get_title() == "PGD, L∞ ε = 0.1"
    for axes, (table, column, where) in (
        (corrupted, ("summary", "mean_corruption_accuracy", {})),
        (attacked, ("adversarial", "accuracy", {"attack": "pgd", "epsilon": "0.1"})),
    ):
        assert len(axes.collections) == len(groups), "one colour per condition"
        for points, name in zip(axes.collections, CONDITIONS, strict=True):
            expected = [
                (network_si(run)[int(r["step"])], float(r[column]))
                for run in runs[name]
                for r in rows(run, table)
                if all(r[k] == v for k, v in where.items())
            ]
            assert len(expected) == len(runs[name]) * len(STEPS)
            np.testing.assert_allclose(points.get_offsets(), expected, rtol=1e-6)


def test_the_table_gives_first_peak_selectivity_and_last_snapshot_per_condition(runs):
    groups = groups_of(runs, *ROBUSTNESS)
    table = robustness_table(groups)
    quantities = [
        "network-mean SI", "clean accuracy", "mean corruption accuracy", "PGD, L∞ ε = 0.1"
    ]  # fmt: skip
    assert [row[:2] for row in table.rows] == [
        [g.name, quantity] for g in groups for quantity in quantities
    ]
    for group, name in zip(groups, CONDITIONS, strict=True):
        si = np.mean([[network_si(run)[step] for step in STEPS] for run in runs[name]], axis=0)
        peak = int(np.argmax(si))
        clean = seed_means(runs[name], "summary", "clean_accuracy")
        row = next(r for r in table.rows if r[:2] == [group.name, "clean accuracy"])
        for cell, at in zip(row[2:], (0, peak, len(STEPS) - 1), strict=True):
            number, epoch = re.fullmatch(CELL, cell).groups()
            assert number == f"{clean[at]:.4g}" and float(epoch) == [0.0, 0.5, 1.0][at]
        si_row = next(r for r in table.rows if r[:2] == [group.name, "network-mean SI"])
        assert si_row[3].startswith(f"{si[peak]:.4g}")
        assert ("±" in row[2]) == (len(runs[name]) > 1), "a spread only over several seeds"


def test_the_report_page_and_the_analysis_folder_show_the_robustness_figures(runs, tmp_path):
    paths = every_run(runs)
    out = tmp_path / "report"
    result = run_cli(
        ["task=report", f"runs=[{','.join(map(str, paths))}]", f"report.out={out}", *ROBUSTNESS],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    page = (out / "index.html").read_text()
    assert "<h2>Robustness</h2>" in page
    names = ("robustness", "representation_change", "selectivity_vs_robustness")
    for name in names:
        assert (out / f"{name}.png").read_bytes().startswith(b"\x89PNG")
        assert f'<figure id="{name}">' in page
    assert "Each point is one snapshot of one run" in page
    section = page.split("<h2>Robustness</h2>")[1].split("</section>")[0]
    assert "<th>peak SI snapshot</th>" in section
    assert section.count("<td>alpha = -20</td>") == 4, "a row per quantity of the condition"
    for run in paths:  # task=analyze drew the run's own figure into its folder
        (folder,) = run.glob("robustness-*")
        assert (folder / "robustness.png").read_bytes().startswith(b"\x89PNG")


def test_runs_without_results_of_these_settings_draw_no_robustness_figure(runs):
    """The defaults' folder (`robustness/`) holds nothing: the analysis ran with other settings."""
    groups = groups_of(runs)
    assert all(not run.robustness for g in groups for run in g.runs)
    drawn = [figure.name for figure in render_figures(groups)]
    assert "selectivity" in drawn and "accuracy" in drawn
    assert not {"robustness", "representation_change", "selectivity_vs_robustness"} & set(drawn)
    assert robustness_table(groups) is None


@pytest.mark.parametrize(
    ("attack", "title"),
    [
        (Attack("pgd", "linf", 8 / 255), "PGD, L∞ ε = 8/255"),
        (Attack("pgd", "linf", 0.0313725), "PGD, L∞ ε = 8/255"),  # as robustness CSVs round it
        (Attack("fgsm", "linf", 0.1), "FGSM, L∞ ε = 0.1"),
        (Attack("pgd", "l2", 0.5), "PGD, L2 ε = 0.5"),
        (Attack("pgd", "l2", 2 / 255), "PGD, L2 ε = 0.00784"),
    ],
)
def test_an_attack_is_titled_by_its_norm_and_radius(attack, title):
    assert attack.title == title
