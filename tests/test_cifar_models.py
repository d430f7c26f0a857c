"""The papers' CIFAR networks: ResNet-(6n+2) (He et al. 2016) and VGG-16 (Ranadive et al.'s
torchvision layout, or the small CIFAR classifier), their units, regularizer and ablation."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import TINY, run_cli
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import nn

import vestige
from vestige.analysis.ablation.ablate import ablate_units
from vestige.config import (
    MODEL_SCHEMAS,
    CifarResNetConfig,
    RegularizerConfig,
    SelectivityConfig,
    VGGConfig,
    model_schema,
    register_configs,
)
from vestige.errors import ConfigError
from vestige.models import MODELS, build_model
from vestige.models.cifar_resnet import BLOCKS_PER_STAGE, build_cifar_resnet
from vestige.models.vgg import NAMES, build_vgg
from vestige.preflight import preflight
from vestige.selectivity.regularizer import SelectivityRegularizer
from vestige.selectivity.units import measured_layers, record_unit_activations

CONF = Path(__file__).resolve().parents[1] / "conf"
NEGATIVE = SelectivityConfig().negative
CPU = torch.device("cpu")
# Ranadive et al.'s hooked ReLUs (src/custom_models.py: VGGModel.return_nodes), by module
RANADIVE_VGG16 = {
    "conv1": ["features.1", "features.3"],
    "conv2": ["features.6", "features.8"],
    "conv3": ["features.11", "features.13", "features.15"],
    "conv4": ["features.18", "features.20", "features.22"],
    "conv5": ["features.25", "features.27", "features.29"],
    "classifier": ["classifier.1", "classifier.4"],
}
TINY_MODELS = [
    CifarResNetConfig(width=0.25),
    CifarResNetConfig(width=0.25, shortcut="B"),
    VGGConfig(width=0.125),
    VGGConfig(width=0.125, classifier="small"),
    VGGConfig("vgg16_bn", width=0.125, batch_norm=True),
]
TINY_IDS = ["resnet20-A", "resnet20-B", "vgg16", "vgg16-small", "vgg16_bn"]


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_config(name: str):
    """`model=<name>` composed by Hydra from conf/model/<name>.yaml over its schema."""
    register_configs()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose(overrides=[f"+model={name}"]).model


def built(cfg, num_classes: int = 10, in_channels: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(cfg, num_classes, in_channels, image_size=32)


def test_every_new_model_name_has_a_config_of_that_name_and_schema():
    for names, builder, schema in (
        (BLOCKS_PER_STAGE, build_cifar_resnet, CifarResNetConfig),
        (NAMES, build_vgg, VGGConfig),
    ):
        for name in names:
            cfg = model_config(name)
            assert MODELS[name] is builder and cfg.name == name
            assert model_schema(cfg) is schema
    assert model_config("vgg16_bn").batch_norm and not model_config("vgg16").batch_norm


def test_resnet20_with_option_a_shortcuts_has_the_published_0_27m_parameters():
    count = parameters(built(model_config("resnet20")))
    assert count == 269_722
    assert round(count / 1e6, 2) == 0.27


@pytest.mark.parametrize(
    ("name", "millions"), [("resnet32", 0.46), ("resnet44", 0.66), ("resnet56", 0.85)]
)
def test_deeper_cifar_resnets_have_the_published_parameter_counts(name, millions):
    assert round(parameters(built(model_config(name))) / 1e6, 2) == millions


def test_cifar_resnet_has_n_basic_blocks_per_stage_and_no_fourth_stage():
    model = built(CifarResNetConfig("resnet56"))
    blocks = [len(getattr(model, f"layer{i}")) for i in (1, 2, 3)]
    assert blocks == [9, 9, 9] and not hasattr(model, "layer4")
    assert all(isinstance(b, torchvision.models.resnet.BasicBlock) for b in model.layer3)


def test_option_b_differs_from_option_a_only_in_the_projection_shortcuts():
    a = built(CifarResNetConfig(shortcut="A")).state_dict()
    b = built(CifarResNetConfig(shortcut="B")).state_dict()
    assert set(a) < set(b)
    extra = set(b) - set(a)
    assert {key.rsplit(".downsample.", 1)[0] for key in extra} == {"layer2.0", "layer3.0"}
    assert all(a[key].shape == b[key].shape for key in a)
    assert parameters(built(CifarResNetConfig(shortcut="B"))) - 269_722 == (
        16 * 32 + 2 * 32 + 32 * 64 + 2 * 64
    )


def test_option_a_shortcut_passes_every_second_pixel_and_pads_zero_channels():
    shortcut = built(CifarResNetConfig()).layer2[0].downsample
    x = torch.randn(2, 16, 8, 8)
    out = shortcut(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, :16], x[:, :, ::2, ::2])
    assert not out[:, 16:].any()


def test_vgg16_has_torchvisions_parameters_and_loads_its_state_dict():
    reference = torchvision.models.vgg16(num_classes=10).eval()
    model = built(model_config("vgg16")).eval()
    assert parameters(model) == parameters(reference) == 134_301_514
    model.load_state_dict(reference.state_dict())
    images = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(images), reference(images))


def test_vgg16_bn_loads_torchvisions_vgg16_bn_state_dict():
    reference = torchvision.models.vgg16_bn(num_classes=10)
    built(model_config("vgg16_bn")).load_state_dict(reference.state_dict())


def test_small_classifier_reads_the_512_features_of_the_last_map():
    model = built(VGGConfig(classifier="small"))
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 512), (512, 512), (512, 10)]
    assert parameters(model) == 15_245_130


def test_resnet20_units_are_its_nine_block_outputs_in_three_stages():
    layers = measured_layers(built(CifarResNetConfig()))
    assert [layer.name for layer in layers] == [
        f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3)
    ]
    assert [layer.channels for layer in layers] == [16] * 3 + [32] * 3 + [64] * 3


@pytest.mark.parametrize("units", ["block_output", "all_relu"])
def test_vgg16_units_are_the_relus_ranadive_et_al_hook_grouped_into_their_modules(units):
    layers = measured_layers(built(VGGConfig()), units)
    stages: dict[str, list[str]] = {}
    for layer in layers:
        stages.setdefault(layer.stage, []).append(layer.name)
    assert stages == RANADIVE_VGG16
    assert [layer.block for layer in layers[:4]] == [0, 1, 0, 1]
    channels = [layer.channels for layer in layers]
    assert channels == [64, 64, 128, 128, 256, 256, 256, *[512] * 6, 4096, 4096]


def test_vgg16_bn_units_follow_the_batchnorm():
    model = built(VGGConfig("vgg16_bn", batch_norm=True))
    layers = measured_layers(model)
    assert len(layers) == 15 and layers[0].name == "features.2"
    assert all(isinstance(model.get_submodule(layer.module), nn.ReLU) for layer in layers)


@pytest.mark.parametrize("cfg", TINY_MODELS, ids=TINY_IDS)
@pytest.mark.parametrize(("channels", "size"), [(3, 32), (1, 28)])
def test_forward_and_backward_on_cifar_and_fashion_mnist_sized_images(cfg, channels, size):
    model = built(cfg, in_channels=channels)
    logits = model(torch.randn(4, channels, size, size))
    assert logits.shape == (4, 10)
    logits.logsumexp(dim=1).sum().backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in model.parameters())


def test_vgg_pools_round_up_so_28_px_ends_in_a_1x1_map():
    features = built(VGGConfig(width=0.125), in_channels=1).features
    sizes = []
    x = torch.randn(1, 1, 28, 28)
    for module in features:
        x = module(x)
        if isinstance(module, nn.MaxPool2d):
            sizes.append(x.shape[-1])
    assert sizes == [14, 7, 4, 2, 1]


def test_recorded_vgg_units_are_relu_outputs_averaged_over_space_or_taken_as_features():
    model = built(VGGConfig(width=0.125)).eval()
    layers = {layer.name: layer for layer in measured_layers(model)}
    images = torch.randn(3, 3, 32, 32)
    chosen = [layers["features.3"], layers["classifier.4"]]
    with record_unit_activations(model, chosen, NEGATIVE) as acts:
        model(images)
    features = model.features[:4](images)
    assert torch.allclose(acts["features.3"], features.mean(dim=(2, 3)))
    flat = model.avgpool(model.features(images)).flatten(1)
    assert torch.allclose(acts["classifier.4"], model.classifier[:5](flat))
    assert acts["classifier.4"].shape == (3, chosen[1].channels)


@pytest.mark.parametrize(
    ("cfg", "regularized"),
    [
        (CifarResNetConfig(width=0.25), {"layer1", "layer2"}),
        (VGGConfig(width=0.125), {"conv1", "conv2", "conv3", "conv4", "conv5"}),
    ],
    ids=["resnet20", "vgg16"],
)
def test_regularizer_penalty_is_differentiable_on_every_stage_but_the_last(cfg, regularized):
    model = built(cfg)
    regularizer = SelectivityRegularizer(RegularizerConfig("selectivity", alpha=-1.0), NEGATIVE)
    images, targets = torch.randn(20, 3, 32, 32), torch.arange(20) % 5
    with regularizer.attach(model, iterations_per_epoch=4):
        assert {layer.stage for layer in regularizer.regularized_layers()} == regularized
        model(images)
        term, logs = regularizer.penalty(0, targets)
    assert term.requires_grad and 0.0 < logs["reg/R"].item() < 1.0
    term.backward()
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(("stage", "channels"), [("conv2", 16), ("classifier", 512)])
def test_ablating_a_vgg_stage_zeroes_the_chosen_units_where_the_next_layer_reads_them(
    stage, channels
):
    model = built(VGGConfig(width=0.125)).eval()
    layers = [layer for layer in measured_layers(model) if layer.stage == stage]
    assert {layer.channels for layer in layers} == {channels}
    masks = torch.zeros(len(layers), channels, dtype=torch.bool)
    masks[:, ::3] = True
    seen: dict[str, torch.Tensor] = {}

    def reads(name: str):
        def hook(module, args):
            seen[name] = args[0]

        return hook

    parent = model.get_submodule(layers[0].module.split(".")[0])
    handles = [
        parent[int(layer.module.split(".")[1]) + 1].register_forward_pre_hook(reads(layer.name))
        for layer in layers
    ]
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        model(images)
        intact = dict(seen)
        silenced = {
            layer.module: (masks[b], torch.zeros(channels)) for b, layer in enumerate(layers)
        }
        with ablate_units(model, silenced):
            ablated_logits = model(images)
    for handle in handles:
        handle.remove()
    for b, layer in enumerate(layers):
        assert not seen[layer.name][:, masks[b]].any()
        assert intact[layer.name][:, masks[b]].any()
    # nothing before the stage's first layer is silenced: its other units pass on unchanged
    first = layers[0].name
    assert torch.equal(seen[first][:, ~masks[0]], intact[first][:, ~masks[0]])
    assert not torch.equal(ablated_logits, model(images))


def test_every_model_schema_has_its_own_set_of_keys():
    keys = [frozenset(f.name for f in fields(schema)) for schema in MODEL_SCHEMAS]
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ("model=resnet20 model.shortcut=C", "model.shortcut='C' is invalid"),
        ("model=vgg16 model.classifier=big", "model.classifier='big' is invalid"),
    ],
)
def test_unknown_shortcut_or_classifier_is_a_one_line_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        preflight(overrides.split())


# -- real runs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "schema", "stages"),
    [
        (["model=resnet20"], CifarResNetConfig, ["layer1", "layer2", "layer3"]),
        (
            ["model=vgg16", "data.channels=1", "data.image_size=28"],
            VGGConfig,
            ["conv1", "conv2", "conv3", "conv4", "conv5", "classifier"],
        ),
    ],
    ids=["resnet20", "vgg16-28px"],
)
def test_trains_end_to_end_with_the_regularizer_and_reads_back(model, schema, stages, tmp_path):
    run_dir = tmp_path / "run"
    args = [*TINY, *model, "regularizer=selectivity", "regularizer.alpha=-1"]
    result = run_cli([*args, f"hydra.run.dir={run_dir}"], tmp_path)
    assert result.returncode == 0, result.stderr
    run = vestige.load_run(run_dir)
    saved = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))["model"]
    assert model_schema(saved) is schema
    last = run.metrics[-1]
    assert all(0.0 <= last[f"si/{stage}"] <= 1.0 for stage in stages)
    assert last["reg/alpha"] == -1.0 and torch.isfinite(torch.tensor(last["train_loss"]))
    snapshot = run.load_model(run.snapshots[-1])
    assert measured_layers(snapshot)[0].stage == stages[0]


def test_regularizing_against_selectivity_lowers_it_on_resnet20(tmp_path):
    """As on ResNet-18 (tests/test_selectivity_training.py): alpha -20 from epoch 1 ends with
    lower SI over the regularized stages (layer1, layer2) than alpha 0."""
    ends = {}
    for alpha in ("0", "-20@1ep"):
        run_dir = tmp_path / alpha
        args = [*TINY, "model=resnet20", "regularizer=selectivity", f"regularizer.alpha={alpha}"]
        result = run_cli([*args, f"hydra.run.dir={run_dir}"], tmp_path)
        assert result.returncode == 0, result.stderr
        ends[alpha] = vestige.load_run(run_dir).metrics[-1]
    for stage in ("layer1", "layer2"):
        assert ends["-20@1ep"][f"si/{stage}"] < ends["0"][f"si/{stage}"] - 0.03, stage
    assert ends["-20@1ep"]["reg/R"] < ends["0"]["reg/R"]
