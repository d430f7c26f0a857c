"""analysis=attention (docs/science.md §14) and MLP-unit selectivity of ConViT runs (§7)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from matplotlib.image import imread
from omegaconf import OmegaConf

import vestige
from vestige.analysis.attention import (
    head_offsets,
    measure_attention,
    nonlocality,
    patch_distances,
)
from vestige.config import ConViTConfig
from vestige.models.convit import build_convit
from vestige.models.gpsa import GPSA
from vestige.selectivity.units import UnitLayer, unit_activations

CONVIT = [
    "model=convit_ti_small",
    "model.depth=3",
    "model.local_up_to_layer=2",
    "model.embed_dim=36",
    "model.num_heads=9",
    "model.drop_path=0",
    "data.image_size=16",  # patch 4: a 4x4 grid
    "data.synthetic.train_size=128",
    "data.synthetic.eval_size=48",
    "trainer.batch_size=32",
    "trainer.epochs=2",
    "trainer.progress=none",
    "selectivity.enabled=false",
    "checkpoint.snapshots=[0it,every 2it until 1ep,every 1ep]",
]
STEPS = [0, 2, 4, 8]  # 4 iterations per epoch
HEADS = 9


def one_hot_attention(side: int, key_of_query) -> torch.Tensor:
    """(1, 1, L, L) attention putting all weight of query (x, y) on key `key_of_query(x, y)`."""
    attention = torch.zeros(1, 1, side * side, side * side)
    for y in range(side):
        for x in range(side):
            kx, ky = key_of_query(x, y)
            attention[0, 0, y * side + x, ky * side + kx] = 1.0
    return attention


def test_attention_on_the_query_itself_has_nonlocality_zero():
    assert nonlocality(one_hot_attention(4, lambda x, y: (x, y))).item() == 0.0


def test_attention_one_patch_away_has_nonlocality_one():
    # one column right, or left from the last column: always one patch away
    attention = one_hot_attention(4, lambda x, y: (x + 1 if x < 3 else x - 1, y))
    assert nonlocality(attention).item() == pytest.approx(1.0)


def test_uniform_attention_has_the_mean_distance_of_the_grid():
    # on a 2x2 grid each query is 0, 1, 1 and sqrt 2 patches from the four keys
    assert nonlocality(torch.full((1, 1, 4, 4), 0.25)).item() == pytest.approx((2 + 2**0.5) / 4)


def test_nonlocality_is_per_image_and_head():
    attention = torch.stack([one_hot_attention(3, lambda x, y: (x, y))[0, 0]] * 2)[None]
    attention[0, 1] = 1 / 9
    values = nonlocality(attention.expand(5, -1, -1, -1))
    assert values.shape == (5, 2)
    assert values[:, 0].eq(0).all()
    assert values[:, 1] == pytest.approx(patch_distances(3).mean().expand(5))


def test_conv_initialised_heads_are_as_nonlocal_as_their_offset():
    # 9 heads at strength 10: each head is ~one-hot at its 3x3 offset (§2). Border queries whose
    # offset leaves the grid fall back on a nearer key, which costs about 1/side on a 32x32 grid.
    layer = GPSA(dim=36, num_heads=HEADS, grid_side=32, locality_strength=10.0)
    with torch.no_grad():
        positional = layer.positional_attention(32 * 32)
    grid = torch.tensor([[dx, dy] for dx in (-1, 0, 1) for dy in (-1, 0, 1)], dtype=torch.float)
    torch.testing.assert_close(head_offsets(positional), grid, atol=1e-3, rtol=0)
    r2 = math.sqrt(2)
    lengths = torch.tensor([r2, 1, r2, 1, 0, 1, r2, 1, r2])
    torch.testing.assert_close(nonlocality(positional)[0], lengths, atol=0.05, rtol=0)


def tiny_model(**changes: object) -> torch.nn.Module:
    cfg = ConViTConfig(
        name="convit_ti", patch_size=4, embed_dim=36, num_heads=HEADS, depth=3, local_up_to_layer=2
    )
    torch.manual_seed(0)
    return build_convit(ConViTConfig(**{**cfg.__dict__, **changes}), 5, 3, 28).eval()


def batches(count: int, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.randn(size, 3, 28, 28), torch.zeros(size)) for _ in range(count)]


def test_gates_start_at_sigmoid_one_and_offsets_on_the_3x3_grid():
    summary = measure_attention(
        tiny_model(locality_strength=10.0), batches(1, 2), torch.device("cpu")
    )
    assert summary.gates == pytest.approx(np.full((2, HEADS), 1 / (1 + math.exp(-1))))
    assert summary.gpsa_layers.tolist() == [0, 1] and summary.layers.tolist() == [0, 1, 2]
    grid = [[dx, dy] for dx in (-1, 0, 1) for dy in (-1, 0, 1)]
    assert summary.offsets == pytest.approx(np.array([grid, grid]), abs=1e-3)


def test_nonlocality_averages_the_first_images_whatever_the_batches():
    data = batches(3, 4)
    first_five = measure_attention(tiny_model(), data, torch.device("cpu"), images=5)
    together = [(torch.cat([data[0][0], data[1][0][:1]]), torch.zeros(5))]
    assert first_five.images == 5
    expected = measure_attention(tiny_model(), together, torch.device("cpu")).nonlocality
    assert first_five.nonlocality == pytest.approx(expected, rel=1e-5)


def test_renormalised_nonlocality_of_a_class_token_layer_equals_a_hand_computation():
    # a 2x2 grid after a class token: query 0 puts 0.5 on the class token, query 3 0.2
    attention = torch.tensor(
        [
            [0.5, 0.2, 0.1, 0.1, 0.1],
            [0.5, 0.3, 0.1, 0.1, 0.0],
            [0.0, 0.25, 0.25, 0.25, 0.25],
            [0.2, 0.0, 0.0, 0.4, 0.4],
            [0.2, 0.4, 0.0, 0.0, 0.4],
        ]
    )[None, None]
    patches = attention[..., 1:, 1:]
    distance = [[0, 1, 1, 2**0.5], [1, 0, 2**0.5, 1], [1, 2**0.5, 0, 1], [2**0.5, 1, 1, 0]]
    rows = [(0.3 * 0 + 0.1 * 1 + 0.1 * 1 + 0.0 * 2**0.5) / 0.5, (1 + 2**0.5 + 1) / 4]
    rows += [(0.4 * 0 + 0.4 * 1) / 0.8, (0.4 * 2**0.5) / 0.8]
    assert nonlocality(patches).item() == pytest.approx(sum(rows) / 4)
    as_it_is = sum(patches[0, 0, i, j].item() * distance[i][j] for i in range(4) for j in range(4))
    assert nonlocality(patches, "zero").item() == pytest.approx(as_it_is / 4)


def test_deit_has_no_gates_and_its_patch_block_is_renormalised_unless_asked_not_to():
    # at init q.k is tiny, so attention is ~uniform over the 49 patches and the class token:
    # renormalised, the patch block is uniform; as it is, the class token's 1/50 counts as 0
    deit = tiny_model(local_up_to_layer=0, qkv_bias=True)
    summary = measure_attention(deit, batches(1, 2), torch.device("cpu"))
    assert summary.gates.shape == (0, HEADS) and summary.offsets.shape == (0, HEADS, 2)
    assert summary.class_token_attention == pytest.approx(np.full((3, HEADS), 1 / 50), rel=0.05)
    uniform = patch_distances(7).mean().item()
    assert summary.nonlocality == pytest.approx(np.full((3, HEADS), uniform), rel=0.03)
    zero = measure_attention(deit, batches(1, 2), torch.device("cpu"), class_token="zero")
    assert zero.nonlocality == pytest.approx(np.full((3, HEADS), 49 / 50 * uniform), rel=0.03)


def test_negative_unit_outputs_are_kept_clamped_or_made_absolute_before_the_token_mean():
    layer = UnitLayer("blocks.0.mlp.act", "blocks", 0, 2, "blocks.0.mlp.act", leading_tokens=1)
    tokens = torch.tensor([[[-5.0, -5.0], [-1.0, 2.0], [3.0, -0.5]]])  # class token first
    assert unit_activations(tokens, layer, "keep").tolist() == [[1.0, 0.75]]
    assert unit_activations(tokens, layer, "clamp").tolist() == [[1.5, 1.0]]
    assert unit_activations(tokens, layer, "abs").tolist() == [[2.0, 1.25]]


@pytest.fixture(scope="module")
def convit_run(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("attention") / "convit"
    result = run_cli([*CONVIT, f"hydra.run.dir={target}"], target.parent)
    assert result.returncode == 0, result.stderr
    assert [s.step for s in vestige.load_run(target).snapshots] == STEPS
    return target


def analyze(run: Path, *overrides: str):
    result = run_cli(["task=analyze", f"run={run}", *overrides], run)
    assert result.returncode == 0, result.stderr
    return result


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_attention_analysis_writes_tables_and_figures_and_skips_done_snapshots(convit_run):
    analyze(convit_run, "analysis=attention")
    folder = convit_run / "attention"
    assert sorted(p.name for p in folder.glob("step_*.npz")) == [f"step_{s:08d}.npz" for s in STEPS]
    gates = read_rows(folder / "gates.csv")
    assert [(int(r["step"]), int(r["layer"]), int(r["head"])) for r in gates] == [
        (s, layer, h) for s in STEPS for layer in (0, 1) for h in range(HEADS)
    ]
    first = [float(r["gate"]) for r in gates if r["step"] == "0"]
    assert first == pytest.approx([1 / (1 + math.exp(-1))] * 2 * HEADS, rel=1e-5)
    local = read_rows(folder / "nonlocality.csv")
    assert [(int(r["step"]), int(r["layer"]), int(r["head"])) for r in local] == [
        (s, layer, h) for s in STEPS for layer in (0, 1, 2) for h in range(HEADS)
    ]
    assert {r["epoch"] for r in local} == {"0", "0.5", "1", "2"}
    assert all(0 <= float(r["nonlocality"]) < 3 * math.sqrt(2) for r in local)
    for figure in ("gates.png", "nonlocality.png"):
        assert imread(folder / figure).shape == (400, 640, 4)
    assert "0 of 4 snapshots" in analyze(convit_run, "analysis=attention").stdout


def test_selectivity_of_mlp_hidden_units_with_negative_outputs_clamped_then_kept(convit_run):
    analyze(convit_run, "analysis=selectivity")
    table = vestige.load_run(convit_run).selectivity()
    names = [f"blocks.{i}.mlp.act" for i in range(3)]
    assert sorted(set(table["layer"].tolist())) == names
    assert len(table["si"]) == len(STEPS) * 3 * 4 * 36
    assert (table["si"] >= 0).all() and (table["si"] <= 1).all()
    # another treatment is stored apart and measured afresh
    result = analyze(convit_run, "analysis=selectivity", "selectivity.negative=keep")
    assert f"{len(STEPS)} of {len(STEPS)} snapshots" in result.stdout
    kept = vestige.load_run(convit_run).selectivity(negative="keep")["si"]
    assert len(kept) == len(STEPS) * 3 * 4 * 36 and (convit_run / "selectivity-keep").is_dir()


def test_attention_analysis_of_a_resnet_run_is_one_line_error(convit_run, tmp_path):
    config = OmegaConf.load(convit_run / "config.yaml")
    config.model = {
        "name": "resnet18",
        "stem": "small",
        "width": 0.125,
        "zero_init_residual": False,
    }
    OmegaConf.save(config, tmp_path / "config.yaml")
    result = run_cli(["task=analyze", f"run={tmp_path}", "analysis=attention"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: analysis=attention needs a ConViT, DeiT or T-CNN run; {tmp_path.name} is resnet18"
    ]


def test_nonlocality_with_the_class_token_counted_as_zero_is_stored_apart_and_recorded(convit_run):
    analyze(convit_run, "analysis=attention")  # done already when another test ran it here
    analyze(convit_run, "analysis=attention", "analysis.attention.class_token=zero")
    folders = {"renormalise": convit_run / "attention", "zero": convit_run / "attention-zero"}
    for class_token, folder in folders.items():
        with np.load(folder / "step_00000000.npz") as data:
            assert str(data["class_token"]) == class_token
    # the GPSA layers never see the class token: only the last, plain layer differs
    renormalised, zero = (read_rows(f / "nonlocality.csv") for f in folders.values())
    for a, b in zip(renormalised, zero, strict=True):
        if a["layer"] != "2":
            assert a["nonlocality"] == b["nonlocality"]
    assert any(
        a["nonlocality"] != b["nonlocality"] for a, b in zip(renormalised, zero, strict=True)
    )


def test_recomputed_batchnorm_statistics_for_a_model_without_batchnorm_is_one_line(convit_run):
    args = [
        "task=analyze",
        f"run={convit_run}",
        "analysis=attention",
        "analysis.bn_stats=recompute",
    ]
    result = run_cli(args, convit_run)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: analysis.bn_stats=recompute is invalid: {convit_run.name} has no BatchNorm "
        "layers to re-estimate; use analysis.bn_stats=running"
    ]
