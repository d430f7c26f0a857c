"""Every user mistake ends in one line naming the key, the value and the fix, before any work."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from vestige.errors import ConfigError
from vestige.preflight import preflight

MISTAKES = {
    "model=resnet19": "model='resnet19'",
    "optim.lr=-0.1": "optim.lr=-0.1",
    "trainer.epochs=0": "trainer.epochs=0",
    "trainer.batch_size=512 data.synthetic.train_size=256": "larger than the training split (256",
    "trainer.log_every=0": "trainer.log_every=0 is invalid: log every 1 or more steps",
    "data.synthetic.distractors=-1": "data.synthetic.distractors=-1 is invalid: use 0 or more",
    "trainer.batch_size=63 trainer.grad_accum=2": "trainer.batch_size=63",
    "data.root=/no/such/folder": "data.root='/no/such/folder'",
    "trainer.epocs=3": "trainer.epocs",
    "trainer.batch_size=abc": "trainer.batch_size",
    "+trainer.colour=red": "trainer.colour",
    "checkpoint.snapshots=[sometimes]": "checkpoint.snapshots[0]='sometimes'",
    "sched=cosine sched.warmup=5minutes": "sched.warmup='5minutes'",
    "data=cifar10": "data.root",
    "device=tpu": "device='tpu'",
    "hydra/launcher=slurm hydra.launcher.partiton=gpu": "hydra.launcher.partiton",
    "hydra/launcher=slurm hydra.launcher.nodes=two": "hydra.launcher.nodes",
    "hydra/launcher=slrum": "hydra/launcher='slrum'",
    "task=collect sweep=/no/such/sweep": "sweep='/no/such/sweep'",
    "analysis.linearity.images=5": "add analysis=<ablation | attention | linearity | robustness",
    # R needs each image's own class: Mixup/CutMix blend them (docs/science.md §3)
    "regularizer=selectivity data.mixup=0.8": "regularizer='selectivity' is invalid: R needs",
    "regularizer=selectivity data.cutmix=1.0": "set data.mixup=0 and data.cutmix=0",
    "data=fashion_mnist data.download=true": "vestige downloads only cifar10 and cifar100",
    f"outputs=/tmp/{'a' * 300}": "has 300 bytes, more than the 255 a file system allows",
    # a sweep preset without -m would silently be one of its points
    "experiment=regularization_windows": "is a sweep over regularizer.alpha, seed: run it with -m",
    "experiment=selectivity_sweep seed=1": "by also setting regularizer.alpha",
    # run= chooses what task=analyze or report reads, never which run trains
    "run=/no/such/run": "run='/no/such/run' is invalid: task=train does not take run=",
    # print-only commands are checked like real ones
    "trainer.epocs=3 --cfg job": "trainer.epocs",
    "+foo=1 --cfg job": "unknown config key 'foo'",
}


@pytest.mark.parametrize("overrides", list(MISTAKES))
def test_each_mistake_is_one_line_naming_the_key(overrides):
    with pytest.raises(ConfigError) as caught:
        preflight(overrides.split())
    message = str(caught.value)
    assert MISTAKES[overrides] in message
    assert "\n" not in message


def test_every_point_of_a_sweep_is_checked_before_any_runs():
    with pytest.raises(ConfigError, match="optim.lr=-0.2"):
        preflight(["-m", "optim.lr=0.1,-0.2"])


def test_batch_not_divisible_by_world_size_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ConfigError, match="world size"):
        preflight(["trainer.batch_size=64"])


def test_cli_mistake_exits_nonzero_with_one_line_and_leaves_no_directory(workdir: Path):
    result = run_cli(["optim.lr=-1"], workdir)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: optim.lr=-1.0 is invalid: use a positive learning rate such as 0.1"
    ]
    assert "Traceback" not in result.stdout + result.stderr
    assert not (workdir / "outputs").exists()


def test_bad_data_found_after_start_leaves_no_directory(workdir: Path):
    """A data root that exists but lacks the files is only seen when loading: still one line."""
    empty = workdir / "empty"
    empty.mkdir()
    result = run_cli(["data=fashion_mnist", f"data.root={empty}"], workdir)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and str(empty) in lines[0]
    assert (
        not any((workdir / "outputs" / "runs").glob("*"))
        if (workdir / "outputs").exists()
        else True
    )


def test_one_point_of_a_sweep_preset_runs_when_every_swept_key_is_set():
    preflight(["experiment=regularization_windows", "regularizer.alpha=-20.0", "seed=1"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_one_line_here_but_not_for_a_cluster_node(workdir: Path):
    result = run_cli(["device=cuda"], workdir)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: device='cuda' is invalid: this machine has no CUDA device; use device=cpu or auto"
    ]
    assert not (workdir / "outputs").exists()
    # a SLURM launcher runs the point on a GPU node: this machine's devices do not count
    preflight(["-m", "hydra/launcher=slurm", "device=cuda", "seed=0,1"])


def test_training_with_run_names_the_command_that_trained_it(tmp_path: Path):
    (tmp_path / "run.json").write_text(json.dumps({"command": ["/x/vestige-run", "seed=3"]}))
    with pytest.raises(ConfigError) as caught:
        preflight([f"run={tmp_path}"])
    assert str(caught.value).endswith("rerun its own command: vestige-run seed=3")


def test_a_sweep_is_previewed_with_its_points_and_run_directories(workdir: Path):
    result = run_cli(["-m", "seed=0,1", "trainer.epochs=2", "--cfg", "job"], workdir)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("2 point(s)") and "array job of 2 task(s)" in lines[0]
    points = [line.split("->") for line in lines[1:]]
    assert [p[0].split() for p in points] == [
        ["seed=0", "trainer.epochs=2"],
        ["seed=1", "trainer.epochs=2"],
    ]
    folders = [p[1].strip() for p in points]
    assert all(f.startswith("outputs/runs/resnet18-synthetic-") for f in folders)
    assert len(set(folders)) == 2
    assert not (workdir / "outputs").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_outputs_folder_is_one_line(tmp_path: Path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(ConfigError, match="is not a writable folder; choose outputs="):
        preflight([f"outputs={locked / 'outputs'}"])


def test_a_download_that_cannot_reach_its_server_is_one_line_and_leaves_no_run(workdir: Path):
    env = {**os.environ, "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}
    args = [sys.executable, "-m", "vestige.run", "data=cifar10", f"data.root={workdir}"]
    args += ["data.download=true", "trainer.epochs=1"]
    result = subprocess.run(args, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: data.download=true could not fetch CIFAR-10 into {workdir} (")
    runs = workdir / "outputs" / "runs"
    assert not runs.exists() or not any(runs.iterdir())
