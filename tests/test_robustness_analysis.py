"""analysis=robustness end to end on a tiny Fashion-MNIST run: what it stores, that it measures
the run's own evaluation (clean accuracy = the metrics' eval_acc), that its images do not depend
on the batch size, that a 0-step PGD is no attack, and its one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import FASHION_MNIST_ROOT, FASHION_MNIST_TINY, run_cli

pytestmark = pytest.mark.skipif(
    not FASHION_MNIST_ROOT.is_dir(), reason="needs Debian's dataset-fashion-mnist"
)
# 30 steps that leave the network well above chance (0.35-0.45 on the 60 images), so that an
# attack has correct answers to turn
TRAINING = [
    *FASHION_MNIST_TINY,
    "data.train_limit=960",
    "optim.lr=0.05",
    "checkpoint.snapshots=[0it,every 1ep]",
]
SMALL = [
    "analysis=robustness",
    "analysis.robustness.corruptions=[gaussian_noise,contrast]",
    "analysis.robustness.severities=[1,5]",
    "analysis.robustness.epsilons=[0.0,0.1]",
    "analysis.robustness.steps=3",
    "analysis.robustness.attack_images=24",
    "analysis.robustness.change_images=16",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("robustness")
    result = run_cli([*TRAINING, f"hydra.run.dir={folder / 'run'}"], folder)
    assert result.returncode == 0, result.stderr
    return folder / "run"


def analysed(trained: Path, folder: Path, *overrides: str) -> Path:
    """A copy of the trained run, analysed with `SMALL` and `overrides`."""
    run = folder / "run"
    shutil.copytree(trained, run)
    result = run_cli(["task=analyze", f"run={run}", *SMALL, *overrides], folder)
    assert result.returncode == 0, result.stderr
    return run


def records(folder: Path) -> dict[int, dict]:
    return {
        int(path.stem.split("_")[1]): json.loads(path.read_text())
        for path in sorted(folder.glob("step_*.json"))
    }


def test_every_snapshot_gets_its_accuracies_tables_and_changes(trained, tmp_path):
    run = analysed(trained, tmp_path)
    folders = sorted(path.name for path in run.glob("robustness*"))
    assert len(folders) == 1 and folders[0].startswith("robustness-"), folders
    folder = run / folders[0]
    found = records(folder)
    rows = (run / "metrics.jsonl").read_text().splitlines()
    metrics = {row["step"]: row for row in map(json.loads, rows)}
    assert sorted(found) == sorted(metrics) == [0, 30]
    for step, record in found.items():
        # the pixels went back through the run's own normalisation: its evaluation, image for image
        assert record["images"] == 60
        assert record["clean_accuracy"] == pytest.approx(metrics[step]["eval_acc"], abs=1e-9)
        assert set(record["corruption_accuracy"]) == {"gaussian_noise", "contrast"}
        assert all(len(row) == 2 for row in record["corruption_accuracy"].values())
        accuracies = [a for row in record["corruption_accuracy"].values() for a in row]
        assert record["mean_corruption_accuracy"] == pytest.approx(sum(accuracies) / 4)
        assert record["relative_corruption_error"] == pytest.approx(
            record["clean_accuracy"] - record["mean_corruption_accuracy"]
        )
        # epsilon 0 is no attack
        assert record["attack_images"] == 24
        for accuracy in record["adversarial_accuracy"].values():
            assert accuracy[0] == record["attack_clean_accuracy"]
        stages = record["representation_change"]
        assert list(stages) == ["layer1", "layer2", "layer3", "layer4"]
        for values in stages.values():
            assert 1 <= values["participation_ratio"] <= 16  # at most the 16 images' rank
            assert 1 <= values["components_90"] <= 16
    last = found[30]
    assert last["adversarial_accuracy"]["pgd"][1] < last["attack_clean_accuracy"]
    summary = (folder / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("step,epoch,clean_accuracy,mean_corruption_accuracy")
    assert "fgsm@0.1" in summary[0] and len(summary) == 3
    assert len((folder / "corruptions.csv").read_text().splitlines()) == 1 + 2 * 2 * 2
    assert len((folder / "adversarial.csv").read_text().splitlines()) == 1 + 2 * 2 * 2
    assert len((folder / "change.csv").read_text().splitlines()) == 1 + 2 * 4

    again = run_cli(["task=analyze", f"run={run}", *SMALL], tmp_path)
    assert again.returncode == 0, again.stderr
    assert "0 of 2 snapshots" in again.stdout


def test_the_numbers_do_not_depend_on_the_batch_size(trained, tmp_path):
    one = records(next(analysed(trained, tmp_path / "a", "analysis.batch_size=7").glob("rob*")))
    other = records(next(analysed(trained, tmp_path / "b", "analysis.batch_size=64").glob("rob*")))
    for step in one:
        a, b = one[step], other[step]
        for key in ("clean_accuracy", "corruption_accuracy", "adversarial_accuracy"):
            assert a[key] == b[key], key
        for stage, values in a["representation_change"].items():
            assert values["participation_ratio"] == pytest.approx(
                b["representation_change"][stage]["participation_ratio"], rel=1e-4
            )


def test_pgd_without_steps_or_random_start_is_no_attack(trained, tmp_path):
    no_steps = ["analysis.robustness.steps=0", "analysis.robustness.random_start=false"]
    run = analysed(trained, tmp_path, "analysis.robustness.attacks=[pgd]", *no_steps)
    for record in records(next(run.glob("robustness*"))).values():
        assert record["adversarial_accuracy"]["pgd"] == [record["attack_clean_accuracy"]] * 2


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("analysis.robustness.corruptions=[frostbite]", "'frostbite'"),
        ("analysis.robustness.severities=[6]", "analysis.robustness.severities"),
        ("analysis.robustness.attacks=[cw]", "analysis.robustness.attacks"),
        ("analysis.robustness.norm=l1", "'l1'"),
        ("analysis.robustness.change=blur", "'blur'"),
        ("analysis.robustness.change_stages=[layer9]", "'layer9'"),
    ],
)
def test_bad_settings_are_one_line_before_any_work(trained, tmp_path, override, words):
    result = run_cli(["task=analyze", f"run={trained}", "analysis=robustness", override], tmp_path)
    assert result.returncode != 0
    assert words in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not list(trained.glob("robustness*"))
