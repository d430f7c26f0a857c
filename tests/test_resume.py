"""A run killed at any moment finishes, when the same command runs again, exactly as an
uninterrupted one (deterministic mode, CPU)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY, finished_run, run_cli, start_cli

# Resume states every 2 iterations, so a kill often lands in the middle of writing one.
RUN = [
    *TINY,
    "data.synthetic.train_size=512",
    "trainer.deterministic=true",
    "checkpoint.resume_every=2it",
    "checkpoint.snapshots=[0it,every 3it until 1ep,every 1ep]",
]
MEASURED = (
    "step",
    "epoch",
    "lr",
    "train_loss",
    "train_acc",
    "eval_loss",
    "eval_acc",
    "eval_acc5",
    "si/mean",
)


def final_state(run_dir: Path) -> tuple[dict[str, torch.Tensor], list[dict]]:
    manifest = json.loads((run_dir / "checkpoints" / "manifest.json").read_text())["snapshots"]
    weights = torch.load(run_dir / manifest[-1]["path"], weights_only=True)["model"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return weights, [{k: row.get(k) for k in MEASURED} for row in rows]


def assert_same_run(a: Path, b: Path) -> None:
    weights_a, rows_a = final_state(a)
    weights_b, rows_b = final_state(b)
    assert rows_a == rows_b
    assert weights_a.keys() == weights_b.keys()
    for key in weights_a:
        assert torch.equal(weights_a[key], weights_b[key]), key
    snaps_a = json.loads((a / "checkpoints" / "manifest.json").read_text())["snapshots"]
    snaps_b = json.loads((b / "checkpoints" / "manifest.json").read_text())["snapshots"]
    assert [s["step"] for s in snaps_a] == [s["step"] for s in snaps_b]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run."""
    return finished_run(RUN, tmp_path_factory.mktemp("reference"))


def kill_when(process, condition, delay: float) -> None:
    """SIGKILL `delay` seconds after `condition` holds; the run must still have been going."""
    deadline = time.time() + 120
    while not condition() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"


def test_kill_9_at_random_moments_then_rerun_gives_identical_weights_and_metrics(
    reference, workdir
):
    run_dir = workdir / "run"
    args = [*RUN, f"hydra.run.dir={run_dir}"]
    rng = random.Random(0)
    for _ in range(2):
        process = start_cli(args, workdir)
        kill_when(
            process,
            lambda: any((run_dir / "checkpoints" / "resume").glob("*.pt")),
            rng.uniform(0, 0.5),
        )
    assert (run_dir / "checkpoints" / "resume").exists(), "the kills came before any checkpoint"
    result = run_cli(args, workdir)
    assert result.returncode == 0, result.stderr
    assert_same_run(reference, run_dir)
    rows = [
        json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert rows == sorted(set(rows)), "metrics rows were duplicated"


def test_corrupted_latest_checkpoint_is_skipped_with_a_warning(reference, workdir):
    run_dir = workdir / "run"
    args = [*RUN, f"hydra.run.dir={run_dir}"]
    resume = run_dir / "checkpoints" / "resume"
    process = start_cli(args, workdir)
    kill_when(process, lambda: len(list(resume.glob("*.sha256"))) >= 2, 0)
    *_, intact, newest = sorted(resume.glob("*.pt"))
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    result = run_cli(args, workdir)
    assert result.returncode == 0, result.stderr
    assert newest.name in result.stderr and "damaged" in result.stderr
    # the terminal, not only log.txt, says where the run went on from
    assert f"resumed {run_dir} at step {int(intact.stem.split('_')[1])}\n" in result.stdout
    assert_same_run(reference, run_dir)


def test_running_the_same_command_again_reports_the_run_complete(reference):
    result = run_cli([*RUN, f"hydra.run.dir={reference}"], reference.parent)
    assert result.returncode == 0, result.stderr
    assert "already complete" in result.stdout
    assert final_state(reference)[1] == final_state(reference)[1]


def test_ctrl_c_stops_cleanly_and_the_same_command_continues_bitwise(reference, workdir):
    """SIGINT is a stop like SLURM's: the step finishes, a resume state is saved, status says
    `stopped`, one line says so; no traceback."""
    run_dir = workdir / "run"
    args = [*RUN, "checkpoint.resume_every=1ep", f"hydra.run.dir={run_dir}"]
    process = start_cli(args, workdir)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 120
    while process.poll() is None and time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGINT, stderr
    assert "Traceback" not in stderr
    assert "Ctrl-C: finishing this step and saving a resume state" in stderr
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "stopped"
    # the resume state is of the very step it stopped at, not the last scheduled one
    assert (run_dir / "checkpoints" / "resume" / f"step_{info['steps']:08d}.pt").exists()
    result = run_cli(args, workdir)
    assert result.returncode == 0, result.stderr
    assert f"resumed {run_dir} at step {info['steps']}\n" in result.stdout
    assert_same_run(reference, run_dir)


def test_each_invocation_is_recorded_and_another_thread_count_is_warned_of(workdir):
    run_dir = workdir / "run"
    args = [sys.executable, "-m", "vestige.run", *RUN, f"hydra.run.dir={run_dir}"]

    def start(threads: int) -> subprocess.Popen:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(threads)}
        return subprocess.Popen(
            args, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    first = start(1)
    resume = run_dir / "checkpoints" / "resume"
    deadline = time.time() + 120
    while first.poll() is None and time.time() < deadline and not any(resume.glob("*.sha256")):
        time.sleep(0.02)
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=120)
    second = start(2)
    _, stderr = second.communicate(timeout=300)
    assert second.returncode == 0, stderr
    assert "resumed with 2 CPU threads where the run so far used 1" in stderr
    invocations = json.loads((run_dir / "run.json").read_text())["invocations"]
    assert [i["threads"] for i in invocations] == [1, 2]
    assert all(i["world_size"] == 1 and i["device"] == "cpu" for i in invocations)


def test_resume_states_follow_their_own_step_rule_not_the_snapshots(workdir):
    """`checkpoint.resume_every` alone decides the periodic resume states (plus the final step):
    none at the snapshot steps or epoch ends in between, so dense snapshots cost no resume saves."""
    run_dir = workdir / "run"
    args = [*TINY, "checkpoint.resume_every=5it", "checkpoint.keep_resume=50"]
    args += ["checkpoint.snapshots=[0it,every 2it]", f"hydra.run.dir={run_dir}"]
    result = run_cli(args, workdir)
    assert result.returncode == 0, result.stderr
    saved = sorted(int(p.stem.split("_")[1]) for p in (run_dir / "checkpoints/resume").glob("*.pt"))
    assert saved == [5, 10, 15, 16]  # TINY: 2 epochs of 8 steps
