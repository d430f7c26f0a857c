"""analysis=ablation: silencing the most selective units vs random ones
(docs/science.md §4), on networks whose answer is known, and end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import TINY, finished_run, run_cli
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset
from torchvision.models.resnet import BasicBlock, Bottleneck

import vestige
from vestige.analysis.ablation.ablate import StageAblations, naive_sweep, sweep
from vestige.analysis.ablation.plan import (
    COLUMNS,
    UnitRanking,
    normalised_auc,
    paper_grid,
    plan_stage,
    stage_ablations,
)
from vestige.config import AblationConfig, ConViTConfig, SelectivityConfig, TCNNConfig
from vestige.models.cifar_resnet import CifarResNet
from vestige.models.resnet import ResNet
from vestige.models.tcnn import transform
from vestige.results import Snapshot
from vestige.selectivity.index import measure_selectivity
from vestige.selectivity.units import measured_layers

CPU = torch.device("cpu")
CLASSES = 4
# class y's images: 1 in input channel y, and BACKGROUND[j] in every other channel j
BACKGROUND = [0.0, 0.2, 0.2, 0.2]


def settings(**values) -> AblationConfig:
    return OmegaConf.structured(AblationConfig(**values))


def planted_resnet() -> ResNet:
    """A ResNet-18-shaped network (4, 8, 16, 32 channels) that copies input channels 0-3 to the
    same channels of every block output, all other units dead, and reads class c from unit c:
    unit 0 alone carries class 0 (SI 1), units 1-3 also answer weakly to other classes."""
    model = ResNet(
        BasicBlock, [2, 2, 2, 2], CLASSES, in_channels=CLASSES, stem="small", width=1 / 16
    )
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.zero_()
                centre = module.kernel_size[0] // 2
                if module is model.conv1 or module.kernel_size == (1, 1):  # stem, shortcuts
                    for c in range(module.in_channels):
                        module.weight[c, c, centre, centre] = 1.0
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.running_var.fill_(1 - module.eps)  # BN is then exactly the identity
        model.fc.weight.zero_()
        model.fc.bias.zero_()
        for c in range(CLASSES):
            model.fc.weight[c, c] = 1.0
    return model.eval()


def planted_images(per_class: int = 8) -> DataLoader:
    labels = torch.arange(CLASSES).repeat_interleave(per_class)
    images = torch.tensor(BACKGROUND)[None, :].repeat(len(labels), 1)
    images[torch.arange(len(labels)), labels] = 1.0
    images = images[:, :, None, None].expand(-1, -1, 8, 8).contiguous()
    return DataLoader(TensorDataset(images, labels), batch_size=12)


def stage_plan(model, loader, stage: str, **values):
    layers = [layer for layer in measured_layers(model) if layer.stage == stage]
    ranking = UnitRanking.measured(
        measure_selectivity(model, loader, layers, CLASSES, CPU, SelectivityConfig())
    )
    plan = plan_stage(layers, ranking, settings(**values), seed=0, device=CPU)
    counts = sweep(model, loader, [plan.distinct], CLASSES, CPU)[0]
    return plan, counts, ranking


def rows_where(table, **values):
    return [row for row in table if all(row[key] == value for key, value in values.items())]


def test_unit_that_alone_carries_class_c_is_ranked_first_and_its_ablation_drops_class_c_to_chance():
    model, loader = planted_resnet(), planted_images()
    plan, counts, ranking = stage_plan(model, loader, "layer3", k=[1], random_draws=1)
    assert ranking.si["layer3.0"][0] == pytest.approx(1.0, abs=1e-5)
    (row,) = [r for r, a in enumerate(plan.rows) if a.condition == "selective" and a.k == 1]
    assert plan.masks[row].nonzero().tolist() == [[0, 0], [1, 0]]  # unit 0 of both blocks
    class_accuracy = counts.class_accuracy()
    ablated = int(plan.inverse[row])
    assert class_accuracy[plan.base].tolist() == [1.0, 1.0, 1.0, 1.0]
    assert class_accuracy[ablated, 0] <= 1 / CLASSES
    assert class_accuracy[ablated, 1:].tolist() == [1.0, 1.0, 1.0]
    snapshot = Snapshot(step=7, epoch=1.0, path=Path("unused"))
    table = rows_where(plan.table(snapshot, counts, ranking), condition="selective", k=1)
    assert table[0]["top1"] == 0.75 and table[0]["top1_norm"] == 0.75
    assert table[0]["preferred_class_drop"] == 1.0  # class 0's accuracy went from 1 to 0


def test_random_ablation_of_units_that_carry_nothing_leaves_accuracy_unchanged():
    model, loader = planted_resnet(), planted_images()
    layers = [layer for layer in measured_layers(model) if layer.stage == "layer4"]
    generator = torch.Generator().manual_seed(0)
    masks = torch.rand(6, len(layers), layers[0].channels, generator=generator) < 0.5
    masks[..., :CLASSES] = False  # the units that carry the classes are kept
    ablations = StageAblations(layers, masks, torch.zeros(len(layers), layers[0].channels))
    counts = sweep(model, loader, [ablations], CLASSES, CPU)[0]
    assert counts.accuracy()[0].tolist() == [1.0] * 6
    assert counts.class_accuracy().eq(1.0).all()


NETWORKS = {
    "basic": lambda: ResNet(BasicBlock, [2, 2, 2, 2], 7, stem="small", width=1 / 16),
    "bottleneck": lambda: ResNet(Bottleneck, [1, 3, 2, 1], 7, stem="small", width=1 / 16),
    "resnet20": lambda: CifarResNet(3, 7, width=0.5),
    # converted blocks in an ablated stage and downstream of it, content attention half open
    "tcnn": lambda: transform(
        ResNet(BasicBlock, [2, 2, 2, 2], 7, stem="small", width=1 / 16),
        ["layer3", "layer4"],
        locality_strength=20.0,
        gate=0.0,
    ),
}


@pytest.mark.parametrize("network", list(NETWORKS))
def test_cached_and_batched_sweep_equals_one_full_forward_per_ablation(network):
    torch.manual_seed(0)
    model = NETWORKS[network]().double().eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):  # non-trivial running statistics
            module.running_mean.normal_(0, 0.3)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.normal_(1, 0.3)
            module.bias.data.normal_(0, 0.3)
    images = torch.randn(26, 3, 12, 12, dtype=torch.float64)
    with torch.no_grad():  # logits centred on these images: a random network's answers vary
        model.fc.bias -= model(images).mean(dim=0)
    loader = DataLoader(TensorDataset(images, torch.arange(26) % 7), batch_size=10)
    ablations = []
    for stage in ("layer2", "layer3"):
        units = [layer for layer in measured_layers(model) if layer.stage == stage]
        masks = torch.rand(9, len(units), units[0].channels) < torch.rand(9, 1, 1) / 2
        masks[0] = False  # the unablated network
        masks[1, 0] = False  # starts at the second block
        values = torch.rand(len(units), units[0].channels, dtype=torch.float64)
        ablations.append(StageAblations(units, masks, values))
    fast = sweep(model, loader, ablations, 7, CPU, masks_per_forward=4)
    for ablation, counts in zip(ablations, fast, strict=True):
        naive = naive_sweep(model, loader, ablation, 7, CPU)
        assert torch.equal(counts.top1, naive.top1)
        assert torch.equal(counts.top5, naive.top5)
        assert torch.equal(counts.images, naive.images)
    # the ablations change the answers, so equal counts are not equal by accident
    for counts in fast:
        assert len(torch.cat([counts.top1, counts.top5], dim=1).unique(dim=0)) > 3


def test_auc_of_a_flat_curve_is_one_and_the_trapezoid_is_exact():
    assert normalised_auc([0, 0.1, 0.5, 1], [1, 1, 1, 1]) == 1.0
    assert normalised_auc([0, 0.5], [1, 1]) == 1.0
    assert normalised_auc([0, 0.25, 1], [1, 0.5, 0]) == pytest.approx(0.25 * 0.75 + 0.75 * 0.25)
    assert normalised_auc([1, 0, 0.25], [0, 1, 0.5]) == pytest.approx(0.375)  # any order
    assert normalised_auc([0, 0.5], [1, 0]) == pytest.approx(0.5)  # over the span covered


def test_paper_grid_steps_15_to_half_then_40_to_all_channels():
    grid = paper_grid(2048)
    assert grid[:3] == [0, 15, 30] and grid[67:71] == [1005, 1020, 1024, 1064]
    assert grid[-2:] == [2024, 2048]
    assert paper_grid(64) == [0, 15, 30, 32, 64]


def test_random_subsets_are_fixed_nested_and_differ_between_draws():
    model = planted_resnet()
    layers = [layer for layer in measured_layers(model) if layer.stage == "layer4"]
    si = {layer.name: torch.rand(layer.channels) for layer in layers}
    ranking = UnitRanking(si, {name: torch.zeros(32, dtype=torch.long) for name in si}, None)
    chosen = settings(k=[4, 8], random_draws=2)
    rows, masks = stage_ablations(layers, ranking, chosen, seed=3, device=CPU)
    again = stage_ablations(layers, ranking, chosen, seed=3, device=CPU)[1]
    assert torch.equal(masks, again)
    by_row = {(r.condition, r.draw, r.k): mask for r, mask in zip(rows, masks, strict=True)}
    assert (by_row["random", 0, 4] <= by_row["random", 0, 8]).all()
    assert not torch.equal(by_row["random", 0, 8], by_row["random", 1, 8])
    assert by_row["random", 1, 8].sum(dim=1).tolist() == [8, 8]
    top = torch.stack([si[layer.name].topk(4).indices.sort().values for layer in layers])
    assert torch.equal(by_row["selective", 0, 4].nonzero()[:, 1].view(2, 4), top)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ablation")
    result = run_cli([*TINY, f"hydra.run.dir={folder / 'run'}"], folder)
    assert result.returncode == 0, result.stderr
    return folder / "run"


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_analyze_writes_one_row_per_snapshot_stage_condition_draw_and_k_then_skips_them(tiny_run):
    result = run_cli(["task=analyze", f"run={tiny_run}", "analysis=ablation"], tiny_run)
    assert result.returncode == 0, result.stderr
    run = vestige.load_run(tiny_run)
    rows = read_csv(tiny_run / "ablation" / "ablation.csv")
    epochs = {int(r["step"]): float(r["epoch"]) for r in rows}
    assert epochs == {s.step: s.epoch for s in run.snapshots if s.step > 0}  # epochs 1 and 2
    channels = {"layer1": 8, "layer2": 16, "layer3": 32, "layer4": 64}
    accuracy = {row["step"]: row["eval_acc"] for row in run.metrics}
    for step in epochs:
        for stage, c in channels.items():
            curve = rows_where(rows, step=str(step), stage=stage)
            draws = {(r["condition"], r["draw"]) for r in curve}
            assert draws == {("selective", "0")} | {("random", str(d)) for d in range(5)}
            assert sorted({int(r["k"]) for r in curve}) == paper_grid(c)
            assert len(curve) == len(draws) * len(paper_grid(c))
            for row in rows_where(curve, k="0"):  # the unablated network: as evaluated in training
                assert float(row["top1"]) == pytest.approx(accuracy[step], abs=1e-6)
                assert float(row["top1_norm"]) == 1.0
    auc = read_csv(tiny_run / "ablation" / "auc.csv")
    assert [(int(r["step"]), r["stage"], r["condition"], r["draws"]) for r in auc] == [
        (step, stage, condition, draws)
        for step in epochs
        for stage in channels
        for condition, draws in (("selective", "1"), ("random", "5"))
    ]
    again = run_cli(["task=analyze", f"run={tiny_run}", "analysis=ablation"], tiny_run)
    assert again.returncode == 0, again.stderr
    assert "ablation: 0 of 2 snapshots" in again.stdout


def test_other_settings_go_to_their_own_folder_single_units_on_a_heldout_half(tiny_run):
    args = [
        "analysis.ablation.scope=unit",
        "analysis.ablation.split=heldout",
        "analysis.ablation.value=mean",
        "analysis.ablation.top_units=3",
        "analysis.ablation.random_draws=2",
        "analysis.ablation.stages=[layer4]",
        "analysis.snapshots=[2ep]",
    ]
    result = run_cli(["task=analyze", f"run={tiny_run}", "analysis=ablation", *args], tiny_run)
    assert result.returncode == 0, result.stderr
    (folder,) = tiny_run.glob("ablation-*")
    assert json.loads((folder / "settings.json").read_text())["scope"] == "unit"
    rows = read_csv(folder / "ablation.csv")
    assert {(r["block"], r["condition"], r["draw"]) for r in rows} == {
        (str(b), condition, str(d))
        for b in (0, 1)
        for condition, d in (("selective", 0), ("random", 0), ("random", 1))
    }
    assert len(rows) == 2 * 3 * 3 and all(r["k"] == "1" and r["channel"] for r in rows)


def test_bad_ablation_setting_is_one_line_error(tiny_run):
    result = run_cli(
        [
            "task=analyze",
            f"run={tiny_run}",
            "analysis=ablation",
            "analysis.ablation.stages=[layer5]",
        ],
        tiny_run,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: analysis.ablation.stages=['layer5'] is invalid: "
        "choose among layer1, layer2, layer3, layer4, or null for all"
    ]


def test_ablation_of_a_transformer_run_is_one_line_error(tmp_path):
    saved = OmegaConf.structured({"model": ConViTConfig()})  # what a ConViT run saves of it
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(saved))
    result = run_cli(["task=analyze", f"run={tmp_path}", "analysis=ablation"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: analysis=ablation needs a network with convolutional units (it silences channels "
        f"of block outputs or VGG ReLUs); run={tmp_path} is convit_ti: "
        "choose a ResNet, T-CNN or VGG run"
    ]


def test_a_tcnn_run_is_ablated_in_the_stages_of_the_resnet_it_came_from(tmp_path):
    saved = OmegaConf.structured({"model": TCNNConfig()})  # layer4 converted to attention
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(saved))
    chosen = "analysis.ablation.stages=[blocks]"
    result = run_cli(["task=analyze", f"run={tmp_path}", "analysis=ablation", chosen], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: analysis.ablation.stages=['blocks'] is invalid: "
        "choose among layer1, layer2, layer3, layer4, or null for all"
    ]


# a CIFAR ResNet (the fast sweep) and a VGG (one forward per ablation), trained until their
# answers depend on the image: the training split enlarged, VGG-16 without BatchNorm on AdamW
CONVOLUTIONAL = {
    "resnet20": (["model=resnet20"], ["layer1", "layer2", "layer3"]),
    "vgg16": (
        ["model=vgg16", "optim=adamw", "optim.lr=0.0003"],
        ["conv1", "conv2", "conv3", "conv4", "conv5", "classifier"],
    ),
}


@pytest.fixture(scope="module", params=list(CONVOLUTIONAL))
def convolutional_run(request, tmp_path_factory) -> tuple[Path, list[str]]:
    model, stages = CONVOLUTIONAL[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    return finished_run([*TINY, *model, "data.synthetic.train_size=1024"], folder), stages


def test_silencing_every_unit_of_a_stage_leaves_one_answer_for_every_image(convolutional_run):
    run_dir, stages = convolutional_run
    args = [
        "analysis.ablation.k_fractions=[0,0.5,1]",
        "analysis.ablation.random_draws=2",
        "analysis.snapshots=[2ep]",
    ]
    result = run_cli(["task=analyze", f"run={run_dir}", "analysis=ablation", *args], run_dir)
    assert result.returncode == 0, result.stderr
    run = vestige.load_run(run_dir)
    step = run.snapshots[-1].step
    accuracy = next(row["eval_acc"] for row in run.metrics if row["step"] == step)
    counts = run.info["dataset"]["eval_class_counts"]
    class_shares = [count / sum(counts) for count in counts]

    def one_answer(top1: float) -> bool:
        """Whether `top1` is what answering one class to every image scores."""
        return any(top1 == pytest.approx(share, abs=1e-6) for share in class_shares)

    assert not one_answer(accuracy)  # the trained network's answers depend on the image
    (folder,) = run_dir.glob("ablation-*")
    with open(folder / "ablation.csv", newline="") as handle:
        assert tuple(next(csv.reader(handle))) == COLUMNS
    rows = read_csv(folder / "ablation.csv")
    assert list(dict.fromkeys(r["stage"] for r in rows)) == stages
    assert [r["stage"] for r in read_csv(folder / "auc.csv")] == [s for s in stages for _ in (0, 1)]
    for stage in stages:
        curve = rows_where(rows, step=str(step), stage=stage)
        assert {(r["condition"], r["draw"], r["fraction"]) for r in curve} == {
            (condition, draw, fraction)
            for condition, draw in (("selective", "0"), ("random", "0"), ("random", "1"))
            for fraction in ("0", "0.5", "1")
        }
        for row in rows_where(curve, k="0"):  # the unablated network: as evaluated in training
            assert float(row["top1"]) == pytest.approx(accuracy, abs=1e-6)
        silenced = {float(row["top1"]) for row in rows_where(curve, fraction="1")}
        (everything,) = silenced  # selective or random, k = C silences the same units
        assert one_answer(everything)


def test_stages_of_a_cifar_resnet_or_vgg_come_from_its_units(convolutional_run):
    run_dir, stages = convolutional_run
    chosen = "analysis.ablation.stages=[layer4]"
    result = run_cli(["task=analyze", f"run={run_dir}", "analysis=ablation", chosen], run_dir)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: analysis.ablation.stages=['layer4'] is invalid: "
        f"choose among {', '.join(stages)}, or null for all"
    ]
