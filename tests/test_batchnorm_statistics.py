"""`analysis.bn_stats=recompute`: BatchNorm statistics re-estimated on training images, equal to
a hand re-estimate, on a copy (the snapshot stays as it is), measured and stored apart from the
snapshots' own statistics, the same on two DDP ranks as in one process (analysis/batchnorm.py)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, run_cli
from torch import nn
from torch.utils.data import DataLoader

import vestige
from vestige.analysis.batchnorm import estimation_batches, recompute_batchnorm_statistics
from vestige.config import SelectivityConfig
from vestige.data import build_datasets, unaugmented_training_split
from vestige.selectivity.index import measure_selectivity
from vestige.selectivity.units import measured_layers

CPU = torch.device("cpu")
SNAPSHOTS = "checkpoint.snapshots=[0it,3it,every 1ep]"


def two_norm_network() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.BatchNorm2d(5)
    )


def hand_re_estimate(net: nn.Sequential, batches: list[torch.Tensor]) -> list[tuple]:
    """Mean and unbiased variance of each BatchNorm input over every image and position, the
    first layer normalising each batch with that batch's own statistics, as in training."""
    first, second = [], []
    for x in batches:
        h = net[0](x)
        first.append(h)
        g = F.relu(F.batch_norm(h, None, None, net[1].weight, net[1].bias, training=True))
        second.append(net[3](g))
    stats = []
    for inputs in (first, second):
        values = torch.cat(inputs).transpose(0, 1).flatten(1).double()
        stats.append((values.mean(1), values.var(1)))
    return stats


def test_recomputed_statistics_equal_a_hand_re_estimate_and_leave_the_network_alone():
    net = two_norm_network()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randn(n, 3, 8, 8, generator=generator) * 3 + 1 for n in (16, 16, 5)]
    recomputed = recompute_batchnorm_statistics(net, [(x, None) for x in batches], CPU)
    with torch.no_grad():
        expected = hand_re_estimate(net, batches)
    for norm, (mean, var) in zip((recomputed[1], recomputed[4]), expected, strict=True):
        torch.testing.assert_close(norm.running_mean.double(), mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(norm.running_var.double(), var, rtol=1e-5, atol=1e-6)
    assert not recomputed.training
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bn")
    result = run_cli([*TINY, SNAPSHOTS, f"hydra.run.dir={folder / 'run'}"], folder)
    assert result.returncode == 0, result.stderr
    return folder / "run"


def test_recomputed_selectivity_is_stored_apart_and_snapshots_stay_untouched(run):
    snapshots = sorted((run / "checkpoints" / "snapshots").iterdir())
    hashes = [sha256(path) for path in snapshots]
    args = ["task=analyze", f"run={run}", "analysis=selectivity", "analysis.bn_stats=recompute"]
    result = run_cli([*args, "analysis.bn_images=100"], run)
    assert result.returncode == 0, result.stderr
    assert [sha256(path) for path in snapshots] == hashes
    loaded = vestige.load_run(run)
    stored, recomputed = loaded.selectivity(), loaded.selectivity(bn_stats="recompute100")
    assert np.array_equal(stored["step"], recomputed["step"])
    assert not np.allclose(stored["si"], recomputed["si"], atol=1e-3)
    # the stored values are those of the snapshot with hand-recomputed statistics
    snapshot = loaded.snapshots[1]
    train = unaugmented_training_split(loaded.config.data)
    batches = estimation_batches(train, 100, loaded.config.trainer.batch_size)
    model = recompute_batchnorm_statistics(loaded.load_model(snapshot), batches, CPU)
    eval_images = build_datasets(loaded.config.data, 0).eval
    loader = DataLoader(eval_images, 64)
    settings = SelectivityConfig()
    result = measure_selectivity(model, loader, measured_layers(model), 10, CPU, settings)
    at_step = recomputed["step"] == snapshot.step
    np.testing.assert_allclose(recomputed["si"][at_step], result.unit_table()["si"], atol=1e-6)


def test_recomputed_ablation_and_linearity_go_to_their_own_folders(run):
    common = ["task=analyze", f"run={run}", "analysis.bn_stats=recompute", "analysis.bn_images=100"]
    ablation = [
        "analysis=ablation",
        "analysis.snapshots=[3it]",
        "analysis.ablation.stages=[layer1]",
        "analysis.ablation.k_fractions=[0,1]",
        "analysis.ablation.random_draws=1",
    ]
    linearity = ["analysis=linearity", "analysis.linearity.probes=[relu_flips]"]
    for args in (ablation, linearity):
        result = run_cli([*common, *args], run)
        assert result.returncode == 0, result.stderr
    assert (run / "linearity-recompute100" / "relu_flips.csv").is_file()
    assert not (run / "linearity").exists()
    folders = [p for p in run.iterdir() if p.name.startswith("ablation-")]
    assert len(folders) == 1 and (folders[0] / "auc.csv").is_file()
    assert '"bn_stats": "recompute100"' in (folders[0] / "settings.json").read_text()


def test_bad_bn_settings_are_one_line(run):
    for setting, message in (
        ("analysis.bn_stats=rolling", "analysis.bn_stats='rolling' is invalid: choose running"),
        ("analysis.bn_images=0", "analysis.bn_images=0 is invalid: use a positive number"),
    ):
        result = run_cli(["task=analyze", f"run={run}", "analysis=selectivity", setting], run)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {message}")


WORKER = Path(__file__).with_name("ddp_batchnorm_worker.py")


@pytest.mark.integration
def test_two_ranks_re_estimate_the_statistics_of_one_process(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    result = subprocess.run(
        [*command, "--nproc_per_node=2", str(WORKER), str(tmp_path)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    single = subprocess.run(
        [sys.executable, str(WORKER), str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert single.returncode == 0, single.stderr[-3000:]
    one = torch.load(tmp_path / "one_process.pt")
    for rank in (0, 1):
        ranked = torch.load(tmp_path / f"rank{rank}.pt")
        assert ranked.keys() == one.keys()
        for key in one:
            torch.testing.assert_close(ranked[key], one[key], rtol=1e-6, atol=1e-7)
