"""Where a run lives: identity from the config, the directory layout, and atomic file writes.

Same config -> same directory: the directory name is `<model>-<data>-<hash>`, the hash taken over
the hyperparameters that differ from the schema's defaults (as open_lth does), so adding a new
option with a default later does not move existing runs. Keys that change how a run is carried
out but not what it computes (`config.NON_IDENTITY_KEYS`) are left out.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vestige.config import NON_IDENTITY_KEYS, ConViTConfig, ResNetConfig, RunConfig
from vestige.errors import ConfigError

MODEL_SCHEMAS = (ResNetConfig, ConViTConfig)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: tree}


def _schema_defaults(model_keys: set[str]) -> dict[str, Any]:
    """Flattened defaults of RunConfig, with the model schema whose fields match the model node."""
    defaults = _flatten(OmegaConf.to_container(OmegaConf.structured(RunConfig)))
    defaults.pop("model", None)
    for schema in MODEL_SCHEMAS:
        if {f.name for f in fields(schema)} == model_keys:
            defaults.update(
                _flatten({"model": OmegaConf.to_container(OmegaConf.structured(schema))})
            )
    return defaults


def identity(cfg: DictConfig | dict) -> dict[str, Any]:
    """The hyperparameters that make this run different from the defaults (flattened, sorted)."""
    tree = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)
    tree = {key: value for key, value in tree.items() if key != "hydra"}
    flat = _flatten(tree)
    if flat.get("fork.from"):  # a fork is named by its parent's identity, not the parent's path
        flat["fork.parent"] = RunDir(Path(flat.pop("fork.from")).expanduser()).read_info()[
            "run_hash"
        ]
    defaults = _schema_defaults(set(tree.get("model", {})))
    return {
        key: value
        for key, value in sorted(flat.items())
        if key not in NON_IDENTITY_KEYS
        and key.partition(".")[0] not in NON_IDENTITY_KEYS
        and (key not in defaults or defaults[key] != value)
    }


def run_hash(cfg: DictConfig | dict) -> str:
    blob = json.dumps(identity(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def run_name(cfg: DictConfig | dict) -> str:
    """`<model>-<data>-<hash>`: readable in `ls`, unique per config."""
    tree = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)
    return f"{tree['model']['name']}-{tree['data']['name']}-{run_hash(tree)}"


def run_directory(cfg: DictConfig | dict, absolute: bool = False) -> str:
    """Where a job works: training -> outputs/runs/<name>; an analysis -> the run it analyses;
    a report -> the folder it writes; a sweep's table -> the sweep.

    `absolute` is the form a sweep's subdir takes: Hydra joins it to the sweep folder, and an
    absolute path wins that join, so sweep points land where single runs of the same config do.
    """
    tree = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)
    if tree.get("task") == "report":  # a report works in its own folder (report/inputs.py)
        from vestige.report.inputs import report_folder

        return str(report_folder(tree))
    if tree.get("task", "train") != "train":
        for key in ("run", "sweep"):
            if tree.get(key):
                return str(Path(tree[key]).expanduser().resolve())
    path = Path(tree.get("outputs", "outputs")).expanduser() / "runs" / run_name(tree)
    return str(path.resolve() if absolute else path)


def analysed_run(cfg: DictConfig | dict) -> Path:
    """The run a task=analyze works on: `run=`, or else the run this very config trains (so
    `vestige-run experiment=X task=analyze` analyses what `vestige-run experiment=X` trained)."""
    tree = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)
    if tree.get("run"):
        return Path(tree["run"]).expanduser().resolve()
    return Path(run_directory({**tree, "task": "train"})).resolve()


def sweep_directory(outputs: str, overrides: list[str]) -> str:
    """`outputs/sweeps/sweep-<hash>`, named by the sweep's overrides whatever their order, so
    the same sweep submitted again finds the same folder (see launch/sweep.py)."""
    blob = json.dumps(sorted(overrides))
    name = f"sweep-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"
    return str(Path(outputs).expanduser().resolve() / "sweeps" / name)


def register_resolvers() -> None:
    """`${vestige_run_dir:}` (hydra.run.dir) and `${vestige_run_subdir:}` (hydra.sweep.subdir):
    the directory named by the config, see `run_directory`; `${vestige_sweep_dir:}`
    (hydra.sweep.dir): the sweep's own folder, see `sweep_directory`."""

    def task_tree(root: DictConfig) -> dict:
        task = {key: root[key] for key in root if key != "hydra"}
        return OmegaConf.to_container(OmegaConf.create(task), resolve=True)

    if not OmegaConf.has_resolver("vestige_run_dir"):
        OmegaConf.register_new_resolver(
            "vestige_run_dir", lambda *, _root_: run_directory(task_tree(_root_))
        )
        OmegaConf.register_new_resolver(
            "vestige_run_subdir", lambda *, _root_: run_directory(task_tree(_root_), True)
        )
        OmegaConf.register_new_resolver(
            "vestige_sweep_dir",
            lambda *, _root_: sweep_directory(_root_.outputs, list(_root_.hydra.overrides.task)),
        )


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that readers see the old or the new content, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from a group
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if is_dataclass(obj):
        return {f.name: getattr(obj, f.name) for f in fields(obj)}
    return str(obj)


class RunDir:
    """The files of one run. Only rank 0 creates or writes any of them."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    config = property(lambda self: self.path / "config.yaml")
    info = property(lambda self: self.path / "run.json")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    checkpoints = property(lambda self: self.path / "checkpoints")
    snapshots = property(lambda self: self.path / "checkpoints" / "snapshots")
    resume = property(lambda self: self.path / "checkpoints" / "resume")
    manifest = property(lambda self: self.path / "checkpoints" / "manifest.json")
    lock = property(lambda self: self.path / "run.lock")

    def read_info(self) -> dict[str, Any]:
        return json.loads(self.info.read_text()) if self.info.exists() else {}

    def update_info(self, **values: Any) -> None:
        atomic_write_json(self.info, {**self.read_info(), **values})

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the run's lock: a second process with the same config is refused, not interleaved.

        flock is released by the kernel when the holder dies, so a killed or requeued job never
        leaves a stale lock behind.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.lock, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise ConfigError(
                    f"run directory {self.path} is in use by {holder}: wait for it to finish, "
                    "or change the config to start a different run"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
            handle.flush()
            try:
                yield
            finally:
                handle.seek(0)
                handle.truncate()
                fcntl.flock(handle, fcntl.LOCK_UN)
