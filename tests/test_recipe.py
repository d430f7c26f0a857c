"""The DeiT/ConViT recipe preset: its augmentations run end to end and its mistakes are caught."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from vestige.data.transforms import batch_mixing
from vestige.errors import ConfigError
from vestige.preflight import preflight

FASHION = Path("/usr/share/datasets/fashion-mnist")
TINY_DEIT = [
    "model=deit_ti_small",
    "model.depth=2",
    "model.embed_dim=32",
    "model.num_heads=2",
    "trainer.batch_size=32",
    "trainer.epochs=1",
    "trainer.eval_batch_size=64",
]


def test_mixing_gives_soft_targets_that_sum_to_one_and_keep_the_batch():
    torch.manual_seed(0)
    mixing = batch_mixing(0.8, 1.0, num_classes=10)
    images, labels = torch.randn(8, 3, 16, 16), torch.arange(8)
    mixed, soft = mixing(images, labels)
    assert mixed.shape == images.shape and soft.shape == (8, 10)
    torch.testing.assert_close(soft.sum(1), torch.ones(8))
    assert not torch.equal(mixed, images)
    assert batch_mixing(0.0, 0.0, 10) is None


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["data.randaugment=true"], "data.augment"),
        (["data.augment=true", "data.randaugment=true"], "data.randaugment"),
        (["data.mixup=-1"], "data.mixup"),
    ],
)
def test_augmentation_mistakes_are_one_line(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        preflight(overrides)


@pytest.mark.integration
@pytest.mark.skipif(not FASHION.is_dir(), reason="needs the Debian package dataset-fashion-mnist")
def test_the_recipe_trains_deit_on_fashion_mnist(workdir):
    args = [
        "experiment=deit_recipe",
        *TINY_DEIT,
        "data=fashion_mnist",
        "data.train_limit=128",
        "data.eval_limit=64",
        "sched.warmup=2it",
    ]
    result = run_cli(args, workdir)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (workdir / "outputs" / "runs").iterdir()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 4 and math.isfinite(rows[-1]["train_loss"])
    config = (run_dir / "config.yaml").read_text()
    assert "mixup: 0.8" in config and "randaugment: true" in config
