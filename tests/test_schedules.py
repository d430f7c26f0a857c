import math

import pytest
import torch

from vestige.config import OptimConfig, SchedConfig
from vestige.train.optim import build_optimizer, lr_factor, parameter_groups


def test_step_schedule_divides_every_step_size():
    f = lr_factor(SchedConfig(name="step", step_size="2ep", gamma=0.1), 0.1, 10, 100)
    assert [f(i) for i in (0, 19, 20, 40)] == pytest.approx([1, 1, 0.1, 0.01])


def test_multistep_counts_passed_milestones():
    f = lr_factor(
        SchedConfig(name="multistep", milestones=["1ep", "30it"], gamma=0.5), 0.1, 10, 100
    )
    assert [f(i) for i in (9, 10, 29, 30)] == pytest.approx([1, 0.5, 0.5, 0.25])


def test_cosine_with_warmup_rises_then_falls_to_min_lr():
    cfg = SchedConfig(name="cosine", warmup="10it", warmup_start_factor=0.0, min_lr=0.01)
    f = lr_factor(cfg, 0.1, 10, 110)
    assert f(0) == 0 and f(5) == pytest.approx(0.5) and f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert f(110) == pytest.approx(0.1)


def test_biases_norms_and_listed_tokens_are_not_decayed():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    model.no_weight_decay = lambda: {"0.weight"}
    decay, no_decay = parameter_groups(model, 0.05, exclusions=True)
    assert decay["params"] == [] and len(no_decay["params"]) == 4
    assert no_decay["weight_decay"] == 0.0
    (everything,) = parameter_groups(model, 0.05, exclusions=False)
    assert len(everything["params"]) == 4


def test_adamw_is_built_with_its_betas():
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(OptimConfig(name="adamw", lr=1e-3, betas=[0.8, 0.9]), model)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.param_groups[0]["betas"] == (0.8, 0.9)
