"""ConViT / DeiT as specified in docs/science.md §9-§15: sizes, local init, gating, class token."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from vestige.config import ConViTConfig, register_configs
from vestige.errors import ConfigError
from vestige.models import MODELS
from vestige.models.convit import VARIANTS, build_convit
from vestige.models.gpsa import GPSA, recording_attention, relative_offsets, trunc_normal_

CONF = Path(__file__).resolve().parents[1] / "conf"
TINY = ConViTConfig(
    name="convit_ti", patch_size=4, embed_dim=32, num_heads=4, depth=3, local_up_to_layer=2
)
TINY_DEIT = ConViTConfig(
    name="deit_ti",
    patch_size=4,
    embed_dim=32,
    num_heads=4,
    depth=2,
    local_up_to_layer=0,
    qkv_bias=True,
)


def model_config(name: str):
    """`model=<name>` composed by Hydra from conf/model/<name>.yaml over the schema."""
    register_configs()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose(overrides=[f"+model={name}"]).model


def parameter_count(name: str) -> int:
    """Parameters at 224 px and 1000 classes, built on the meta device (nothing allocated)."""
    with torch.device("meta"):
        model = build_convit(model_config(name), 1000, 3, 224)
    return sum(p.numel() for p in model.parameters())


def tiny_model(cfg: ConViTConfig = TINY, image_size: int = 28) -> nn.Module:
    torch.manual_seed(0)
    return build_convit(cfg, num_classes=5, in_channels=3, image_size=image_size).eval()


def test_every_convit_model_name_has_a_config_of_that_name():
    for name in VARIANTS:
        assert MODELS[name] is build_convit
        assert model_config(name).name == name


@pytest.mark.parametrize(
    ("name", "millions"),
    [
        ("convit_ti", 5.71),
        ("convit_s", 27.78),
        ("convit_b", 86.54),
        ("convit_ti_plus", 9.97),
        ("convit_s_plus", 48.98),
    ],
)
def test_parameter_count_matches_the_reference_table(name, millions):
    assert round(parameter_count(name) / 1e6, 2) == millions


def test_convit_b_plus_parameter_count_matches_the_reference_table():
    assert round(parameter_count("convit_b_plus") / 1e6, 1) == 153.1


@pytest.mark.parametrize(("name", "millions"), [("deit_ti", 5.7), ("deit_s", 22), ("deit_b", 86)])
def test_deit_parameter_count_is_close_to_the_published_one(name, millions):
    assert parameter_count(name) / 1e6 == pytest.approx(millions, rel=0.01)


def test_small_image_variants_see_an_8x8_grid_at_32_px():
    for name in ("convit_ti_small", "deit_ti_small"):
        with torch.device("meta"):
            model = build_convit(model_config(name), 10, 3, 32)
        assert model.pos_embed.shape[1] == 64


def test_offsets_are_key_minus_query_in_column_row_order():
    r = relative_offsets(3)  # tokens numbered row by row; token 4 is the centre
    assert r[4, 5].tolist() == [1.0, 1.0, 0.0]  # key one column right: d_x = +1
    assert r[4, 7].tolist() == [1.0, 0.0, 1.0]  # key one row down: d_y = +1
    assert r[4, 0].tolist() == [2.0, -1.0, -1.0]


def test_local_init_puts_each_of_nine_heads_on_its_own_3x3_offset():
    side, query = 7, (3, 3)
    layer = GPSA(dim=36, num_heads=9, grid_side=side, locality_strength=10.0)
    positional = layer.positional_attention(side * side)[0, :, query[1] * side + query[0]]
    for head in range(9):
        h1, h2 = divmod(head, 3)
        key = (query[1] + h2 - 1) * side + (query[0] + h1 - 1)
        assert positional[head, key] > 0.9, (head, positional[head].argmax().item(), key)


def test_local_init_makes_values_the_identity_and_zeroes_the_positional_bias():
    layer = GPSA(dim=32, num_heads=4, grid_side=5)
    assert torch.equal(layer.v.weight, torch.eye(32))
    assert torch.equal(layer.pos_proj.bias, torch.zeros(4))


def test_heads_beyond_the_square_grid_keep_random_positional_weights():
    torch.manual_seed(0)
    layer = GPSA(dim=30, num_heads=5, grid_side=5, locality_strength=3.0)
    assert layer.pos_proj.weight[:4, 0].tolist() == [-3.0] * 4
    assert layer.pos_proj.weight[4].abs().max() <= 0.1  # the generic init: normal, std 0.02


def test_gates_start_at_sigmoid_of_one():
    model = tiny_model()
    assert model.gates().shape == (2, 4)
    assert torch.allclose(model.gates(), torch.sigmoid(torch.tensor(1.0)).expand(2, 4))
    assert tiny_model(TINY_DEIT).gates().shape == (0, 4)


def test_attention_rows_sum_to_one_in_gpsa_and_plain_layers():
    model = tiny_model()
    with recording_attention(model) as maps:
        model(torch.randn(2, 3, 28, 28))
    assert list(maps) == ["blocks.0.attn", "blocks.1.attn", "blocks.2.attn"]
    for record in maps.values():
        rows = record.attention.sum(dim=-1)
        assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)
    assert maps["blocks.0.attn"].positional.shape == (1, 4, 49, 49)
    assert maps["blocks.2.attn"].positional is None


def test_recording_changes_nothing_and_stops_on_exit():
    model, images = tiny_model(TINY_DEIT), torch.randn(2, 3, 28, 28)
    with recording_attention(model):
        recorded = model(images)
    assert torch.allclose(model(images), recorded, atol=1e-5)
    assert all(block.attn.sink is None for block in model.blocks)


def token_counts(model: nn.Module, images: torch.Tensor) -> list[int]:
    """Number of tokens each attention layer receives."""
    counts: list[int] = []
    hooks = [
        block.attn.register_forward_pre_hook(lambda _, args: counts.append(args[0].shape[1]))
        for block in model.blocks
    ]
    model(images)
    for hook in hooks:
        hook.remove()
    return counts


def test_class_token_joins_after_the_gpsa_blocks():
    model = tiny_model()
    assert token_counts(model, torch.randn(2, 3, 28, 28)) == [49, 49, 50]
    assert [block.class_token for block in model.blocks] == [False, False, True]


def test_deit_has_the_class_token_from_the_start():
    model = tiny_model(TINY_DEIT)
    assert token_counts(model, torch.randn(2, 3, 28, 28)) == [50, 50]


def test_another_image_size_rebuilds_the_offsets_for_the_new_grid():
    model = tiny_model()
    with recording_attention(model) as maps:
        logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    assert torch.equal(model.blocks[0].attn.rel_indices, relative_offsets(8))
    assert maps["blocks.0.attn"].attention.shape == (2, 4, 64, 64)
    assert maps["blocks.2.attn"].attention.shape == (2, 4, 65, 65)
    model(torch.randn(1, 3, 28, 28))
    assert torch.equal(model.blocks[1].attn.rel_indices, relative_offsets(7))


def test_forward_and_backward_give_finite_gradients_everywhere():
    model = tiny_model().train()
    model(torch.randn(4, 3, 28, 28)).logsumexp(dim=1).mean().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


def test_mlp_hidden_units_are_reachable_as_blocks_i_mlp_act():
    modules = dict(tiny_model().named_modules())
    assert isinstance(modules["blocks.2.mlp.act"], nn.GELU)
    assert modules["blocks.0.mlp.fc1"].out_features == 128


def test_stochastic_depth_rises_linearly_to_drop_path():
    rates = [block.drop_path.p for block in tiny_model().blocks]
    assert rates == pytest.approx([0.0, 0.05, 0.1])


def test_position_embedding_and_class_token_are_excluded_from_weight_decay():
    model = tiny_model()
    assert model.no_weight_decay() <= dict(model.named_parameters()).keys()


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"patch_size": 5}, "model.patch_size=5"),
        ({"embed_dim": 30}, "model.embed_dim=30"),
        ({"local_up_to_layer": 3}, "model.local_up_to_layer=3"),
    ],
)
def test_inconsistent_sizes_are_one_line_config_errors(change, key):
    cfg = ConViTConfig(**{**TINY.__dict__, **change})
    with pytest.raises(ConfigError, match=key) as error:
        build_convit(cfg, num_classes=5, in_channels=3, image_size=28)
    assert "\n" not in str(error.value)


def test_gpsa_rejects_a_token_count_that_is_not_a_square_grid():
    with pytest.raises(ValueError, match="square grid"):
        GPSA(dim=8, num_heads=2, grid_side=3).positional_attention(10)


def test_head_width_is_48_for_convit_and_64_for_the_plus_models():
    for name, width in (("convit_s", 48), ("convit_b_plus", 64)):
        cfg = model_config(name)
        assert cfg.embed_dim / cfg.num_heads == width
        assert math.isqrt(cfg.num_heads) ** 2 == cfg.num_heads


def test_generic_init_truncates_at_two_absolute_as_the_official_code():
    # timm's trunc_normal_(std=.02) keeps a=-2, b=2: bounds in absolute value, not in stds
    values = trunc_normal_(torch.empty(200_000), std=1.5)
    assert values.abs().max().item() <= 2.0
    assert values.abs().max().item() > 1.9
