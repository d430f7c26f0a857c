"""`vestige-run task=list`: every run and sweep of an outputs folder with its status, progress,
last accuracy and SI, settings and last change. A run is running only while a process holds its
lock: one whose process is gone is not."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import TINY, run_cli

from vestige.errors import ConfigError
from vestige.preflight import preflight
from vestige.report.listing import show_listing
from vestige.rundir import RunDir
from vestige.tasks.sweep import write_record

ONE_EPOCH = [*[o for o in TINY if not o.startswith("trainer.epochs")], "trainer.epochs=1"]
STEPS = 8  # 256 training images in batches of 32, one epoch
TITLE = re.compile(r"^(runs in |sweep )")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """outputs/ of a sweep of two points: one trains to the end, one diverges (the sweep records
    it as a failed point)."""
    workdir = tmp_path_factory.mktemp("list")
    result = run_cli(["-m", *ONE_EPOCH, "optim.lr=0.05,1e6"], workdir)
    assert result.returncode == 1 and "1 of 2 points failed" in result.stderr, result.stderr
    return workdir / "outputs"


@pytest.fixture
def outputs(trained: Path, tmp_path: Path) -> Path:
    """This test's own copy of the outputs folder."""
    shutil.copytree(trained, tmp_path / "outputs")
    return tmp_path / "outputs"


def sections(text: str) -> dict[str, dict[str, dict[str, str]]]:
    """{section title: {run name: {column: cell}}} of the plain listing: a title, a header, rows."""
    found: dict[str, dict[str, dict[str, str]]] = {}
    header: list[str] = []
    for line in text.splitlines():
        if TITLE.match(line):
            rows = found[line] = {}
            header = []
        elif not header:
            header = re.split(r" {2,}", line)
        else:
            values = re.split(r" {2,}", line)  # an empty last cell (no settings) is cut off
            cells = dict(zip(header, values + [""] * (len(header) - len(values)), strict=True))
            rows[cells["run"]] = cells
    return found


def runs_of(listing: dict[str, dict[str, dict[str, str]]]) -> dict[str, dict[str, str]]:
    (runs,) = [rows for title, rows in listing.items() if title.startswith("runs in ")]
    return runs


def with_status(outputs: Path, status: str) -> Path:
    (run,) = [
        run for run in (outputs / "runs").iterdir() if RunDir(run).read_info()["status"] == status
    ]
    return run


def test_each_run_shows_whether_it_is_complete_running_or_diverged(outputs: Path):
    complete, diverged = with_status(outputs, "complete"), with_status(outputs, "diverged")
    live = outputs / "runs" / "a-run-in-progress"
    shutil.copytree(complete, live)
    RunDir(live).update_info(status="running")  # what a training writes as it starts
    before = sorted(p.relative_to(outputs) for p in outputs.rglob("*"))
    with RunDir(live).exclusive():  # ... and the lock it holds while it trains
        result = run_cli(["task=list", f"outputs={outputs}"], outputs.parent)
    assert result.returncode == 0, result.stderr
    runs = runs_of(sections(result.stdout))
    assert {name: row["status"] for name, row in runs.items()} == {
        complete.name: "complete",
        diverged.name: "diverged",
        live.name: "running",
    }
    assert runs[complete.name]["step"] == f"{STEPS}/{STEPS}"
    assert runs[diverged.name]["step"].endswith(f"/{STEPS}")
    assert 0 <= float(runs[complete.name]["eval acc"]) <= 1
    assert 0 <= float(runs[complete.name]["SI mean"]) <= 1
    assert "optim.lr=0.05" in runs[complete.name]["settings"].split()
    assert "optim.lr=1000000.0" in runs[diverged.name]["settings"].split()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", runs[complete.name]["touched"])
    assert sorted(p.relative_to(outputs) for p in outputs.rglob("*")) == before  # reads only


def test_a_run_whose_process_is_gone_is_failed_not_running(outputs: Path, capsys):
    crashed = with_status(outputs, "complete")
    RunDir(crashed).update_info(status="running")  # a crash or a kill leaves it so
    (crashed / "run.lock").write_text("pid 1234 on a-node-that-was-lost\n")
    show_listing(outputs, "plain")
    assert runs_of(sections(capsys.readouterr().out))[crashed.name]["status"] == "failed"


def test_a_run_with_a_damaged_run_json_is_listed_as_damaged_beside_the_others(outputs, capsys):
    damaged = with_status(outputs, "complete")
    (damaged / "run.json").write_text('{"status": "compl')  # cut short, as by a full disk
    show_listing(outputs, "plain")
    runs = runs_of(sections(capsys.readouterr().out))
    assert runs[damaged.name]["status"] == "damaged" and runs[damaged.name]["step"] == "?"
    assert "diverged" in {row["status"] for row in runs.values()}


def test_a_sweep_shows_each_point_with_its_status(outputs: Path, capsys):
    later = outputs / "sweeps" / "sweep-not-started-yet"
    write_record(later, [*ONE_EPOCH, f"outputs={outputs}", "seed=5,6"])
    show_listing(outputs, "plain")
    listing = sections(capsys.readouterr().out)
    (done,) = [title for title in listing if "2 points (1 complete, 1 failed)" in title]
    by_lr = {row["settings"]: row["status"] for row in listing[done].values()}
    assert by_lr == {"optim.lr=0.05": "complete", "optim.lr=1000000.0": "failed"}
    waiting = listing["sweep sweep-not-started-yet: 2 points (2 not started)"]
    steps = {row["settings"]: row["step"] for row in waiting.values()}
    assert steps == {"seed=5": "-", "seed=6": "-"}


def test_a_terminal_gets_a_table_and_a_pipe_plain_lines(outputs: Path, capsys):
    show_listing(outputs, "auto")  # captured: not a terminal
    plain = capsys.readouterr().out
    assert "complete" in plain and not re.search(r"[┃━│]", plain)
    show_listing(outputs, "rich")
    table = capsys.readouterr().out
    assert "complete" in table and "┃" in table


@pytest.mark.parametrize("key", ["outputs", "sweep"])
def test_a_folder_that_is_not_there_is_one_line(key: str):
    with pytest.raises(ConfigError) as caught:
        preflight(["task=list", f"{key}=/no/such/folder"])
    message = str(caught.value)
    assert message.startswith(f"{key}='/no/such/folder' is invalid: no such folder")
    assert "\n" not in message
