"""DDP with real processes: torchrun, two ranks, gloo on the CPU (issue 6; issue 3's DDP check).

A run on two ranks is the run on one: one run directory written by rank 0 alone, the same
metrics on every rank, evaluation and selectivity sharded over ranks equal to one process
measuring the saved snapshot, and, for a model without BatchNorm, the same weights as one
process taking the same global batches.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, run_cli
from omegaconf import OmegaConf

from vestige.data import build_datasets
from vestige.models import build_model
from vestige.rundir import RunDir, load_weights, read_manifest, snapshot_path
from vestige.selectivity.index import measure_selectivity
from vestige.selectivity.units import measured_layers
from vestige.train.batches import eval_loader
from vestige.train.evaluate import evaluate

pytestmark = pytest.mark.integration

WORKER = Path(__file__).with_name("ddp_worker.py")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
# A resume state every 2 steps, all kept, to restart from one in the middle of an epoch.
RESNET = [
    *TINY,
    "trainer.deterministic=true",
    "checkpoint.resume_every=2it",
    "checkpoint.keep_resume=99",
]
# 63 evaluation images: the two ranks' shards differ in size (31 and 32), in batches of 8.
UNEVEN_EVAL = ["data.synthetic.eval_size=63", "trainer.eval_batch_size=8"]
# A ViT without BatchNorm, dropout or drop-path: its trajectory depends only on the global batch.
NO_BATCHNORM = [
    "model=deit_ti_small",
    "model.depth=2",
    "model.embed_dim=32",
    "model.num_heads=2",
    "model.drop_path=0.0",
]
# Not SI: a GELU unit's class means can sum to about 0, where SI amplifies float noise.
MEASURED = ("train_loss", "train_acc", "eval_loss", "eval_acc", "eval_acc5")


def torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*TORCHRUN, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def rows_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_weights(run_dir / read_manifest(RunDir(run_dir))[-1]["path"])


def without_timing(row: dict) -> dict:
    """A metrics row less its throughput, which each rank measures on its own clock."""
    return {key: value for key, value in row.items() if key != "img_per_s"}


def files_under(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


def assert_rows_close(rows: list[dict], expected: list[dict]) -> None:
    assert [row["step"] for row in rows] == [row["step"] for row in expected]
    for row, reference in zip(rows, expected, strict=True):
        for key in MEASURED:
            value = reference[key]
            close = value if value is None else pytest.approx(value, rel=1e-4, abs=1e-5)
            assert row[key] == close, (row["step"], key)


@pytest.fixture(scope="module")
def resnet_run(tmp_path_factory) -> dict:
    """A ResNet (BatchNorm) run on 2 ranks through `vestige-run`, each rank's writes recorded."""
    cwd = tmp_path_factory.mktemp("resnet")
    records = tmp_path_factory.mktemp("records")
    run_dir = cwd / "run"
    result = torchrun(
        [str(WORKER), str(records), str(cwd), *RESNET, *UNEVEN_EVAL, f"hydra.run.dir={run_dir}"],
        cwd,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((records / f"rank{r}.json").read_text()) for r in range(2)]
    return {"cwd": cwd, "run": run_dir, "ranks": ranks}


@pytest.fixture(scope="module")
def deit_runs(tmp_path_factory) -> tuple[Path, Path]:
    """The same BN-free run on 1 rank and, through torchrun's `-m vestige.run`, on 2 ranks with
    2 micro-batches per rank: both take global batches of 32."""
    cwd = tmp_path_factory.mktemp("deit")
    single, double = cwd / "one_rank", cwd / "two_ranks"
    tiny = [arg for arg in TINY if not arg.startswith("model.")]
    args = [*tiny, "data.synthetic.train_size=128", *NO_BATCHNORM, *UNEVEN_EVAL]
    result = run_cli([*args, f"hydra.run.dir={single}"], cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    result = torchrun(
        ["-m", "vestige.run", *args, "trainer.grad_accum=2", f"hydra.run.dir={double}"], cwd
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(path.name for path in cwd.iterdir()) == ["one_rank", "two_ranks"]
    return single, double


def test_two_rank_run_writes_one_run_directory_from_rank_0_only(resnet_run):
    run_dir, cwd = resnet_run["run"], resnet_run["cwd"]
    assert files_under(cwd) == {"run"} | {f"run/{name}" for name in files_under(run_dir)}
    assert {"config.yaml", "run.json", "metrics.jsonl", "log.txt"} <= files_under(run_dir)
    rank0, rank1 = (rank["writes"] for rank in resnet_run["ranks"])
    assert any(path.endswith("metrics.jsonl") for _, path in rank0)
    # Hydra itself makes the (shared) run directory on every rank; nothing else comes from rank 1
    assert {tuple(write) for write in rank1} <= {("os.mkdir", str(run_dir))}
    assert json.loads((run_dir / "run.json").read_text())["world_size"] == 2


def test_metrics_are_written_once_and_are_the_same_on_each_rank(resnet_run):
    written = rows_of(resnet_run["run"])
    assert [row["step"] for row in written] == [0, 8, 16]
    rank0, rank1 = (rank["rows"] for rank in resnet_run["ranks"])
    for row0, row1, row in zip(rank0, rank1, written, strict=True):
        assert without_timing(row0) == without_timing(row1) == without_timing(row)


def test_two_rank_run_resumed_mid_epoch_ends_like_the_uninterrupted_one(resnet_run, tmp_path):
    """Restart from the state at step 6, as after a kill there: rank 1's running sums count too."""
    run_dir = tmp_path / "run"
    shutil.copytree(resnet_run["run"], run_dir)
    for path in (run_dir / "checkpoints" / "resume").iterdir():
        if int(path.stem.removeprefix("step_")) > 6:
            path.unlink()
    RunDir(run_dir).update_info(status="running")
    result = torchrun(
        ["-m", "vestige.run", *RESNET, *UNEVEN_EVAL, f"hydra.run.dir={run_dir}"], tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resumed {run_dir} at step 6" in (run_dir / "log.txt").read_text()
    resumed, uninterrupted = rows_of(run_dir), rows_of(resnet_run["run"])
    assert [without_timing(row) for row in resumed] == [
        without_timing(row) for row in uninterrupted
    ]
    weights, expected = final_weights(run_dir), final_weights(resnet_run["run"])
    assert all(torch.equal(weights[key], expected[key]) for key in expected)


def test_stochastic_depth_resumes_on_two_ranks_with_each_ranks_own_random_stream(tmp_path):
    """Each rank draws its own drop-path masks; a resume restores every rank's stream, so a
    run restarted at step 6 ends bitwise like the uninterrupted one."""
    tiny = [arg for arg in RESNET if not arg.startswith("model.")]
    args = [*tiny, *NO_BATCHNORM[:-1], "model.drop_path=0.5"]
    uninterrupted, resumed = tmp_path / "uninterrupted", tmp_path / "resumed"
    result = torchrun(["-m", "vestige.run", *args, f"hydra.run.dir={uninterrupted}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    shutil.copytree(uninterrupted, resumed)
    for path in (resumed / "checkpoints" / "resume").iterdir():
        if int(path.stem.removeprefix("step_")) > 6:
            path.unlink()
    RunDir(resumed).update_info(status="running")
    result = torchrun(["-m", "vestige.run", *args, f"hydra.run.dir={resumed}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resumed {resumed} at step 6" in (resumed / "log.txt").read_text()
    weights, expected = final_weights(resumed), final_weights(uninterrupted)
    assert all(torch.equal(weights[key], expected[key]) for key in expected)


def single_process_measurement(run_dir: Path, step: int) -> tuple[dict, dict]:
    """Evaluation and selectivity of the run's snapshot at `step`, by one process, whole split."""
    cfg = OmegaConf.load(run_dir / "config.yaml")
    splits = build_datasets(cfg.data, 0)
    model = build_model(cfg.model, splits.num_classes, splits.channels, splits.image_size)
    model.load_state_dict(load_weights(snapshot_path(RunDir(run_dir), step)))
    loader = eval_loader(splits.eval, 16, 0, 1, 0, torch.device("cpu"))
    metrics = evaluate(model, loader, torch.device("cpu"), [])
    layers = measured_layers(model, cfg.selectivity.units)
    result = measure_selectivity(
        model, loader, layers, splits.num_classes, torch.device("cpu"), cfg.selectivity
    )
    return metrics, result.unit_table()


def test_rank_sharded_evaluation_equals_one_process_evaluating_the_snapshot(resnet_run):
    """63 images over 2 ranks, and BatchNorm running statistics that each rank updated itself."""
    for row in rows_of(resnet_run["run"]):
        metrics, _ = single_process_measurement(resnet_run["run"], row["step"])
        for key, value in metrics.items():
            assert row[key] == pytest.approx(value, rel=1e-5, abs=1e-6), (row["step"], key)


def test_two_rank_selectivity_equals_single_process_measurement(resnet_run):
    run_dir = resnet_run["run"]
    units = np.load(run_dir / "selectivity/units.npz")
    for row in rows_of(run_dir):
        _, table = single_process_measurement(run_dir, row["step"])
        measured = np.load(run_dir / f"selectivity/step_{row['step']:08d}.npz")
        assert len(measured["si"]) == len(units["channel"])
        np.testing.assert_allclose(measured["si"], table["si"], rtol=1e-5, atol=1e-6)
        assert (measured["preferred_class"] == table["preferred_class"]).all()


def test_model_without_batchnorm_on_two_ranks_matches_one_rank(deit_runs):
    single, double = deit_runs
    assert_rows_close(rows_of(double), rows_of(single))
    weights_1, weights_2 = final_weights(single), final_weights(double)
    assert weights_1.keys() == weights_2.keys()
    for key in weights_1:
        torch.testing.assert_close(weights_2[key], weights_1[key], rtol=1e-4, atol=1e-5)


def test_batch_not_divisible_by_world_size_fails_before_any_work(tmp_path):
    result = torchrun(["-m", "vestige.run", *TINY, "trainer.batch_size=33"], tmp_path)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: trainer.batch_size=33 is invalid: must be divisible by world size x grad_accum = 2"
    ]
    assert list(tmp_path.iterdir()) == []
