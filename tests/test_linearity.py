"""analysis=linearity: the linearised network, the performance correlation with a linear
classifier, and ReLU pattern stability (docs/science.md §5), each on planted
structure, and the analysis end to end."""

from __future__ import annotations

import copy
import csv
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, finished_run, run_cli
from torch import nn

import vestige
from vestige.analysis.linearity.linear_classifier import (
    ClassifierSettings,
    load_cached,
    save_cached,
)
from vestige.analysis.linearity.linearized import linear_term, linearized_logits, weight_step
from vestige.analysis.linearity.mutual_information import performance_correlation
from vestige.analysis.linearity.probes import ReluFlipTally, first_images, measure_linearity
from vestige.config import ResNetConfig
from vestige.errors import ConfigError
from vestige.models import build_model
from vestige.preflight import preflight
from vestige.selectivity.units import UnitLayer, measured_layers

CPU = torch.device("cpu")


def tiny_resnet(seed: int, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A small ResNet-18 in eval mode whose BatchNorm statistics are not the init's 0 and 1,
    so that expanding them matters."""
    torch.manual_seed(seed)
    model = build_model(ResNetConfig(width=0.125), 10, 3, 16).to(dtype).eval()
    for norm in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        norm.running_mean.normal_(0, 0.3)
        norm.running_var.uniform_(0.5, 2.0)
    return model


def moved(model: nn.Module, step: dict[str, torch.Tensor], scale: float) -> nn.Module:
    """`model` with `scale` times `step` added to the named tensors."""
    state = model.state_dict()
    out = copy.deepcopy(model)
    out.load_state_dict({k: v + scale * step[k] if k in step else v for k, v in state.items()})
    return out


def images(n: int = 6, seed: int = 1, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("buffers", ["expand", "base"])
def test_linearised_network_is_exactly_the_network_for_a_zero_step(buffers):
    model, x = tiny_resnet(0), images()
    step = weight_step(model, copy.deepcopy(model), buffers)
    assert torch.equal(linearized_logits(model, step, x), model(x).detach())


@pytest.mark.parametrize("buffers", ["expand", "base"])
def test_linear_term_matches_a_central_finite_difference(buffers):
    base = tiny_resnet(0, torch.float64)
    step = weight_step(base, tiny_resnet(1, torch.float64), buffers)
    assert any("running_var" in name for name in step) == (buffers == "expand")
    x, eps = images(dtype=torch.float64), 1e-6
    with torch.no_grad():
        difference = (moved(base, step, eps)(x) - moved(base, step, -eps)(x)) / (2 * eps)
    jvp = linear_term(base, step, x)
    assert (jvp - difference).norm() / difference.norm() < 1e-6


def test_network_linear_in_its_weights_is_its_own_linearisation_for_any_step():
    torch.manual_seed(0)
    base, target = (nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 10)) for _ in range(2))
    x, y = images(64), torch.randint(0, 10, (64,))
    result = measure_linearity(target, base, [(x, y)], CPU, ["linearized"], [])["linearized"]
    assert result["agreement"] == 1.0
    assert result["relative_error"] < 1e-5
    assert result["relative_change"] > 0.5  # a large step, not a small one
    assert result["acc_linearized"] == result["acc"]


def test_a_step_of_the_final_layer_alone_is_followed_exactly_by_a_deep_network():
    base = tiny_resnet(0)
    target = copy.deepcopy(base)
    nn.init.normal_(target.fc.weight)
    x, y = images(32), torch.randint(0, 10, (32,))
    result = measure_linearity(target, base, [(x, y)], CPU, ["linearized"], [])["linearized"]
    assert result["agreement"] == 1.0
    assert result["relative_error"] < 1e-5


def test_a_large_step_of_a_deep_network_is_not_linear():
    x, y = images(32), torch.randint(0, 10, (32,))
    result = measure_linearity(tiny_resnet(1), tiny_resnet(0), [(x, y)], CPU, ["linearized"], [])
    assert result["linearized"]["relative_error"] > 0.1


def test_mu_is_zero_for_predictions_independent_of_each_other_and_the_labels():
    grid = np.array(list(itertools.product(range(3), repeat=3)))  # every (f, l, y) once
    f, lin, y = grid.T
    correlation = performance_correlation(f, lin, y)
    assert correlation.mu == pytest.approx(0, abs=1e-12)
    assert correlation.i_fl == pytest.approx(0, abs=1e-12)


def test_mu_equals_the_networks_information_about_the_labels_when_the_linear_model_agrees():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 400)
    f = np.where(rng.random(400) < 0.6, y, rng.integers(0, 4, 400))  # right 60% of the time
    correlation = performance_correlation(f, f.copy(), y)
    assert correlation.mu == pytest.approx(correlation.i_fy, abs=1e-12)
    assert 0 < correlation.mu < 2


def test_mu_of_two_perfect_classifiers_is_the_label_entropy_in_bits():
    y = np.repeat(np.arange(4), 5)
    assert performance_correlation(y, y, y).mu == pytest.approx(math.log2(4))


def test_no_relu_state_flips_between_identical_snapshots():
    model = tiny_resnet(0)
    x, y = images(), torch.zeros(6, dtype=torch.long)
    result = measure_linearity(
        model, copy.deepcopy(model), [(x, y)], CPU, ["relu_flips"], measured_layers(model)
    )["relu_flips"]
    assert result == {
        "flip_fraction": 0.0,
        **{f"flip_fraction/layer{i}": 0.0 for i in (1, 2, 3, 4)},
    }


def test_flip_fraction_counts_each_state_once_per_stage_and_overall():
    layers = [UnitLayer("a", "early", 0, 2, "a"), UnitLayer("b", "late", 0, 1, "b")]
    tally = ReluFlipTally(layers, CPU)
    before = {"a": torch.zeros(2, 2, 2, dtype=torch.bool), "b": torch.zeros(4, dtype=torch.bool)}
    after = {"a": before["a"].clone(), "b": torch.tensor([True, True, True, False])}
    after["a"][0, 1, 0] = True  # 1 of 8 early states flips, 3 of 4 late ones
    tally.add(after, before)
    assert tally.result() == {
        "flip_fraction": 4 / 12,
        "flip_fraction/early": 1 / 8,
        "flip_fraction/late": 3 / 4,
    }


def test_first_images_cuts_the_batches_to_a_fixed_set():
    batches = [(torch.arange(4), torch.arange(4)), (torch.arange(4, 8), torch.arange(4, 8))]
    assert [len(x) for x, _ in first_images(batches, 6)] == [4, 2]
    assert [len(x) for x, _ in first_images(batches, None)] == [4, 4]


def test_cached_classifier_is_used_only_with_the_settings_it_was_trained_with(tmp_path):
    settings = ClassifierSettings(10, 1e-3, 0.0, 256, None, seed=7)
    save_cached(tmp_path / "c.pt", nn.Linear(12, 3), settings)
    assert load_cached(tmp_path / "c.pt", settings, CPU).weight.shape == (3, 12)
    other = ClassifierSettings(20, 1e-3, 0.0, 256, None, seed=7)
    assert load_cached(tmp_path / "c.pt", other, CPU) is None


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """TINY: 8 iterations per epoch, 2 epochs; snapshots at steps 0, 4, 8, 16."""
    snapshots = "checkpoint.snapshots=[0it,4it,every 1ep]"
    return finished_run([*TINY, snapshots], tmp_path_factory.mktemp("linearity"))


def analyze(run: Path, *overrides: str):
    result = run_cli(["task=analyze", f"run={run}", "analysis=linearity", *overrides], run)
    assert result.returncode == 0, result.stderr
    return result


def table(run: Path, name: str) -> list[dict[str, str]]:
    with open(run / "linearity" / f"{name}.csv") as handle:
        return list(csv.DictReader(handle))


def test_linearity_analysis_writes_one_row_per_snapshot_pair_and_resumes(run):
    first = analyze(run)
    assert "4 of 4 snapshots" in first.stdout
    assert "training the linear classifier on 256 images" in first.stdout
    eval_acc = {row["step"]: row["eval_acc"] for row in vestige.load_run(run).metrics}

    linearized = table(run, "linearized")
    assert [(int(r["step"]), int(r["base_step"])) for r in linearized] == [(4, 0), (8, 4), (16, 8)]
    for row in linearized:
        assert 0 <= float(row["agreement"]) <= 1 and float(row["relative_error"]) > 0
        assert float(row["acc"]) == pytest.approx(eval_acc[int(row["step"])], abs=1e-6)
        assert float(row["acc_base"]) == pytest.approx(eval_acc[int(row["base_step"])], abs=1e-6)

    correlation = table(run, "linear_classifier")
    assert [int(r["step"]) for r in correlation] == [0, 4, 8, 16]
    for row in correlation:
        assert int(row["images"]) == 64
        assert float(row["acc"]) == pytest.approx(eval_acc[int(row["step"])], abs=1e-6)
        assert float(row["acc_linear"]) > 0.5  # the synthetic classes are linearly separable
        # mu = I(F;Y) - I(F;Y|L): never above the network's information about the labels
        assert float(row["mu"]) <= float(row["i_fy"]) + 1e-5

    flips = table(run, "relu_flips")
    assert [int(r["step"]) for r in flips] == [4, 8, 16]
    assert all(0 < float(r["flip_fraction"]) < 1 for r in flips)
    assert set(flips[0]) >= {f"flip_fraction/layer{i}" for i in (1, 2, 3, 4)}

    again = analyze(run)
    assert "0 of 4 snapshots" in again.stdout
    assert "training the linear classifier" not in again.stdout


def test_a_fixed_base_redoes_only_the_pairs_it_changes(run):
    analyze(run)
    result = analyze(run, "analysis.linearity.base=0it")
    assert "2 of 4 snapshots" in result.stdout  # step 4 was paired with step 0 already
    rows = table(run, "linearized")
    assert [(int(r["step"]), int(r["base_step"])) for r in rows] == [(4, 0), (8, 0), (16, 0)]


def test_bad_linearity_setting_is_one_line_naming_it(tmp_path):
    (tmp_path / "config.yaml").touch()
    with pytest.raises(ConfigError) as caught:
        preflight(
            [
                "task=analyze",
                f"run={tmp_path}",
                "analysis=linearity",
                "analysis.linearity.probes=[linearised]",
            ]
        )
    assert str(caught.value) == (
        "analysis.linearity.probes=['linearised'] is invalid: choose one or more of "
        "linearized, linear_classifier, relu_flips"
    )
