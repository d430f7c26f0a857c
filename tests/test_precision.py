"""Selectivity is measured in fp32 whatever the training precision (precision.py): the
bf16 autocast path, forced on the CPU, gives the SI of an fp32 measurement of the same snapshot;
asked for explicitly, bf16 selectivity is stored apart, and it is not the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, run_cli
from torch.utils.data import DataLoader

import vestige
from vestige.config import SelectivityConfig
from vestige.data import build_datasets
from vestige.selectivity.index import measure_selectivity
from vestige.selectivity.units import measured_layers

CPU = torch.device("cpu")
BF16_TRAINING = [*TINY, "trainer.precision=bf16", "checkpoint.snapshots=[0it,2it,every 1ep]"]


def fp32_selectivity(run_dir: Path) -> dict[int, np.ndarray]:
    """Each snapshot's per-unit SI measured again, in fp32, from its saved weights."""
    run = vestige.load_run(run_dir)
    loader = DataLoader(build_datasets(run.config.data, 0).eval, 64)
    values = {}
    for snapshot in run.snapshots:
        model = run.load_model(snapshot)
        layers = measured_layers(model)
        result = measure_selectivity(model, loader, layers, 10, CPU, SelectivityConfig())
        values[snapshot.step] = result.unit_table()["si"]
    return values


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("precision")
    dirs = {}
    for precision in ("fp32", "bf16"):
        target = folder / precision
        args = [*BF16_TRAINING, f"selectivity.precision={precision}", f"hydra.run.dir={target}"]
        result = run_cli(args, folder)
        assert result.returncode == 0, result.stderr
        dirs[precision] = target
    return dirs


def test_selectivity_of_a_bf16_training_equals_an_fp32_measurement(runs):
    stored = vestige.load_run(runs["fp32"]).selectivity()
    for step, expected in fp32_selectivity(runs["fp32"]).items():
        np.testing.assert_allclose(stored["si"][stored["step"] == step], expected, atol=1e-6)


def test_bf16_selectivity_is_stored_apart_and_moves_per_unit_values(runs):
    run = runs["bf16"]
    assert (run / "selectivity-bf16" / "summary.csv").is_file()
    assert not (run / "selectivity").exists()
    stored = vestige.load_run(run).selectivity(precision="bf16")
    differences = [
        np.abs(stored["si"][stored["step"] == step] - expected).max()
        for step, expected in fp32_selectivity(run).items()
    ]
    assert max(differences) > 1e-4


def test_an_unknown_selectivity_precision_is_one_line(workdir):
    result = run_cli(["selectivity.precision=fp16"], workdir)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: selectivity.precision='fp16' is invalid: choose fp32 or bf16"
    ]
