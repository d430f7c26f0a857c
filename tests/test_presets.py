"""The paper's experiments as presets: each composes at both scales (the same keys a user would
type), shares its training where it should, and runs end to end at laptop scale, shrunk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from vestige.models import build_model
from vestige.rundir import run_name
from vestige.tasks.checks import check
from vestige.tasks.compose import compose_point, expand_sweep, with_preset_sweep
from vestige.train.optim import build_optimizer

PRESETS = [p.stem for p in (Path(__file__).parents[1] / "conf" / "experiment").glob("*.yaml")]
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
# (model, data, epochs, points of the sweep) each preset gives at each scale
EXPECTED = {
    ("selectivity_dynamics", "laptop"): ("resnet18", "fashion_mnist", 5, 1),
    ("selectivity_dynamics", "paper"): ("resnet50", "imagenet", 90, 1),
    ("ablation", "paper"): ("resnet50", "imagenet", 90, 1),
    ("linear_regime", "paper"): ("resnet50", "imagenet", 90, 1),
    ("regularization_windows", "laptop"): ("resnet18", "fashion_mnist", 5, 12),
    ("regularization_windows", "paper"): ("resnet50", "imagenet", 90, 30),
    ("selectivity_sweep", "laptop"): ("resnet18", "fashion_mnist", 5, 15),
    ("selectivity_sweep", "paper"): ("resnet18", "tiny_imagenet", 90, 35),
    ("convit_vs_deit", "laptop"): ("convit_ti_small", "fashion_mnist", 3, 6),
    ("convit_vs_deit", "paper"): ("convit_ti", "imagenet", 300, 2),
    ("selectivity_sweep_resnet20", "laptop"): ("resnet20", "fashion_mnist", 5, 15),
    ("selectivity_sweep_resnet20", "paper"): ("resnet20", "cifar10", 182, 35),
    ("selectivity_dynamics_vgg16", "laptop"): ("vgg16", "fashion_mnist", 5, 1),
    ("selectivity_dynamics_vgg16", "paper"): ("vgg16", "cifar10", 50, 1),
    ("tcnn_early_phase", "laptop"): ("tcnn", "fashion_mnist", 2, 1),
    ("tcnn_early_phase", "paper"): ("tcnn", "imagenet", 50, 1),
}


def sweep_of(overrides: list[str]) -> list[list[str]]:
    params = compose_point(overrides, with_hydra=True).hydra.sweeper.params
    return expand_sweep(with_preset_sweep(overrides, params))


@pytest.mark.parametrize("scale", ["laptop", "paper"])
@pytest.mark.parametrize("preset", [p for p in PRESETS if p != "deit_recipe"])
def test_every_preset_composes_and_validates_at_both_scales(preset, scale, tmp_path):
    overrides = [f"experiment={preset}", f"scale={scale}", f"data.root={tmp_path}"]
    points = sweep_of(overrides)
    for point in points:
        check(compose_point(point))
    cfg = compose_point(points[0])
    expected = EXPECTED.get((preset, scale), EXPECTED[("selectivity_dynamics", scale)])
    assert (cfg.model.name, cfg.data.name, cfg.trainer.epochs, len(points)) == expected


# The presets of Ranadive et al. and Leavitt & Morcos: the public code's
# SGD(model.parameters(), weight_decay=1e-4) decays BatchNorm's weights and biases too.
SELECTIVITY_PRESETS = (
    "selectivity_dynamics",
    "regularization_windows",
    "selectivity_sweep",
    "selectivity_sweep_resnet20",
)


def decay_of_each_parameter(cfg) -> tuple[torch.nn.Module, dict[int, float]]:
    model = build_model(cfg.model, cfg.data.num_classes, cfg.data.channels, cfg.data.image_size)
    optimizer = build_optimizer(cfg.optim, model)
    return model, {
        id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]
    }


@pytest.mark.parametrize("scale", ["laptop", "paper"])
@pytest.mark.parametrize("preset", SELECTIVITY_PRESETS)
def test_selectivity_presets_decay_every_parameter_and_train_in_fp32(preset, scale, tmp_path):
    overrides = [f"experiment={preset}", f"scale={scale}", f"data.root={tmp_path}"]
    cfg = compose_point(sweep_of(overrides)[0])
    model, decay = decay_of_each_parameter(cfg)
    norms = [
        p for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()
    ]
    assert norms and len(decay) == len(list(model.parameters()))
    assert {decay[id(p)] for p in model.parameters()} == {1e-4}
    assert cfg.trainer.precision == "fp32"


def test_the_deit_recipe_keeps_its_published_weight_decay_exclusions(tmp_path):
    cfg = compose_point(["experiment=deit_recipe", "model=deit_ti_small", f"data.root={tmp_path}"])
    model, decay = decay_of_each_parameter(cfg)
    for name, parameter in model.named_parameters():
        excluded = parameter.ndim <= 1 or name in ("pos_embed", "cls_token")
        assert decay[id(parameter)] == (0.0 if excluded else 0.05), name


CONF = Path(__file__).parents[1] / "conf"
REPRODUCTION = Path(__file__).parents[1] / "docs" / "reproduction.md"


def known_differences(path: Path) -> tuple[list[str], list[str]]:
    """The comment block that ends a recipe file, as (its heading, its items)."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# Known differences"))
    block = [line.removeprefix("#").strip() for line in lines[start:]]
    assert all(line.startswith("#") for line in lines[start:]), "the block ends the file"
    items: list[str] = []
    for line in block[1:]:
        if line.startswith("- "):
            items.append(line[2:])
        else:
            items[-1] += " " + line
    return block[:1], items


@pytest.mark.parametrize(
    "path", sorted((CONF / "recipe_scale").glob("*.yaml")), ids=lambda p: p.stem
)
def test_every_recipe_ends_with_its_known_differences_and_the_docs_gather_them(path):
    heading, items = known_differences(path)
    page = " ".join(REPRODUCTION.read_text().split())
    assert f"`{path.name}`" in page
    assert items or "those of" in heading[0], "list the differences, or inherit a parent's"
    for item in items:
        assert " ".join(item.split()) in page, item


def test_claims_1_to_3_share_one_training_run():
    presets = ("selectivity_dynamics", "ablation", "linear_regime")
    names = {run_name(compose_point([f"experiment={preset}"])) for preset in presets}
    assert len(names) == 1


def test_an_unknown_scale_is_one_line(workdir):
    result = run_cli(["experiment=ablation", "scale=desktop"], workdir)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: scale='desktop' is invalid: choose one of laptop, paper"
    ]


# Laptop presets shrunk to seconds: fewer images, a narrower network, 2 epochs, one seed.
SHRUNK = [
    "data.train_limit=256",
    "data.eval_limit=64",
    "trainer.batch_size=32",
    "trainer.epochs=2",
    "trainer.progress=plain",
]
RESNET = ["model.width=0.125"]
pytestmark_data = pytest.mark.skipif(
    not FASHION_MNIST.is_dir(), reason="needs Fashion-MNIST (apt-get install dataset-fashion-mnist)"
)


def single_run(workdir: Path) -> Path:
    (run,) = (workdir / "outputs" / "runs").iterdir()
    return run


@pytest.mark.integration
@pytest.mark.slow
@pytestmark_data
def test_laptop_claims_1_to_3_train_once_then_analyse(workdir):
    shrunk = [*SHRUNK, *RESNET]
    trained = run_cli(["experiment=selectivity_dynamics", *shrunk], workdir)
    assert trained.returncode == 0, trained.stderr
    smaller = {
        "ablation": ["analysis.ablation.k_fractions=[0,0.5,1]", "analysis.ablation.random_draws=2"],
        "linear_regime": ["analysis.linearity.classifier.epochs=1"],
    }
    for preset, analysis in smaller.items():
        again = run_cli([f"experiment={preset}", *shrunk], workdir)
        assert "already complete" in again.stdout, again.stderr
        result = run_cli([f"experiment={preset}", "task=analyze", *shrunk, *analysis], workdir)
        assert result.returncode == 0, result.stderr
    run = single_run(workdir)
    assert json.loads((run / "run.json").read_text())["status"] == "complete"
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) >= 6 and steps[0] == 0  # step 0, log-spaced steps in epoch 1, each epoch
    assert any(run.glob("ablation*/auc.csv"))  # non-default settings: ablation-<hash>/
    assert any((run / "linearity").glob("*.csv"))
    report = run_cli(["experiment=ablation", "task=report", *shrunk, *smaller["ablation"]], workdir)
    assert report.returncode == 0, report.stderr
    drawn = {png.stem for png in (run / "report").glob("*.png")}
    assert {"selectivity", "ablation_curves", "ablation_auc", "linearity"} <= drawn, drawn
    assert "<h2>Ablation</h2>" in (run / "report" / "index.html").read_text()


@pytest.mark.integration
@pytest.mark.slow
@pytestmark_data
@pytest.mark.parametrize(
    "preset, extra, runs",
    [
        ("regularization_windows", [*RESNET, "seed=0"], 4),
        ("selectivity_sweep", [*RESNET, "seed=0", "regularizer.alpha=-1.0,1.0"], 2),
        ("convit_vs_deit", ["model.embed_dim=48", "seed=0"], 2),
    ],
)
def test_laptop_sweep_presets_run_every_point_and_table_them(preset, extra, runs, workdir):
    # 4 short runs take about 2 minutes on an idle 2-core CPU: room for twice the load and more
    result = run_cli(["-m", f"experiment={preset}", *SHRUNK, *extra], workdir, timeout=900)
    assert result.returncode == 0, result.stderr
    (folder,) = (workdir / "outputs" / "sweeps").iterdir()
    rows = (folder / "collect.csv").read_text().splitlines()[1:]
    assert len(rows) == runs and all(",complete," in row for row in rows), rows
    logs = [run / "log.txt" for run in (workdir / "outputs" / "runs").iterdir()]
    forked = sum("forked from" in log.read_text() for log in logs)
    # the windows sweep's "-20 from epoch 1" starts from its baseline's state at epoch 1
    assert forked == (1 if preset == "regularization_windows" else 0)
