"""`logger=`: TensorBoard, MLflow and W&B (offline) get every metrics row of a run at its step,
read back with each tracker's own reader; a stopped and resumed run is one tracker run with each
step once; a sweep's points are grouped; an analysis's summary values and a report's figures go
to the run's tracker runs, once however often they are made; a tracker that is not installed is
one line."""

from __future__ import annotations

import importlib.util
import json
import shutil
import signal
import struct
import time
from pathlib import Path

import pytest
from conftest import TINY, run_cli, start_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from vestige import tracking
from vestige.analysis import ANALYSES
from vestige.analysis.summary_values import SUMMARY_TABLES, summary_values
from vestige.errors import ConfigError
from vestige.io import atomic_write_text, read_rows, table_text
from vestige.results import load_run
from vestige.tasks.compose import compose_point
from vestige.tasks.trackers import chosen_trackers
from vestige.tracking.wandb import SNAPSHOT_STEP

ALL = "logger=[tensorboard,mlflow,wandb]"
# 32 steps, a row every 2; resume states only where the run stops and at its end
RUN = [
    *TINY,
    "trainer.epochs=4",
    "trainer.deterministic=true",
    "checkpoint.snapshots=[0it,every 2it]",
    "checkpoint.resume_every=null",
    ALL,
]
LOGGED = ("epoch", "lr", "train_loss", "train_acc", "eval_loss", "eval_acc", "si/mean")


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def tensorboard_events(folder: Path) -> EventAccumulator:
    """Every event of a run's folder, as TensorBoard shows them (purged steps dropped)."""
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """(step, value) of every scalar."""
    events = tensorboard_events(folder)
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def mlflow_client(outputs: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{outputs.resolve() / 'mlflow' / 'mlflow.db'}")


def wandb_records(path: Path) -> list:
    """The records of a W&B run file (`run-<id>.wandb`: LevelDB's log format, 32 KiB blocks of
    chunks with a 7-byte header, after W&B's own 7-byte header), as W&B's protobuf types."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    position, chunks, records = 7, b"", []
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        chunks += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            records.append(Record.FromString(chunks))
            chunks = b""
    return records


def wandb_runs(outputs: Path) -> list[list]:
    """The records of each offline W&B run file, oldest first (one per invocation)."""
    return [wandb_records(p) for p in sorted(outputs.glob("wandb/offline-run-*/run-*.wandb"))]


def of_kind(records: list, kind: str) -> list:
    return [getattr(r, kind) for r in records if r.WhichOneof("record_type") == kind]


def history(records: list) -> dict[int, dict[str, float]]:
    """{step: {metric: value}} of the rows a W&B run file holds, in the order logged."""
    keyed = [
        (h.step.num, {i.key or "/".join(i.nested_key): i.value_json for i in h.item})
        for h in of_kind(records, "history")
    ]
    return {step: {k: json.loads(v) for k, v in row.items() if k in LOGGED} for step, row in keyed}


@pytest.fixture(scope="module")
def resumed(tmp_path_factory) -> dict:
    """A run stopped by a signal after a few rows, its resume state then lost (as a kill before
    its first resume state leaves it: every row is computed again), continued to its end."""
    workdir = tmp_path_factory.mktemp("resumed")
    run_dir = workdir / "run"
    args = [*RUN, f"hydra.run.dir={run_dir}"]
    process = start_cli(args, workdir)
    deadline = time.time() + 300
    while process.poll() is None and time.time() < deadline:
        if (run_dir / "metrics.jsonl").exists() and len(rows(run_dir)) >= 3:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGINT, stderr
    outputs = workdir / "outputs"
    client = mlflow_client(outputs)
    (stopped,) = client.search_runs([client.get_experiment_by_name("vestige").experiment_id])
    logged_before = rows(run_dir)
    shutil.rmtree(run_dir / "checkpoints" / "resume")
    result = run_cli(args, workdir)
    assert result.returncode == 0, result.stderr
    return {
        "run": run_dir,
        "outputs": outputs,
        "stopped_status": stopped.info.status,
        "logged_before": [row["step"] for row in logged_before],
    }


def test_tensorboard_has_every_metric_of_every_row_once_with_the_recomputed_values(resumed):
    final = rows(resumed["run"])
    folder = resumed["outputs"] / "tensorboard" / resumed["run"].name
    scalars = tensorboard_scalars(folder)
    for key in LOGGED:
        expected = [(r["step"], r[key]) for r in final if r[key] is not None]
        assert [step for step, _ in scalars[key]] == [step for step, _ in expected], key
        assert [v for _, v in scalars[key]] == pytest.approx([v for _, v in expected]), key


def test_mlflow_has_one_run_with_params_every_step_once_and_its_status(resumed):
    client = mlflow_client(resumed["outputs"])
    experiment = client.get_experiment_by_name("vestige")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == resumed["run"].name
    assert resumed["stopped_status"] == "KILLED"
    assert run.info.status == "FINISHED"
    assert run.data.params["optim.lr"] == "0.1"
    assert run.data.params["trainer.epochs"] == "4"
    assert run.data.tags["vestige.run_dir"] == str(resumed["run"].resolve())
    final = rows(resumed["run"])
    for key in LOGGED:
        history = client.get_metric_history(run.info.run_id, key)
        assert sorted(m.step for m in history) == [r["step"] for r in final if r[key] is not None]
    recorded = json.loads((resumed["run"] / "tracking.json").read_text())
    assert recorded["mlflow"]["run_id"] == run.info.run_id
    assert recorded["mlflow"]["logged_through"] == final[-1]["step"]


def test_wandb_offline_is_one_run_with_every_step_once_killed_then_finished(resumed):
    runs = wandb_runs(resumed["outputs"])
    assert len(runs) == 2  # one offline run file per invocation, both of one W&B run
    (first,), (second,) = of_kind(runs[0], "run"), of_kind(runs[1], "run")
    assert first.run_id == second.run_id == json.loads(
        (resumed["run"] / "tracking.json").read_text()
    )["wandb"]["run_id"]
    assert first.display_name == resumed["run"].name
    before, after = history(runs[0]), history(runs[1])
    assert list(before) == resumed["logged_before"]
    final = rows(resumed["run"])
    assert list(before) + list(after) == [r["step"] for r in final]
    for row in final[len(before) :]:
        measured = {key: row[key] for key in LOGGED if row[key] is not None}
        assert after[row["step"]] == pytest.approx(measured)
    assert of_kind(runs[0], "preempting") and of_kind(runs[0], "exit")[0].exit_code != 0
    assert not of_kind(runs[1], "preempting") and of_kind(runs[1], "exit")[0].exit_code == 0
    config = {u.key: json.loads(u.value_json) for u in first.config.update}
    assert config["optim"]["lr"] == 0.1 and config["vestige"]["run_hash"]


def test_a_sweeps_points_are_grouped_by_the_sweep_with_their_varying_settings(tmp_path):
    args = ["-m", *TINY, "trainer.epochs=1", ALL, "optim.lr=0.05,0.1"]
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr
    (sweep,) = (tmp_path / "outputs" / "sweeps").iterdir()
    points = sorted((tmp_path / "outputs" / "tensorboard" / sweep.name).iterdir())
    assert len(points) == 2 and all(tensorboard_scalars(p)["eval_acc"] for p in points)
    client = mlflow_client(tmp_path / "outputs")
    experiment = client.get_experiment_by_name(sweep.name)
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["optim.lr"] for r in runs) == ["0.05", "0.1"]
    assert all("trainer.epochs" not in r.data.tags for r in runs)  # the same in both points
    started = [of_kind(records, "run")[0] for records in wandb_runs(tmp_path / "outputs")]
    assert [r.run_group for r in started] == [sweep.name] * 2
    assert sorted(tag for r in started for tag in r.tags) == ["optim.lr=0.05", "optim.lr=0.1"]


def wandb_later(outputs: Path) -> list[tuple[int, str]]:
    """(snapshot step, name) of everything logged against W&B's `snapshot_step`, in all the
    W&B run files (an image is one name with its fields nested below it)."""
    found = []
    for records in wandb_runs(outputs):
        for entry in of_kind(records, "history"):
            items = {i.key or i.nested_key[0]: i.value_json for i in entry.item}
            if SNAPSHOT_STEP in items:
                step = json.loads(items.pop(SNAPSHOT_STEP))
                found += [(step, key) for key in items if not key.startswith("_")]
    return found


@pytest.fixture(scope="module")
def analysed(tmp_path_factory) -> dict:
    """A run trained with every tracker (snapshots at steps 0, 8, 16), then analysed twice
    (analysis=selectivity, whose table training has filled already) and reported twice, each
    command without logger=: the run's own trackers."""
    workdir = tmp_path_factory.mktemp("analysed")
    run_dir = workdir / "run"
    commands = [
        [*TINY, ALL, f"hydra.run.dir={run_dir}"],
        *[["task=analyze", f"run={run_dir}", "analysis=selectivity"]] * 2,
        *[["task=report", f"run={run_dir}"]] * 2,
    ]
    for args in commands:
        result = run_cli(args, workdir)
        assert result.returncode == 0, result.stderr
    return {"run": run_dir, "outputs": workdir / "outputs"}


def test_an_analysis_gives_each_tracker_its_summary_values_at_their_steps_once(analysed):
    expected: dict[str, list[tuple[int, float]]] = {}
    for row in read_rows(analysed["run"] / "selectivity" / "summary.csv"):
        name = "selectivity/si" + ("" if row["stage"] == "all" else f"/{row['stage']}")
        expected.setdefault(name, []).append((int(row["step"]), float(row["si"])))
    assert len(expected) == 5 and all(len(v) == 3 for v in expected.values())  # 4 stages, mean
    scalars = tensorboard_scalars(analysed["outputs"] / "tensorboard" / analysed["run"].name)
    client = mlflow_client(analysed["outputs"])
    (run,) = client.search_runs([client.get_experiment_by_name("vestige").experiment_id])
    assert run.info.status == "FINISHED"  # ended again as it was
    for name, values in expected.items():
        metric = client.get_metric_history(run.info.run_id, name)
        for logged in (scalars[name], sorted((m.step, m.value) for m in metric)):
            assert [step for step, _ in logged] == [step for step, _ in values], name
            assert [v for _, v in logged] == pytest.approx([v for _, v in values]), name
    later = [(step, name) for step, name in wandb_later(analysed["outputs"]) if name in expected]
    assert sorted(later) == sorted((step, name) for name, v in expected.items() for step, _ in v)


def test_a_report_gives_each_tracker_its_figures_once(analysed):
    drawn = sorted((analysed["run"] / "report").glob("*.png"))
    assert {png.stem for png in drawn} >= {"accuracy", "selectivity"}
    names = {f"report/{png.stem}": png for png in drawn}
    last = rows(analysed["run"])[-1]["step"]
    events = tensorboard_events(analysed["outputs"] / "tensorboard" / analysed["run"].name)
    assert sorted(events.Tags()["images"]) == sorted(names)
    for name, png in names.items():
        (image,) = events.Images(name)  # the second report changed nothing: not logged again
        assert image.step == last
        assert (image.width, image.height) == struct.unpack(">II", png.read_bytes()[16:24])
    client = mlflow_client(analysed["outputs"])
    (run,) = client.search_runs([client.get_experiment_by_name("vestige").experiment_id])
    artifacts = client.list_artifacts(run.info.run_id, "report")
    assert sorted(a.path for a in artifacts) == sorted(f"{name}.png" for name in names)
    later = [(step, name) for step, name in wandb_later(analysed["outputs"]) if name in names]
    assert sorted(later) == [(last, name) for name in sorted(names)]


def test_an_analyze_or_report_logs_to_the_commands_trackers_else_the_installed_of_the_runs(
    analysed, monkeypatch
):
    run = load_run(analysed["run"])
    given = compose_point(["logger=tensorboard"])
    assert chosen_trackers(given, run) == (given.logger, ["tensorboard"])
    installed = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "wandb" else installed(name)
    )
    assert chosen_trackers(compose_point([]), run) == (run.config.logger, ["tensorboard", "mlflow"])


def test_summary_values_name_each_number_of_an_analysis_table_at_its_step(tmp_path):
    def table(folder: str, file: str, rows: list[dict]) -> Path:
        atomic_write_text(tmp_path / folder / file, table_text(rows))
        return tmp_path / folder

    at = {"step": 8, "epoch": 1.0}
    auc = {"draws": 1, "auc_top1_std": 0.0, "auc_top5": 0.9, "auc_top5_std": 0.0}
    ablation = table("ablation-1a2b3c4d", "auc.csv", [
        {**at, "stage": "layer1", "block": "all", "condition": "selective", "auc_top1": 0.5, **auc},
        {**at, "stage": "layer1", "block": "0", "condition": "random", "auc_top1": 0.75, **auc},
    ])  # fmt: skip
    assert summary_values("ablation", ablation) == [
        (8, "ablation-1a2b3c4d/auc_top1/layer1/0/random", 0.75),
        (8, "ablation-1a2b3c4d/auc_top1/layer1/selective", 0.5),
        (8, "ablation-1a2b3c4d/auc_top5/layer1/0/random", 0.9),
        (8, "ablation-1a2b3c4d/auc_top5/layer1/selective", 0.9),
    ]
    heads = [{**at, "layer": 3, "head": h, "gate": g} for h, g in enumerate((0.25, 0.75, 0.8))]
    attention = table("attention", "gates.csv", heads)
    assert summary_values("attention", attention) == [(8, "attention/gate/3", pytest.approx(0.6))]
    robustness = table("robustness", "summary.csv", [
        {**at, "clean_accuracy": 0.9, "mean_corruption_accuracy": "", "pgd@0.0156863": 0.25}
    ])  # fmt: skip
    table("robustness", "change.csv", [
        {**at, "stage": "layer4", "participation_ratio": 3.5, "components_90": 7}
    ])  # fmt: skip
    assert summary_values("robustness", robustness) == [
        (8, "robustness/clean_accuracy", 0.9),
        (8, "robustness/participation_ratio/layer4", 3.5),
        (8, "robustness/pgd_0.0156863", 0.25),  # MLflow takes no @; unmeasured: left out
    ]
    flips = {**at, "base_step": 0, "base_epoch": 0.0, "images": 64, "flip_fraction": 0.25}
    linearity = table("linearity", "relu_flips.csv", [{**flips, "flip_fraction/layer1": 0.5}])
    assert summary_values("linearity", linearity) == [
        (8, "linearity/relu_flips/flip_fraction", 0.25),
        (8, "linearity/relu_flips/flip_fraction/layer1", 0.5),
    ]


def test_every_analysis_says_what_the_trackers_get_of_it():
    assert set(SUMMARY_TABLES) == set(ANALYSES)


def test_a_tracker_that_is_not_installed_is_one_line_naming_the_pip_command(monkeypatch):
    cfg = compose_point(["logger=[tensorboard,wandb]"]).logger
    tracking.check(cfg)
    installed = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "wandb" else installed(name)
    )
    with pytest.raises(ConfigError, match=r"pip install 'vestige\[wandb\]'"):
        tracking.check(cfg)


def test_a_wandb_mode_it_does_not_have_is_refused():
    cfg = compose_point(["logger=wandb", "logger.wandb.mode=offlne"]).logger
    with pytest.raises(ConfigError, match="logger.wandb.mode='offlne' is invalid"):
        tracking.check(cfg)


def test_no_logger_is_the_default_and_a_logger_is_not_part_of_a_runs_identity():
    from vestige.rundir import run_hash

    assert tracking.chosen(compose_point([]).logger) == []
    assert run_hash(compose_point([ALL])) == run_hash(compose_point([]))
