"""Shared helpers: run `vestige-run` for real, in a subprocess, on tiny configs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
# A run of a few seconds on real images (the robustness analysis needs pixels): 10 steps
FASHION_MNIST_TINY = [
    "data=fashion_mnist",
    f"data.root={FASHION_MNIST_ROOT}",
    "data.channels=1",
    "data.image_size=28",
    "data.train_limit=320",
    "data.eval_limit=60",
    "model.width=0.125",
    "trainer.batch_size=32",
    "trainer.epochs=1",
]
# A network and dataset small enough for a run of a few seconds on a 2-core CPU: the synthetic
# task without the default run's shared distractors, which a tiny run learns in a few steps, so
# that what a test compares (selectivity with and without the regularizer, accuracy) is large.
TINY = [
    "model.width=0.125",
    "data.synthetic.train_size=256",
    "data.synthetic.eval_size=64",
    "data.synthetic.distractors=0",
    "data.synthetic.prototype_scale=1.0",
    "data.synthetic.noise=0.6",
    "trainer.batch_size=32",
    "trainer.epochs=2",
    "trainer.log_every=4",
    "checkpoint.snapshots=[0it,every 1ep]",  # not the default run's dense first epoch
]


def run_cli(
    args: list[str], cwd: Path, timeout: float = 300, **popen: object
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "vestige.run", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )


def start_cli(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "vestige.run", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished_run(args: list[str], folder: Path) -> Path:
    """Train `args` to the end in `folder/run` and return that run directory."""
    result = run_cli([*args, f"hydra.run.dir={folder / 'run'}"], folder)
    assert result.returncode == 0, result.stderr
    return folder / "run"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty folder to run in; runs land in its outputs/."""
    return tmp_path
