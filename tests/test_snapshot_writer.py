"""Snapshots and resume states are written by a background thread: the same bytes as writing them
in the training thread, out of reach of later updates, with back-pressure, errors that surface in
the training thread, every write finished on close, and files a kill cannot tear."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import pytest
import torch
from conftest import TINY, finished_run
from torch import nn

from vestige.errors import ConfigError
from vestige.preflight import preflight
from vestige.rundir import RunDir, load_weights, matches_checksum, read_manifest, read_metrics
from vestige.train import checkpoint
from vestige.train.writer import CheckpointWriter


def trained_model() -> tuple[nn.Module, torch.optim.Optimizer]:
    """A small network with BatchNorm (buffers, a state dict's module versions) after one step
    of SGD with momentum (optimiser state)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    nn.functional.cross_entropy(model(torch.randn(8, 3, 8, 8)), torch.arange(8) % 3).backward()
    optimizer.step()
    return model, optimizer


def resume_state(step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    return {
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": [checkpoint.rng_state()],
    }


def files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`, by its path relative to it."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in folder.rglob("*")
        if path.is_file()
    }


def blocked_in(thread: threading.Thread, function: str) -> bool:
    """Wait until `thread` waits (on a lock or another thread) inside `function`; False if it
    ends first. Reads the thread's stack, so that no test depends on how long anything takes."""
    while thread.is_alive():
        frame = sys._current_frames().get(thread.ident)
        names = []
        while frame is not None:
            names.append(frame.f_code.co_name)
            frame = frame.f_back
        if function in names and {"wait", "join"} & set(names[: names.index(function)]):
            return True
        time.sleep(0.001)
    return False


def test_files_written_in_the_background_are_the_bytes_written_in_the_training_thread(tmp_path):
    model, optimizer = trained_model()
    state = resume_state(7, model, optimizer)
    direct, background = RunDir(tmp_path / "direct"), RunDir(tmp_path / "background")
    checkpoint.save_snapshot(direct, model.state_dict(), 7, 0.5)
    checkpoint.save_resume(direct, state, keep=2)
    with CheckpointWriter(2) as writer:
        weights = checkpoint.host_copy(model.state_dict())
        writer.submit(partial(checkpoint.save_snapshot, background, weights, 7, 0.5))
        writer.submit(partial(checkpoint.save_resume, background, checkpoint.host_copy(state), 2))
    written = files(background.path)
    assert sorted(written) == [
        "checkpoints/manifest.json",
        "checkpoints/resume/step_00000007.pt",
        "checkpoints/resume/step_00000007.sha256",
        "checkpoints/snapshots/step_00000007.pt",
        "checkpoints/snapshots/step_00000007.sha256",
    ]
    assert written == files(direct.path)


def test_updating_the_model_in_place_after_submit_does_not_change_the_written_file(tmp_path):
    model, optimizer = trained_model()
    before = resume_state(3, model, optimizer)
    expected = checkpoint.host_copy(before)
    gate = threading.Event()
    run = RunDir(tmp_path)
    with CheckpointWriter(2) as writer:
        writer.submit(gate.wait)  # the write below runs only after the updates
        writer.submit(partial(checkpoint.save_resume, run, checkpoint.host_copy(before), 2))
        with torch.no_grad():  # the next step's updates: weights, BatchNorm buffers, momentum
            for tensor in model.state_dict().values():
                tensor.add_(1)
            optimizer.state[next(model.parameters())]["momentum_buffer"].add_(1)
        gate.set()
    written = checkpoint.load_latest_resume(run)
    for key, tensor in expected["model"].items():
        assert not torch.equal(model.state_dict()[key], tensor), key
        assert torch.equal(written["model"][key], tensor), key
    momentum = written["optimizer"]["state"][0]["momentum_buffer"]
    assert torch.equal(momentum, expected["optimizer"]["state"][0]["momentum_buffer"])


def test_a_full_queue_makes_the_training_thread_wait_instead_of_dropping_a_state():
    gate, done = threading.Event(), []
    writer = CheckpointWriter(1)
    writer.submit(lambda: (gate.wait(), done.append("first")))
    producer = threading.Thread(target=writer.submit, args=(lambda: done.append("second"),))
    producer.start()
    assert blocked_in(producer, "submit")
    assert done == []
    gate.set()
    producer.join()
    writer.close()
    assert done == ["first", "second"]


def test_an_error_in_a_write_is_raised_in_the_training_thread_at_the_next_submit():
    def full_disk() -> None:
        raise OSError(28, "No space left on device", "snapshots/step_00000008.pt")

    done = []
    writer = CheckpointWriter(1)
    writer.submit(full_disk)
    with pytest.raises(OSError, match="No space left") as caught:
        writer.submit(lambda: done.append("after"))
    assert caught.value.filename == "snapshots/step_00000008.pt"
    writer.close()  # raised once, not again
    assert done == []


def test_an_error_in_the_last_write_is_raised_at_close():
    writer = CheckpointWriter(2)
    writer.submit(Path("/no/such/folder/state.pt").read_bytes)
    with pytest.raises(FileNotFoundError):
        writer.close()


def test_close_waits_for_every_pending_write():
    gate, done = threading.Event(), []
    writer = CheckpointWriter(3)
    writer.submit(lambda: (gate.wait(), done.append(1)))
    writer.submit(lambda: done.append(2))
    writer.submit(lambda: done.append(3))
    closing = threading.Thread(target=writer.close)
    closing.start()
    assert blocked_in(closing, "close")
    assert done == []
    gate.set()
    closing.join()
    assert done == [1, 2, 3]


WRITE_FOREVER = """
import functools, itertools, sys
import torch
from vestige.rundir import RunDir
from vestige.train import checkpoint
from vestige.train.writer import CheckpointWriter

run = RunDir(sys.argv[1])
with CheckpointWriter(2) as writer:
    for step in itertools.count(1):
        weights = {"weight": torch.full((2_000_000,), float(step))}
        state = {"step": step, "model": weights}
        writer.submit(functools.partial(checkpoint.save_snapshot, run, weights, step, step / 4))
        writer.submit(functools.partial(checkpoint.save_resume, run, state, 3))
        print(step, flush=True)
"""


@pytest.mark.parametrize("folder", ["snapshots", "resume"])
def test_a_kill_during_writes_leaves_whole_files_or_none_never_a_torn_one(tmp_path, folder):
    run = RunDir(tmp_path / "run")
    half_written = run.checkpoints / folder
    command = [sys.executable, "-c", WRITE_FOREVER, str(run.path)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as writing:
        for line in writing.stdout:
            if int(line) >= 3:  # a few states are complete
                break
        while writing.poll() is None and not any(half_written.glob(".step_*.pt.*.tmp")):
            time.sleep(0.001)
        writing.send_signal(signal.SIGKILL)  # while a state's bytes are going to disk
    assert writing.returncode == -signal.SIGKILL
    listed = read_manifest(run)
    assert listed, "no snapshot was finished before the kill"
    for entry in listed:  # the manifest lists a snapshot only once its checksum is written
        path = run.path / entry["path"]
        assert matches_checksum(path, path.read_bytes()) is True
        assert torch.equal(load_weights(path)["weight"], torch.full((2_000_000,), entry["step"]))
    for path in [*run.snapshots.glob("step_*.pt"), *run.resume.glob("step_*.pt")]:
        # a file without its checksum was never finished, and every reader skips it
        assert matches_checksum(path, path.read_bytes()) is not False, path
    for path in run.resume.glob("step_*.pt"):
        state = checkpoint.load_resume_file(path)
        if state is not None:
            assert torch.equal(state["model"]["weight"], torch.full((2_000_000,), state["step"]))
    latest = checkpoint.load_latest_resume(run)
    assert latest is not None and latest["step"] >= 1


def test_a_trained_run_lists_every_snapshot_and_each_matches_its_checksum(tmp_path):
    path = finished_run([*TINY, "checkpoint.pending_writes=1"], tmp_path)
    run = RunDir(path)
    info = json.loads(run.info.read_text())
    per_epoch, total = info["iterations_per_epoch"], info["total_steps"]
    listed = read_manifest(run)
    assert [entry["step"] for entry in listed] == [0, per_epoch, total]
    assert [row["step"] for row in read_metrics(run.metrics)] == [0, per_epoch, total]
    on_disk = sorted(p.relative_to(path).as_posix() for p in run.snapshots.glob("step_*.pt"))
    assert on_disk == [entry["path"] for entry in listed]
    for entry in listed:
        snapshot = path / entry["path"]
        assert matches_checksum(snapshot, snapshot.read_bytes()) is True
    last = checkpoint.load_latest_resume(run)
    assert last["step"] == total
    final = load_weights(path / listed[-1]["path"])
    assert final.keys() == last["model"].keys()
    assert all(torch.equal(final[key], last["model"][key]) for key in final)


def test_no_room_for_a_pending_write_is_one_line():
    with pytest.raises(ConfigError) as caught:
        preflight(["checkpoint.pending_writes=0"])
    assert str(caught.value).startswith("checkpoint.pending_writes=0 is invalid")
    assert "\n" not in str(caught.value)
