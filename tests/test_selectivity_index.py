"""Specification of the class selectivity index and its measurement (docs/science.md §2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from vestige.config import ConViTConfig, ResNetConfig, SelectivityConfig
from vestige.errors import ConfigError
from vestige.models.convit import build_convit
from vestige.models.resnet import build_resnet
from vestige.selectivity.index import (
    ClassConditionalStats,
    SelectivityProbe,
    SelectivityResult,
    measure_selectivity,
    selectivity_index,
)
from vestige.selectivity.units import (
    UnitLayer,
    measured_layers,
    record_unit_activations,
    unit_table,
)

EPS = 1e-6
SETTINGS = SelectivityConfig()  # the defaults of the selectivity config section


def tiny_resnet(name: str = "resnet18", width: float = 0.125) -> nn.Module:
    return build_resnet(ResNetConfig(name=name, stem="small", width=width), 4, 3, 8).eval()


def loader(batches: int = 3, batch_size: int = 6) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [
        (torch.randn(batch_size, 3, 8, 8, generator=generator), torch.arange(batch_size) % 4)
        for _ in range(batches)
    ]


def flat_layer(units: int, name: str = "layer", stage: str = "stage", block: int = 0) -> UnitLayer:
    return UnitLayer(name, stage, block, units, module=name)


def si_of(acts: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    stats = ClassConditionalStats(num_classes)
    stats.update({"layer": acts}, targets)
    return SelectivityResult.from_stats(stats, [flat_layer(acts.shape[1])], EPS).si["layer"]


def brute_force_si(acts: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Loops and explicit division: the formula read straight from §2."""
    classes = sorted(set(targets.tolist()))
    result = []
    for unit in range(acts.shape[1]):
        means = []
        for c in classes:
            total, count = 0.0, 0
            for value, target in zip(acts[:, unit], targets, strict=True):
                if target == c:
                    total += float(value)
                    count += 1
            means.append(total / count)
        top = int(np.argmax(means))
        rest = [m for i, m in enumerate(means) if i != top]
        mu_max, mu_rest = means[top], sum(rest) / len(rest)
        result.append((mu_max - mu_rest) / (mu_max + mu_rest + EPS))
    return np.array(result)


def test_selectivity_matches_brute_force_reference_on_unbalanced_classes():
    generator = torch.Generator().manual_seed(1)
    targets = torch.tensor([0] * 3 + [1] * 11 + [2] * 1 + [3] * 25 + [4] * 6)
    acts = torch.rand(len(targets), 7, generator=generator, dtype=torch.float64) ** 3
    expected = brute_force_si(acts.numpy(), targets.numpy())
    np.testing.assert_allclose(si_of(acts, targets, 5).numpy(), expected, rtol=1e-12)


def test_classes_without_samples_are_left_out_of_max_and_rest():
    generator = torch.Generator().manual_seed(2)
    targets = torch.tensor([0, 0, 2, 2, 2, 4])
    acts = torch.rand(len(targets), 5, generator=generator, dtype=torch.float64)
    expected = brute_force_si(acts.numpy(), targets.numpy())
    np.testing.assert_allclose(si_of(acts, targets, 6).numpy(), expected, rtol=1e-12)


def test_class_means_of_a_class_without_samples_are_nan():
    stats = ClassConditionalStats(3)
    stats.update({"layer": torch.ones(2, 4)}, torch.tensor([0, 2]))
    means = stats.class_means()["layer"]
    assert means.shape == (4, 3)
    assert means[:, 1].isnan().all() and (means[:, [0, 2]] == 1).all()


def test_unit_that_fires_for_one_class_has_selectivity_one():
    class_means = torch.tensor([[0.0, 5.0, 0.0, 0.0]])
    assert selectivity_index(class_means, EPS).item() == pytest.approx(1.0, abs=EPS)


def test_equal_class_means_give_selectivity_zero():
    assert selectivity_index(torch.full((3, 10), 0.7), EPS).abs().max().item() < 1e-6


def test_dead_unit_has_selectivity_zero():
    assert selectivity_index(torch.zeros(1, 10), EPS).item() == 0.0


def test_fewer_than_two_classes_with_samples_give_selectivity_zero():
    class_means = torch.tensor([[3.0, 1.0, 0.0]])
    assert selectivity_index(class_means, EPS, torch.tensor([False, True, False])).item() == 0.0
    assert selectivity_index(class_means, EPS, torch.zeros(3, dtype=torch.bool)).item() == 0.0


def test_mu_rest_is_the_mean_of_the_other_classes_not_the_second_largest():
    si = selectivity_index(torch.tensor([[4.0, 2.0, 0.0]]), eps=0.0)
    assert si.item() == pytest.approx((4 - 1) / (4 + 1))


def test_preferred_class_is_the_class_with_the_largest_mean():
    targets = torch.tensor([0, 1, 1, 3])
    acts = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    stats = ClassConditionalStats(4)
    stats.update({"layer": acts}, targets)
    result = SelectivityResult.from_stats(stats, [flat_layer(2)], EPS)
    assert result.preferred_class["layer"].tolist() == [3, 1]


def test_streaming_mini_batches_equals_one_big_batch():
    generator = torch.Generator().manual_seed(3)
    targets = torch.randint(0, 5, (60,), generator=generator)
    acts = {
        "a": torch.rand(60, 4, generator=generator),
        "b": torch.rand(60, 9, generator=generator),
    }
    whole, streamed = ClassConditionalStats(5), ClassConditionalStats(5)
    whole.update(acts, targets)
    for chunk in torch.arange(60).split(7):
        streamed.update({name: a[chunk] for name, a in acts.items()}, targets[chunk])
    assert torch.equal(whole.counts, streamed.counts)
    for name in acts:
        torch.testing.assert_close(streamed.sums[name], whole.sums[name])


def test_all_reduce_in_one_process_leaves_the_statistics_unchanged():
    stats = ClassConditionalStats(3)
    stats.update({"layer": torch.rand(5, 2)}, torch.tensor([0, 1, 2, 0, 1]))
    reduced = stats.all_reduce()
    assert reduced is not stats
    assert torch.equal(reduced.sums["layer"], stats.sums["layer"])
    assert torch.equal(reduced.counts, stats.counts)


def test_one_pass_over_all_layers_equals_measuring_each_layer_alone():
    model, batches = tiny_resnet(), loader()
    layers = measured_layers(model)
    together = measure_selectivity(model, batches, layers, 4, torch.device("cpu"), SETTINGS)
    for layer in layers:
        alone = measure_selectivity(model, batches, [layer], 4, torch.device("cpu"), SETTINGS)
        torch.testing.assert_close(together.si[layer.name], alone.si[layer.name])


def test_measurement_runs_in_eval_mode_and_restores_the_mode():
    model = tiny_resnet().train()
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(module.training))
    measure_selectivity(model, loader(1), measured_layers(model), 4, torch.device("cpu"), SETTINGS)
    assert seen == [False] and model.training


def test_probe_measures_alongside_an_ordinary_forward_pass():
    model, batches = tiny_resnet(), loader()
    layers = measured_layers(model)
    with torch.no_grad(), SelectivityProbe(model, layers, 4, SETTINGS) as probe:
        for images, targets in batches:
            model(images)
            probe.after_forward(targets)
    expected = measure_selectivity(model, batches, layers, 4, torch.device("cpu"), SETTINGS)
    assert probe.result().summary() == pytest.approx(expected.summary())


def test_probe_refuses_an_update_without_a_forward_pass():
    model = tiny_resnet()
    with SelectivityProbe(model, measured_layers(model), 4, SETTINGS) as probe:
        with pytest.raises(RuntimeError, match="forward pass"):
            probe.after_forward(torch.tensor([0]))


def test_resnet18_is_measured_at_two_block_outputs_per_stage():
    layers = measured_layers(tiny_resnet("resnet18", width=1.0))
    assert [layer.name for layer in layers] == [
        f"layer{s}.{b}" for s in range(1, 5) for b in range(2)
    ]
    assert [layer.channels for layer in layers] == [64, 64, 128, 128, 256, 256, 512, 512]


def test_resnet50_is_measured_at_15104_bottleneck_outputs():
    layers = measured_layers(tiny_resnet("resnet50", width=1.0))
    blocks = {
        stage: [lay for lay in layers if lay.stage == stage]
        for stage in ["layer1", "layer2", "layer3", "layer4"]
    }
    assert [len(b) for b in blocks.values()] == [3, 4, 6, 3]
    assert [b[0].channels for b in blocks.values()] == [256, 512, 1024, 2048]
    assert sum(layer.channels for layer in layers) == 15_104


def test_unit_table_names_every_unit_by_layer_stage_block_and_channel():
    layers = measured_layers(tiny_resnet())
    table = unit_table(layers)
    assert len(table["channel"]) == sum(layer.channels for layer in layers)
    row = int(np.flatnonzero((table["layer"] == "layer2.1") & (table["channel"] == 3))[0])
    assert (table["stage"][row], table["block"][row]) == ("layer2", 1)


def test_recorded_activations_are_spatial_means_of_torchvision_relu_nodes():
    model = tiny_resnet("resnet50")
    block_outputs, all_relu = measured_layers(model), measured_layers(model, "all_relu")
    images = torch.randn(2, 3, 8, 8)
    features = create_feature_extractor(model, [layer.name for layer in all_relu])(images)
    with (
        record_unit_activations(model, block_outputs + all_relu, "keep") as acts,
        torch.no_grad(),
    ):
        model(images)
    for layer in all_relu:
        torch.testing.assert_close(acts[layer.name], features[layer.name].mean(dim=(2, 3)))
    for layer in block_outputs:
        torch.testing.assert_close(acts[layer.name], acts[f"{layer.name}.relu_2"])


def test_activations_keep_the_graph_only_when_asked():
    model = tiny_resnet()
    layers = measured_layers(model)
    for keep_grad in (False, True):
        with record_unit_activations(model, layers, "keep", keep_grad=keep_grad) as acts:
            model(torch.randn(2, 3, 8, 8))
        assert all(a.requires_grad == keep_grad for a in acts.values())


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_hooks_are_removed_after_the_context():
    model = tiny_resnet()
    with record_unit_activations(model, measured_layers(model, "all_relu"), "keep"):
        assert hook_count(model) > 0
    assert hook_count(model) == 0


def test_hooks_are_removed_after_an_exception():
    model = tiny_resnet()
    with pytest.raises(ValueError, match="boom"):
        with record_unit_activations(model, measured_layers(model), "keep"):
            raise ValueError("boom")
    assert hook_count(model) == 0


def test_transformer_units_average_patch_tokens_without_the_class_token():
    cfg = ConViTConfig(
        name="convit_ti", patch_size=4, embed_dim=48, num_heads=4, depth=2, local_up_to_layer=1
    )
    model = build_convit(cfg, 4, 3, 8).eval()
    layers = measured_layers(model)
    assert [(layer.name, layer.leading_tokens) for layer in layers] == [
        ("blocks.0.mlp.act", 0),
        ("blocks.1.mlp.act", 1),
    ]
    hidden = []
    model.blocks[1].mlp.act.register_forward_hook(lambda m, args, out: hidden.append(out))
    with record_unit_activations(model, layers, "keep") as acts, torch.no_grad():
        model(torch.randn(2, 3, 8, 8))
    torch.testing.assert_close(acts["blocks.1.mlp.act"], hidden[0][:, 1:].mean(dim=1))


def test_unknown_architectures_and_unit_choices_are_refused():
    with pytest.raises(ConfigError, match="no selectivity units"):
        measured_layers(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ConfigError, match="units='every_conv'"):
        measured_layers(tiny_resnet(), "every_conv")


def test_aggregates_are_layer_then_stage_then_network_means():
    layers = [flat_layer(2, "a.0", "a", 0), flat_layer(1, "a.1", "a", 1), flat_layer(4, "b.0", "b")]
    si = {
        "a.0": torch.tensor([0.2, 0.4]),
        "a.1": torch.tensor([0.5]),
        "b.0": torch.tensor([0.1, 0.1, 0.1, 0.9]),
    }
    result = SelectivityResult(layers, si, {}, {}, torch.ones(2))
    expected = {
        "si/a.0": 0.3,
        "si/a.1": 0.5,
        "si/b.0": 0.3,
        "si/a": 0.4,
        "si/b": 0.3,
        "si/mean": 0.35,
    }
    assert result.summary() == pytest.approx(expected)


def test_unit_table_of_a_result_carries_si_and_preferred_class():
    model = tiny_resnet()
    result = measure_selectivity(
        model, loader(), measured_layers(model), 4, torch.device("cpu"), SETTINGS
    )
    table = result.unit_table()
    assert set(table) == {"layer", "stage", "block", "channel", "si", "preferred_class"}
    assert {len(column) for column in table.values()} == {len(table["si"])}
    np.testing.assert_array_equal(table["si"][:8], result.si["layer1.0"].numpy())
