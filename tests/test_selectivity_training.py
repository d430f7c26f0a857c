"""The selectivity regularizer in training: loss = CE - alpha * R (docs/science.md §3)."""

from __future__ import annotations

import json
import shutil
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, run_cli

from vestige.config import RegularizerConfig, ResNetConfig, SelectivityConfig
from vestige.errors import ConfigError
from vestige.models import build_model
from vestige.preflight import preflight
from vestige.selectivity.penalty import selectivity_penalty
from vestige.selectivity.regularizer import SelectivityRegularizer
from vestige.selectivity.units import measured_layers, record_unit_activations

IPE = 4
NEGATIVE = SelectivityConfig().negative  # the selectivity config's treatment of GELU units


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ResNetConfig(width=0.125), num_classes=7, in_channels=3, image_size=16)


def batch(size: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(size, 3, 16, 16, generator=generator), torch.arange(size) % 5


def test_term_is_minus_alpha_times_the_penalty_of_the_same_batch():
    model, (images, targets) = tiny_model(), batch()
    regularizer = SelectivityRegularizer(
        RegularizerConfig("selectivity", alpha="-20@1ep"), NEGATIVE
    )
    layers = measured_layers(model)
    with (
        regularizer.attach(model, IPE),
        record_unit_activations(model, layers, NEGATIVE, keep_grad=True) as acts,
    ):
        model(images)
        term, logs = regularizer.penalty(IPE, targets)
    cfg = RegularizerConfig()
    expected = selectivity_penalty(acts, targets, layers, 7, cfg.stages, cfg.eps, cfg.sync)
    assert term.item() == pytest.approx(20.0 * expected.item(), rel=1e-6)
    assert term.requires_grad
    assert logs["reg/alpha"].item() == -20.0
    assert logs["reg/R"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert not logs["reg/R"].requires_grad


def test_at_alpha_zero_the_term_is_a_constant_zero_and_r_is_still_logged():
    model, (images, targets) = tiny_model(), batch()
    regularizer = SelectivityRegularizer(
        RegularizerConfig("selectivity", alpha="-20@1ep"), NEGATIVE
    )
    with regularizer.attach(model, IPE):
        model(images)
        term, logs = regularizer.penalty(IPE - 1, targets)
    assert term.item() == 0.0 and term.grad_fn is None
    assert logs["reg/alpha"].item() == 0.0 and logs["reg/R"].item() > 0.0


def train_three_steps(regularizer: SelectivityRegularizer | None) -> list[torch.Tensor]:
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    images, targets = batch()
    with regularizer.attach(model, IPE) if regularizer else nullcontext():
        for step in range(3):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(images[step::3]), targets[step::3])
            if regularizer:
                loss = loss + regularizer.penalty(step, targets[step::3])[0]
            loss.backward()
            optimizer.step()
    return [p.detach() for p in model.parameters()]


def test_before_its_window_opens_the_regularizer_leaves_training_bitwise_unchanged():
    plain = train_three_steps(None)
    hooked = train_three_steps(
        SelectivityRegularizer(RegularizerConfig("selectivity", alpha="-20@1ep"), NEGATIVE)
    )
    assert all(torch.equal(a, b) for a, b in zip(plain, hooked, strict=True))


def test_hooks_are_removed_when_training_ends():
    model = tiny_model()
    regularizer = SelectivityRegularizer(RegularizerConfig("selectivity"), NEGATIVE)
    with regularizer.attach(model, IPE):
        pass
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_unknown_stages_are_refused_when_the_model_is_known():
    regularizer = SelectivityRegularizer(
        RegularizerConfig("selectivity", stages=["layer9"]), NEGATIVE
    )
    with pytest.raises(ConfigError, match="regularizer.stages=.*layer9"):
        with regularizer.attach(tiny_model(), IPE):
            pass


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ("regularizer.alpha=-20", "regularizer.alpha=-20 is invalid: regularizer=none"),
        ("regularizer=selectivity regularizer.alpha=-20@5", "regularizer.alpha='-20@5'"),
        ("regularizer=selectivity regularizer.eps=0", "regularizer.eps=0.0"),
        ("regularizer=selectivity regularizer.stages=[]", "regularizer.stages=[]"),
    ],
)
def test_config_mistakes_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        preflight(overrides.split())


def test_windows_written_on_the_command_line_compose_and_validate():
    preflight(
        [
            "regularizer=selectivity",
            "regularizer.alpha=[{from:0ep,until:5ep,alpha:0},{from:5ep,ramp:1ep,alpha:-20}]",
        ]
    )


# -- real runs --------------------------------------------------------------------------------

RUN = [*TINY, "trainer.deterministic=true", "regularizer=selectivity"]


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def switched(tmp_path_factory) -> tuple[list[str], Path]:
    """alpha 0 in epoch 0, then -20: the command and its finished run directory."""
    folder = tmp_path_factory.mktemp("switched")
    args = [*RUN, "regularizer.alpha=-20@1ep", f"hydra.run.dir={folder / 'run'}"]
    result = run_cli(args, folder)
    assert result.returncode == 0, result.stderr
    return args, folder / "run"


def test_metrics_rows_carry_the_scheduled_alpha_and_r(switched):
    _, run_dir = switched
    first, epoch1, epoch2 = rows(run_dir)
    assert "reg/alpha" not in first  # the evaluation at step 0 follows no training step
    assert epoch1["reg/alpha"] == 0.0 and epoch2["reg/alpha"] == -20.0
    assert 0.0 < epoch2["reg/R"] < 1.0 and 0.0 < epoch1["reg/R"] < 1.0


def test_a_resumed_run_continues_the_schedule_at_its_absolute_step(switched, tmp_path):
    """Resume from the epoch-1 state (the final state removed): epoch 2 is recomputed with alpha
    -20, not a schedule restarted at 0, and the run ends exactly as the uninterrupted one."""
    args, run_dir = switched
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    for final in (copy / "checkpoints" / "resume").glob("step_00000016.*"):
        final.unlink()
    info = json.loads((copy / "run.json").read_text())
    (copy / "run.json").write_text(json.dumps({**info, "status": "running"}))
    result = run_cli([*args[:-1], f"hydra.run.dir={copy}"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "resumed" in result.stdout + result.stderr
    measured = ("step", "reg/alpha", "reg/R", "train_loss", "si/mean")
    assert [{k: r.get(k) for k in measured} for r in rows(copy)] == [
        {k: r.get(k) for k in measured} for r in rows(run_dir)
    ]


def test_alpha_minus_20_ends_with_lower_selectivity_than_alpha_0(switched, tmp_path):
    result = run_cli([*RUN, "regularizer.alpha=0", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert result.returncode == 0, result.stderr
    baseline, regularized = rows(tmp_path / "run")[-1], rows(switched[1])[-1]
    assert baseline["reg/alpha"] == 0.0
    assert regularized["si/mean"] < baseline["si/mean"] - 0.03
    assert regularized["reg/R"] < baseline["reg/R"]
