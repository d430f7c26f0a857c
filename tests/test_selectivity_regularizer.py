"""Specification of the differentiable selectivity R of a mini-batch (docs/science.md §3)."""

from __future__ import annotations

import pytest
import torch

import vestige.selectivity.penalty as regularizer
from vestige.config import RegularizerConfig
from vestige.errors import ConfigError
from vestige.selectivity.index import ClassConditionalStats, SelectivityResult, selectivity_index
from vestige.selectivity.penalty import regularized_layers, selectivity_penalty
from vestige.selectivity.units import UnitLayer

LAYERS = [
    UnitLayer("layer1.0", "layer1", 0, 3, module="layer1.0"),
    UnitLayer("layer1.1", "layer1", 1, 3, module="layer1.1"),
    UnitLayer("layer2.0", "layer2", 0, 5, module="layer2.0"),
    UnitLayer("layer3.0", "layer3", 0, 2, module="layer3.0"),
]
STAGES = ["layer1", "layer2", "layer3"]
EPS = RegularizerConfig().eps


def penalty_of(acts, targets, layers, num_classes, stages=None, sync=False) -> torch.Tensor:
    """R with the config's eps; stages None: every stage but the last."""
    return selectivity_penalty(acts, targets, layers, num_classes, stages, EPS, sync)


def batch(size: int = 12, num_classes: int = 4, seed: int = 0) -> tuple[dict, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    acts = {
        layer.name: torch.rand(size, layer.channels, generator=generator, dtype=torch.float64)
        for layer in LAYERS
    }
    return acts, torch.arange(size) % num_classes


def test_penalty_passes_gradcheck_in_float64_with_absent_classes():
    acts, targets = batch(size=8)
    inputs = tuple(a.requires_grad_() for a in acts.values())

    def penalty(*tensors: torch.Tensor) -> torch.Tensor:
        named = dict(zip(acts, tensors, strict=True))
        return penalty_of(named, targets, LAYERS, 6, stages=STAGES)

    assert torch.autograd.gradcheck(penalty, inputs)


def test_penalty_equals_mean_selectivity_of_the_index_module_when_all_classes_are_present():
    acts, targets = batch()
    stats = ClassConditionalStats(4)
    stats.update(acts, targets)
    expected = SelectivityResult.from_stats(stats, LAYERS, EPS).summary()["si/mean"]
    penalty = penalty_of(acts, targets, LAYERS, 4, stages=STAGES)
    assert penalty.item() == pytest.approx(expected, rel=1e-12)


def test_penalty_uses_only_the_classes_present_in_the_batch():
    acts, _ = batch(size=6)
    targets = torch.tensor([0, 3, 3, 7, 0, 3])
    layer = LAYERS[:1]
    a = acts["layer1.0"]
    means = torch.stack([a[targets == c].mean(dim=0) for c in (0, 3, 7)], dim=1)
    expected = selectivity_index(means, EPS).mean()
    for num_classes in (8, 100):
        penalty = penalty_of(acts, targets, layer, num_classes, stages=["layer1"])
        assert penalty.item() == pytest.approx(expected.item(), rel=1e-12)


def test_penalty_is_zero_for_a_batch_of_a_single_class():
    acts, _ = batch(size=4)
    assert penalty_of(acts, torch.zeros(4, dtype=torch.long), LAYERS, 4).item() == 0.0


def test_penalty_weighs_stages_equally_whatever_their_number_of_blocks():
    acts, targets = batch()
    per_layer = {
        name: penalty_of(acts, targets, [layer], 4, stages=[layer.stage]).item()
        for name, layer in zip(acts, LAYERS, strict=True)
    }
    stage1 = (per_layer["layer1.0"] + per_layer["layer1.1"]) / 2
    penalty = penalty_of(acts, targets, LAYERS, 4, stages=["layer1", "layer2"])
    assert penalty.item() == pytest.approx((stage1 + per_layer["layer2.0"]) / 2, rel=1e-12)


def test_default_stages_are_all_but_the_last():
    assert [layer.name for layer in regularized_layers(LAYERS)] == [
        "layer1.0",
        "layer1.1",
        "layer2.0",
    ]
    acts, targets = batch()
    default = penalty_of(acts, targets, LAYERS, 4)
    explicit = penalty_of(acts, targets, LAYERS, 4, stages=["layer1", "layer2"])
    assert default.item() == explicit.item()


def test_stage_selection_ignores_the_other_stages():
    acts, targets = batch()
    only_layer3 = penalty_of(acts, targets, LAYERS, 4, stages=["layer3"])
    acts["layer1.0"] = torch.zeros_like(acts["layer1.0"])
    assert penalty_of(acts, targets, LAYERS, 4, stages=["layer3"]) == only_layer3


def test_unknown_or_empty_stage_selections_are_refused():
    with pytest.raises(ConfigError, match="layer9"):
        regularized_layers(LAYERS, ["layer9"])
    with pytest.raises(ConfigError, match="non-empty"):
        regularized_layers(LAYERS, [])


def test_sync_in_a_single_process_changes_nothing():
    acts, targets = batch()
    leaves = {name: a.requires_grad_() for name, a in acts.items()}
    local = penalty_of(leaves, targets, LAYERS, 4, stages=STAGES)
    synced = penalty_of(leaves, targets, LAYERS, 4, stages=STAGES, sync=True)
    assert synced.item() == local.item()
    local_grads = torch.autograd.grad(local, list(leaves.values()))
    synced_grads = torch.autograd.grad(synced, list(leaves.values()))
    for lg, sg in zip(local_grads, synced_grads, strict=True):
        torch.testing.assert_close(sg, lg)


def test_sync_gives_the_global_batch_value_and_world_size_times_its_local_gradient(monkeypatch):
    """Two ranks simulated: rank 1's all-reduce contribution is added to rank 0's buffer."""
    mine, targets = batch(size=8, seed=1)
    theirs, _ = batch(size=8, seed=2)
    their_targets = torch.tensor([0, 1, 1, 1, 2, 2, 3, 0])
    contribution = []

    def keep_their_buffer(buffer: torch.Tensor) -> torch.Tensor:
        contribution.append(buffer.clone())
        return buffer

    monkeypatch.setattr(regularizer, "all_reduce_sum", keep_their_buffer)
    penalty_of(theirs, their_targets, LAYERS, 4, sync=True)
    monkeypatch.setattr(regularizer, "all_reduce_sum", lambda buffer: buffer.add_(contribution[0]))
    monkeypatch.setattr(regularizer, "world_size", lambda: 2)
    leaves = {name: a.clone().requires_grad_() for name, a in mine.items()}
    synced = penalty_of(leaves, targets, LAYERS, 4, sync=True)

    whole = {name: torch.cat([a, theirs[name]]).requires_grad_() for name, a in mine.items()}
    both_targets = torch.cat([targets, their_targets])
    monkeypatch.undo()
    reference = penalty_of(whole, both_targets, LAYERS, 4)
    assert synced.item() == pytest.approx(reference.item(), rel=1e-12)
    synced_grads = torch.autograd.grad(synced, list(leaves.values()), allow_unused=True)
    reference_grads = torch.autograd.grad(reference, list(whole.values()), allow_unused=True)
    for name, sg, rg in zip(leaves, synced_grads, reference_grads, strict=True):
        if name == "layer3.0":
            assert sg is None and rg is None
            continue
        torch.testing.assert_close(sg, 2 * rg[:8])
