"""A training that SLURM stops mid-way (its warning signal, or a plain `scontrol requeue`) comes
back in the same run directory and ends with the weights of an uninterrupted run; the sbatch
array template runs one training per line of overrides.

Like tests/test_slurm_local.py these need a cluster (`scripts/slurm_local.sh start`) and skip
without one, unless VESTIGE_REQUIRE_SLURM=1.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY, finished_run, run_cli, start_cli
from test_resume import assert_same_run
from test_slurm_local import slurm_cluster  # noqa: F401  (the fixture that skips without SLURM)

pytestmark = pytest.mark.integration

TEMPLATE = Path(__file__).resolve().parents[1] / "scripts" / "sbatch_array.sh"
# 64 steps (about 20 s on 2 CPU cores) with a resume state every 2: long enough to be stopped
# well before the end.
RUN = [
    *TINY,
    "data.synthetic.train_size=1024",
    "trainer.deterministic=true",
    "checkpoint.resume_every=2it",
    "checkpoint.snapshots=[0it,every 1ep]",
]
# the training takes ~20 s on an idle machine; the deadline leaves room for twice the load and
# counts from when the job may run: a requeued job is held until its begin time (~2 min later)
JOB_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The same training, uninterrupted and outside SLURM."""
    return finished_run(RUN, tmp_path_factory.mktemp("reference"))


def slurm_env() -> dict[str, str]:
    """This interpreter's vestige, for the job: sbatch passes the environment on."""
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PYTHONUNBUFFERED": "1",
        "VESTIGE_RUN": str(Path(bin_dir) / "vestige-run"),
    }


def sbatch(workdir: Path, *args: str) -> str:
    result = subprocess.run(
        ["sbatch", "--parsable", f"--chdir={workdir}", *args],
        capture_output=True,
        text=True,
        timeout=20,
        env=slurm_env(),
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().split(";")[0]


def job_fields(job_id: str) -> list[dict[str, str]]:
    """`scontrol show job` as key=value records, one per job (an array gives one per task)."""
    shown = subprocess.run(
        ["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=20
    )
    assert shown.returncode == 0, shown.stderr
    return [dict(re.findall(r"(\w+)=(\S*)", record)) for record in shown.stdout.split("\n\n")]


def wait_for_jobs(job_id: str) -> list[dict[str, str]]:
    """Every task's record once all have ended; a test that times out cancels its job. While
    SLURM holds a task until its begin time (after a requeue) the deadline moves with the clock,
    so it counts from when the job may run again."""
    deadline = time.time() + JOB_TIMEOUT_S
    while time.time() < deadline:
        records = [r for r in job_fields(job_id) if r]
        if all(r["JobState"] in ("COMPLETED", "FAILED", "CANCELLED") for r in records):
            return records
        if any(r.get("Reason") == "BeginTime" for r in records):
            deadline = time.time() + JOB_TIMEOUT_S
        time.sleep(1)
    subprocess.run(["scancel", job_id], timeout=20)
    pytest.fail(f"job {job_id} did not end within {JOB_TIMEOUT_S} s: {job_fields(job_id)}")


def only_run_dir(workdir: Path) -> Path:
    runs = list((workdir / "outputs" / "runs").iterdir())
    assert len(runs) == 1, f"expected one run directory, found {runs}"
    return runs[0]


def wait_for_resume_state(workdir: Path) -> None:
    """Until the job's training has written its first resume state (it is mid-way then)."""
    deadline = time.time() + JOB_TIMEOUT_S
    while not any(workdir.glob("outputs/runs/*/checkpoints/resume/*.pt")):
        assert time.time() < deadline, "the job wrote no resume state"
        time.sleep(0.1)


def assert_resumed_once_and_equal(record: dict[str, str], run_dir: Path, reference: Path) -> None:
    assert record["JobState"] == "COMPLETED" and record["ExitCode"] == "0:0", record
    assert record["Restarts"] == "1", record
    assert json.loads((run_dir / "run.json").read_text())["status"] == "complete"
    assert "resumed" in (run_dir / "log.txt").read_text()
    assert_same_run(reference, run_dir)


@pytest.mark.usefixtures("slurm_cluster")
def test_warning_signal_saves_requeues_and_the_job_resumes_in_the_same_directory(
    reference, workdir
):
    overrides = workdir / "overrides.txt"
    overrides.write_text(shlex.join(RUN) + "\n")
    job = sbatch(workdir, "--array=0", str(TEMPLATE), str(overrides))
    wait_for_resume_state(workdir)
    signalled = subprocess.run(
        ["scancel", "--signal=USR2", "--batch", job], capture_output=True, text=True, timeout=20
    )
    assert signalled.returncode == 0, signalled.stderr
    (record,) = wait_for_jobs(job)
    run_dir = only_run_dir(workdir)
    assert_resumed_once_and_equal(record, run_dir, reference)
    log = (workdir / f"slurm-{job}_0.out").read_text()
    assert "SIGUSR2: stopped at step" in log and "the job is requeued" in log, log


@pytest.mark.usefixtures("slurm_cluster")
def test_plain_scontrol_requeue_resumes_in_the_same_directory(reference, workdir):
    command = shlex.join([sys.executable, "-m", "vestige.run", *RUN])
    job = sbatch(
        workdir,
        "--requeue",
        "--open-mode=append",
        f"--output={workdir / 'job.out'}",
        f"--wrap=exec {command}",
    )
    wait_for_resume_state(workdir)
    requeued = subprocess.run(
        ["scontrol", "requeue", job], capture_output=True, text=True, timeout=20
    )
    assert requeued.returncode == 0, requeued.stderr
    (record,) = wait_for_jobs(job)
    assert_resumed_once_and_equal(record, only_run_dir(workdir), reference)
    assert "SIGTERM: stopped at step" in (workdir / "job.out").read_text()


@pytest.mark.usefixtures("slurm_cluster")
def test_array_template_runs_each_line_into_its_own_run_directory(workdir):
    lines = [shlex.join([*TINY, f"seed={seed}"]) for seed in (0, 1)]
    overrides = workdir / "overrides.txt"
    overrides.write_text("\n".join(lines) + "\n")
    job = sbatch(workdir, "--array=0-1", str(TEMPLATE), str(overrides))
    records = wait_for_jobs(job)
    assert [r["JobState"] for r in records] == ["COMPLETED", "COMPLETED"], records
    runs = sorted((workdir / "outputs" / "runs").iterdir())
    assert len(runs) == 2
    seeds = sorted(json.loads((run / "run.json").read_text())["seed"] for run in runs)
    assert seeds == [0, 1]
    for run in runs:
        assert json.loads((run / "run.json").read_text())["status"] == "complete"


def test_warning_signal_outside_slurm_saves_and_the_same_command_continues(reference, workdir):
    run_dir = workdir / "run"
    args = [*RUN, f"hydra.run.dir={run_dir}"]
    process = start_cli(args, workdir)
    deadline = time.time() + 120
    while not any((run_dir / "checkpoints" / "resume").glob("*.pt")):
        assert process.poll() is None and time.time() < deadline, "no resume state was written"
        time.sleep(0.05)
    process.send_signal(signal.SIGUSR2)
    stdout, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGUSR2, stdout
    assert "the same command continues" in stdout
    assert json.loads((run_dir / "run.json").read_text())["status"] == "preempted"
    result = run_cli(args, workdir)
    assert result.returncode == 0, result.stderr
    assert_same_run(reference, run_dir)
