"""Sweeps on a real SLURM cluster: one array job through the Hydra launcher, tabled at the end;
submit-and-exit; a point spread over two SLURM tasks as DDP ranks, through submitit or `srun`.

Like tests/test_slurm_local.py these need a cluster (`scripts/slurm_local.sh start`) and skip
without one, unless VESTIGE_REQUIRE_SLURM=1.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY
from test_resume import assert_same_run
from test_slurm_local import slurm_cluster  # noqa: F401  (the fixture that skips without SLURM)
from test_slurm_requeue import RUN, reference, slurm_env, wait_for_resume_state  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("slurm_cluster")]

# one CPU a task, so that the local cluster's 8 slots run 4 points side by side
LAUNCHER = [
    "hydra/launcher=slurm",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.timeout_min=10",
]
POINT = [*[o for o in TINY if not o.startswith("trainer.epochs")], "trainer.epochs=1"]
SWEEP_TIMEOUT_S = 360


def vestige(args: list[str], workdir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vestige.run", *args],
        cwd=workdir,
        env=slurm_env(),
        capture_output=True,
        text=True,
        timeout=SWEEP_TIMEOUT_S,
    )


def status(run: Path) -> str | None:
    info = run / "run.json"
    return json.loads(info.read_text()).get("status") if info.exists() else None


def test_four_point_sweep_is_one_array_job_and_is_tabled(workdir):
    result = vestige(["-m", *LAUNCHER, *POINT, "seed=0,1", "optim.lr=0.1,0.05"], workdir)
    assert result.returncode == 0, result.stderr
    (folder,) = (workdir / "outputs" / "sweeps").iterdir()
    # submitit keeps one folder per array task, <array job id>_<task>
    tasks = sorted(p.name for p in (folder / ".submitit").iterdir() if re.match(r"\d+_", p.name))
    array = tasks[0].split("_")[0]
    assert tasks == [f"{array}_{i}" for i in range(4)]
    with open(folder / "collect.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted((row["seed"], row["optim.lr"], row["status"]) for row in rows) == [
        ("0", "0.05", "complete"),
        ("0", "0.1", "complete"),
        ("1", "0.05", "complete"),
        ("1", "0.1", "complete"),
    ]
    runs = {Path(p["run"]) for p in json.loads((folder / "sweep.json").read_text())["points"]}
    assert runs == set((workdir / "outputs" / "runs").iterdir())


def test_submit_and_exit_returns_before_a_two_task_ddp_point_ends(workdir):
    args = ["-m", *LAUNCHER, "hydra.launcher.wait=false", "hydra.launcher.tasks_per_node=2"]
    result = vestige([*args, *POINT], workdir)
    assert result.returncode == 0, result.stderr
    job = re.search(r"SLURM array job (\d+)", result.stdout).group(1)
    queue = subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True)
    assert queue.stdout.strip(), f"job {job} ended before the command returned: {result.stdout}"
    (folder,) = (workdir / "outputs" / "sweeps").iterdir()
    assert not (folder / "collect.csv").exists()
    (point,) = json.loads((folder / "sweep.json").read_text())["points"]
    run = Path(point["run"])
    wait_for_status(run, "complete")
    assert json.loads((run / "run.json").read_text())["world_size"] == 2
    assert list((workdir / "outputs" / "runs").iterdir()) == [run]


def wait_for_status(run: Path, wanted: str) -> None:
    deadline = time.time() + SWEEP_TIMEOUT_S
    while status(run) != wanted:
        assert time.time() < deadline, f"{run.name} is {status(run)}, not {wanted}"
        time.sleep(1)


def test_warning_signal_requeues_a_launcher_job_which_resumes_in_the_same_directory(
    reference,  # noqa: F811  (the fixture imported above)
    workdir,
):
    result = vestige(["-m", *LAUNCHER, "hydra.launcher.wait=false", *RUN], workdir)
    assert result.returncode == 0, result.stderr
    job = re.search(r"SLURM array job (\d+)", result.stdout).group(1)
    wait_for_resume_state(workdir)
    signalled = subprocess.run(["scancel", "--signal=USR2", job], capture_output=True, text=True)
    assert signalled.returncode == 0, signalled.stderr
    (run,) = (workdir / "outputs" / "runs").iterdir()
    wait_for_status(run, "complete")
    log = (run / "log.txt").read_text()
    assert "resumed" in log and "continuing" in log, log
    assert_same_run(reference, run)


def test_two_srun_tasks_train_one_run_as_two_ranks(workdir):
    command = ["srun", "--ntasks=2", sys.executable, "-m", "vestige.run", *POINT]
    result = subprocess.run(
        command,
        cwd=workdir,
        env=slurm_env(),
        capture_output=True,
        text=True,
        timeout=SWEEP_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr
    (run,) = (workdir / "outputs" / "runs").iterdir()
    info = json.loads((run / "run.json").read_text())
    assert (info["status"], info["world_size"]) == ("complete", 2)
    assert result.stdout.count("run directory:") == 1  # rank 0 alone reports
