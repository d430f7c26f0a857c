"""`trainer.compile`: the compiled training step computes what the eager one computes, to float
tolerance on the CPU, with the selectivity regularizer's hooks in the graph and across a stop and
resume; evaluations and selectivity run the eager network, so they agree too."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from conftest import TINY, finished_run, run_cli, start_cli
from omegaconf import OmegaConf

from vestige.config import RegularizerConfig, ResNetConfig
from vestige.models import build_model
from vestige.selectivity.regularizer import SelectivityRegularizer

# 8 steps; a row and a resume state every 2; the regularizer's forward hooks on every stage
RUN = [
    *TINY,
    "trainer.epochs=1",
    "regularizer=selectivity",
    "regularizer.alpha=-5.0",
    "optim.lr=0.01",  # a calm trajectory: rounding differences stay rounding differences
    "checkpoint.snapshots=[0it,every 2it]",
    "checkpoint.resume_every=2it",
]
# Rounding differences between compiled and eager kernels grow over the steps (measured: 3e-5 at
# the first row, 1.5e-3 for R at step 6); the exactness of one step is the next test's
TOLERANCE = {"train_loss": 5e-3, "eval_loss": 5e-3, "reg/R": 5e-3, "si/mean": 2e-2}


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_compiled_training_stopped_and_resumed_matches_eager_training(tmp_path):
    (tmp_path / "eager").mkdir()
    eager = finished_run(RUN, tmp_path / "eager")
    run_dir = tmp_path / "compiled"
    args = [*RUN, "trainer.compile=default", f"hydra.run.dir={run_dir}"]
    process = start_cli(args, tmp_path)
    deadline = time.time() + 240
    # rows at steps 0, 2 and 4: the compiled step has run, and a resume state is on disk
    while process.poll() is None and time.time() < deadline:
        if (run_dir / "metrics.jsonl").exists() and len(rows(run_dir)) >= 3:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGINT, stderr
    stopped_at = len(rows(run_dir))
    assert stopped_at < 5, "the run ended before it was stopped"

    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"resumed {run_dir} at step" in result.stdout
    expected, got = rows(eager), rows(run_dir)
    assert [row["step"] for row in got] == [row["step"] for row in expected] == [0, 2, 4, 6, 8]
    for want, have in zip(expected, got, strict=True):
        for key, rtol in TOLERANCE.items():
            if want.get(key) is None:
                assert have.get(key) is None, (key, have["step"])
                continue
            np.testing.assert_allclose(have[key], want[key], rtol=rtol, err_msg=key)
    # the compiled run trained: its losses moved, and the regularizer's R was part of them
    assert got[-1]["train_loss"] != got[1]["train_loss"]
    assert all(row["reg/alpha"] == -5.0 for row in got[1:])


def test_an_unknown_compile_mode_is_one_line_before_any_work(tmp_path):
    result = run_cli([*TINY, "trainer.compile=fast"], tmp_path)
    assert result.returncode != 0
    assert "trainer.compile" in result.stderr and "'fast'" in result.stderr
    assert "reduce-overhead" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "outputs").exists()


def gradients(weights: dict[str, torch.Tensor], compiled: bool, alpha: float):
    """d(CE - alpha R)/d(weights) of one batch, R from the regularizer's forward hooks."""
    model = build_model(OmegaConf.structured(ResNetConfig(width=0.125)), 10, 3, 32, None)
    model.load_state_dict(weights)
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.randn(32, 3, 32, 32, generator=generator), torch.arange(32) % 10
    regularizer = SelectivityRegularizer(RegularizerConfig("selectivity", alpha=alpha), "clamp")
    model.train()
    with regularizer.attach(model, 8):
        forward = torch.compile(model) if compiled else model
        logits = forward(images)
        term, _ = regularizer.penalty(0, labels)
        (F.cross_entropy(logits, labels) + term).backward()
    return {name: p.grad for name, p in model.named_parameters()}


def test_one_compiled_step_with_the_regularizer_has_the_eager_gradients():
    torch.manual_seed(0)
    weights = build_model(OmegaConf.structured(ResNetConfig(width=0.125)), 10, 3, 32, None)
    weights = weights.state_dict()
    eager, compiled = gradients(weights, False, -5.0), gradients(weights, True, -5.0)
    for name, grad in eager.items():
        error = (compiled[name] - grad).norm() / grad.norm()
        assert error < 1e-4, (name, error.item())
    # the regularizer's term is in them: without it a regularized stage's gradient differs far
    # beyond rounding
    plain, first = gradients(weights, False, 0.0), "layer1.0.conv1.weight"
    assert (plain[first] - eager[first]).norm() > 1e-2 * eager[first].norm()
