"""Subsets keep every class: limits spread over the classes, fractions per class, and every run
records what it saw (data/subsets.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from PIL import Image
from torch.utils.data import Dataset

from vestige.config import DataConfig
from vestige.data import build_datasets
from vestige.data.subsets import class_quotas, fraction_per_class, limit_per_class


class Labels(Dataset):
    """Items are their own index; only `labels` matters to the subsets."""

    def __init__(self, labels: list[int]) -> None:
        self.labels = torch.tensor(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[int, int]:
        return index, int(self.labels[index])


def sorted_by_class(*counts: int) -> Labels:
    """A dataset stored class after class, as ImageFolder and CIFAR-style files are."""
    return Labels([c for c, n in enumerate(counts) for _ in range(n)])


def test_quotas_are_equal_where_the_classes_allow_and_add_up_to_the_limit():
    assert class_quotas([10, 10, 10], 9, seed=0) == [3, 3, 3]
    assert class_quotas([1, 5, 9], 9, seed=0) == [1, 4, 4]  # the small class gives its share
    quotas = class_quotas([10, 10, 10, 10], 6, seed=0)
    assert sum(quotas) == 6 and sorted(quotas) == [1, 1, 2, 2]


def test_the_leftover_images_go_to_classes_drawn_by_the_seed():
    drawn = {tuple(class_quotas([5] * 10, 13, seed)) for seed in range(20)}
    assert len(drawn) > 1
    assert class_quotas([5] * 10, 13, seed=3) == class_quotas([5] * 10, 13, seed=3)


def test_a_limit_on_a_class_sorted_dataset_keeps_every_class():
    dataset = sorted_by_class(100, 100, 100, 100)
    subset = limit_per_class(dataset, 40, seed=0)
    assert torch.bincount(subset.labels).tolist() == [10, 10, 10, 10]
    kept = [subset[i][0] for i in range(len(subset))]
    assert kept == sorted(kept) and len(set(kept)) == 40
    assert [subset[i][1] for i in range(len(subset))] == subset.labels.tolist()


def test_a_limit_draws_other_images_with_another_seed_and_the_same_with_the_same():
    dataset = sorted_by_class(50, 50)
    assert limit_per_class(dataset, 10, 0).indices == limit_per_class(dataset, 10, 0).indices
    assert limit_per_class(dataset, 10, 0).indices != limit_per_class(dataset, 10, 1).indices


def test_a_fraction_keeps_the_first_images_of_each_class_as_the_convit_paper_did():
    dataset = sorted_by_class(10, 7, 20)
    subset = fraction_per_class(dataset, 0.3)
    assert subset.indices == [0, 1, 2, 10, 11, 17, 18, 19, 20, 21, 22]  # floor 3, 2, 6
    assert len(fraction_per_class(sorted_by_class(100), 0.29)) == 29


def test_fraction_applies_to_the_training_split_only():
    counts = build_datasets(DataConfig(fraction=0.5), seed=0).class_counts()
    full_counts = build_datasets(DataConfig(), seed=0).class_counts()
    assert counts["train_class_counts"] == [n // 2 for n in full_counts["train_class_counts"]]
    assert counts["eval_class_counts"] == full_counts["eval_class_counts"]


def write_sorted_image_folder(root: Path, classes: int = 3) -> None:
    """train/: 8 images a class; val/: 4 a class; 12 px, a grey level per class."""
    for split, count in (("train", 8), ("val", 4)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (12, 12), (40 * c + i,) * 3).save(folder / f"{i}.png")


def test_a_run_on_a_class_sorted_folder_with_limits_sees_and_records_every_class(tmp_path):
    write_sorted_image_folder(tmp_path / "data")
    args = [
        "data=image_folder",
        f"data.root={tmp_path / 'data'}",
        "data.image_size=8",
        "data.augment=false",
        "data.num_workers=0",
        "data.train_limit=6",
        "data.eval_limit=3",
        "model.width=0.125",
        "trainer.batch_size=3",
        "trainer.epochs=1",
        "selectivity.enabled=false",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr
    dataset = json.loads((tmp_path / "run" / "run.json").read_text())["dataset"]
    assert dataset["train_class_counts"] == [2, 2, 2]
    assert dataset["eval_class_counts"] == [1, 1, 1]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.fraction=0"], "data.fraction=0.0 is invalid: use a fraction of every class"),
        (
            ["data.fraction=0.5", "data.train_limit=100"],
            "data.fraction=0.5 is invalid: set data.fraction or data.train_limit, not both",
        ),
    ],
)
def test_subset_mistakes_are_one_line(overrides, message, workdir):
    result = run_cli(overrides, workdir)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}")
    assert not (workdir / "outputs").exists()
