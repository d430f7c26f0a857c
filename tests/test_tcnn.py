"""Transformed CNNs (docs/science.md §16): the conversion computes the ResNet's function, can learn,
and is measured by analysis=attention like a ConViT."""

from __future__ import annotations

import copy
import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, run_cli
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader

from vestige.analysis.attention import measure_attention
from vestige.config import DataConfig, ResNetConfig, SyntheticConfig, TCNNConfig
from vestige.data.synthetic import build_synthetic
from vestige.errors import ConfigError
from vestige.models import build_model
from vestige.models.gpsa import kernel_offsets, recording_attention
from vestige.models.tcnn import ConvolutionalGPSA, transform

DEFAULTS = TCNNConfig()
LAYER4 = ["layer4.0.conv1", "layer4.0.conv2", "layer4.1.conv1", "layer4.1.conv2"]
# each head's distance to its key: the 3x3 offsets, head h at (h // 3 - 1, h % 3 - 1)
OFFSET_LENGTHS = [math.hypot(*delta) for delta in kernel_offsets(9).tolist()]


def convert(model: nn.Module, stages: list[str], alpha: float, gate: float) -> nn.Module:
    return transform(copy.deepcopy(model), stages, alpha, gate).eval()


def relative_errors(converted: nn.Module, original: nn.Module, images: torch.Tensor):
    """||converted - original|| / ||original|| of each image's logits, and both logits."""
    with torch.no_grad():
        reference, logits = original(images), converted(images)
    return (logits - reference).norm(dim=1) / reference.norm(dim=1), reference, logits


@pytest.fixture(scope="module")
def trained():
    """A quarter-width ResNet-18 after 30 SGD steps on the synthetic task at 32 px (layer4 sees a
    4x4 map, mostly border), in eval mode, with 1,024 evaluation images."""
    torch.manual_seed(0)
    data = DataConfig(image_size=32, synthetic=SyntheticConfig(train_size=1024, eval_size=1024))
    splits = build_synthetic(data, seed=0)
    images, labels = next(iter(DataLoader(splits.train, batch_size=1024)))
    model = build_model(ResNetConfig("resnet18", "small", 0.25), 10, 3, 32)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(30):
        batch = torch.randint(0, len(images), (64,))
        loss = F.cross_entropy(model(images[batch]), labels[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    evaluation = next(iter(DataLoader(splits.eval, batch_size=1024)))
    return model.eval(), evaluation, (images[:128], labels[:128])


def test_trained_resnet18_converted_at_the_defaults_gives_the_same_logits(trained):
    model, (images, labels), _ = trained
    converted = convert(model, DEFAULTS.converted_stages, DEFAULTS.locality_strength, DEFAULTS.gate)
    errors, reference, logits = relative_errors(converted, model, images)
    assert (reference.argmax(1) == labels).float().mean() > 0.5  # trained, not at its init
    assert len(images) >= 1000
    assert errors.max() < 1e-4
    assert (logits.argmax(1) == reference.argmax(1)).float().mean() >= 0.999
    # the stride-2 conv reads the 8x8 map of layer3, and every conv of layer4 is converted
    with recording_attention(converted) as maps, torch.no_grad():
        converted(images[:2])
    assert list(maps) == LAYER4
    assert maps["layer4.0.conv1"].attention.shape == (2, 9, 4 * 4, 10 * 10)
    assert maps["layer4.1.conv2"].attention.shape == (2, 9, 4 * 4, 6 * 6)


def test_a_loose_gate_or_a_blunt_locality_strength_is_not_the_same_function(trained):
    # the tolerance is met because of the defaults, not whatever they are
    model, (images, _), _ = trained
    for alpha, gate in ((DEFAULTS.locality_strength, 5.0), (5.0, DEFAULTS.gate)):
        errors, _, _ = relative_errors(convert(model, ["layer4"], alpha, gate), model, images)
        assert errors.max() > 1e-3


@pytest.mark.parametrize("stride", [1, 2])
def test_one_conv_on_odd_non_square_maps_is_the_convolution(stride):
    torch.manual_seed(stride)
    conv = nn.Conv2d(6, 5, 3, stride=stride, padding=1, bias=False)
    layer = ConvolutionalGPSA(conv, locality_strength=40.0, gate=30.0)
    for height, width in ((7, 5), (5, 7), (3, 4)):  # the offsets follow the map's size
        x = torch.randn(2, 6, height, width)
        torch.testing.assert_close(layer(x), F.conv2d(x, conv.weight, stride=stride, padding=1))
    x, layer, conv = x.double(), layer.double(), conv.double()  # and its dtype
    torch.testing.assert_close(layer(x), F.conv2d(x, conv.weight, stride=stride, padding=1))


def test_bottleneck_resnet50_converted_in_two_stages_gives_the_same_logits():
    torch.manual_seed(0)
    model = build_model(ResNetConfig("resnet50", "small", 0.125), 10, 3, 32).eval()
    converted = convert(model, ["layer3", "layer4"], DEFAULTS.locality_strength, DEFAULTS.gate)
    names = [name for name, m in converted.named_modules() if isinstance(m, ConvolutionalGPSA)]
    blocks = [("layer3", i) for i in range(6)] + [("layer4", i) for i in range(3)]
    assert names == [f"{stage}.{i}.conv2" for stage, i in blocks]
    errors, _, _ = relative_errors(converted, model, torch.randn(16, 3, 32, 32))
    assert errors.max() < 1e-4


def test_converted_layers_hold_the_kernel_slices_and_their_attention_can_learn(trained):
    model, _, (images, labels) = trained
    converted = convert(model, ["layer4"], DEFAULTS.locality_strength, DEFAULTS.gate).train()
    F.cross_entropy(converted(images), labels).backward()
    for name in LAYER4:
        layer, kernel = converted.get_submodule(name), model.get_submodule(name).weight
        values = layer.v.weight.view(9, kernel.shape[0], kernel.shape[1])
        for head, (dx, dy) in enumerate(kernel_offsets(9).long().tolist()):
            assert torch.equal(values[head], kernel[:, :, dy + 1, dx + 1])
        assert layer.q.weight.grad.ne(0).any() and layer.k.weight.grad.ne(0).any()
        assert layer.content_weight.grad.ne(0).all()  # every head's gate


def test_fine_tuning_opens_the_nearly_closed_gates(trained):
    """At conversion the content share 1 - g is ~6e-6; a few SGD steps on a new labelling (a
    loss far from 0) change it by a sizeable fraction (with the gate held as lambda they would
    change it by ~1e-6 of itself)."""
    model, _, (images, labels) = trained
    labels = (labels + 1) % 10
    converted = convert(model, ["layer4"], DEFAULTS.locality_strength, DEFAULTS.gate).train()
    layer = converted.get_submodule(LAYER4[0])
    before = 1 - layer.gates().detach().clone()
    optimizer = torch.optim.SGD(converted.parameters(), lr=0.1, momentum=0.9)
    for _ in range(10):
        optimizer.zero_grad()
        F.cross_entropy(converted(images), labels).backward()
        optimizer.step()
    after = 1 - layer.gates().detach()
    assert ((after - before).abs() / before).max() > 0.01


def test_tcnn_config_builds_the_hybrid_from_scratch():
    cfg = OmegaConf.structured(TCNNConfig(width=0.125))
    model = build_model(cfg, num_classes=10, in_channels=1, image_size=28)
    layers = [m for m in model.modules() if isinstance(m, ConvolutionalGPSA)]
    gate = 1 / (1 + math.exp(-DEFAULTS.gate))
    assert len(layers) == 4
    assert all(layer.gates().tolist() == pytest.approx([gate] * 9) for layer in layers)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)  # layer4 sees a 4x4 map at 28 px


def test_an_unknown_stage_is_a_one_line_error():
    model = build_model(ResNetConfig("resnet18", "small", 0.125), 10, 3, 32)
    with pytest.raises(ConfigError, match=r"'layer5' is not a stage .* layer1, layer2, layer3"):
        transform(model, ["layer4", "layer5"], 20.0, 12.0)


def test_converted_heads_start_positional_and_as_far_as_their_kernel_offsets():
    torch.manual_seed(0)
    model = build_model(ResNetConfig("resnet18", "small", 0.125), 10, 3, 32)
    converted = convert(model, ["layer4"], DEFAULTS.locality_strength, DEFAULTS.gate)
    summary = measure_attention(converted, [(torch.randn(4, 3, 32, 32), None)], torch.device("cpu"))
    assert summary.layers.tolist() == summary.gpsa_layers.tolist() == [0, 1, 2, 3]
    gate = 1 / (1 + math.exp(-DEFAULTS.gate))
    assert summary.gates == pytest.approx(np.full((4, 9), gate))
    # border queries attend the padding key their offset reaches, at the offset's distance
    assert summary.nonlocality == pytest.approx(np.array([OFFSET_LENGTHS] * 4), abs=1e-3)
    grid = kernel_offsets(9).numpy()
    assert summary.offsets == pytest.approx(np.stack([grid] * 4), abs=1e-3)
    assert not summary.class_token_attention.any()


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_attention_analysis_of_a_tcnn_run_reports_its_converted_layers(tmp_path):
    run = tmp_path / "tcnn"
    trained = run_cli(["model=tcnn", *TINY, f"hydra.run.dir={run}"], tmp_path)
    assert trained.returncode == 0, trained.stderr
    analyzed = run_cli(["task=analyze", "analysis=attention", f"run={run}"], tmp_path)
    assert analyzed.returncode == 0, analyzed.stderr
    steps = [0, 8, 16]  # 256 images in batches of 32: 8 iterations per epoch
    gates = read_rows(run / "attention" / "gates.csv")
    assert [(int(r["step"]), int(r["layer"]), int(r["head"])) for r in gates] == [
        (step, layer, head) for step in steps for layer in range(4) for head in range(9)
    ]
    first = [float(r["gate"]) for r in gates if r["step"] == "0"]
    assert first == pytest.approx([1 / (1 + math.exp(-DEFAULTS.gate))] * 36, abs=1e-6)
    local = [r for r in read_rows(run / "attention" / "nonlocality.csv") if r["step"] == "0"]
    assert [float(r["nonlocality"]) for r in local] == pytest.approx(OFFSET_LENGTHS * 4, abs=1e-3)
