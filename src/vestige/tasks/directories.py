"""Where each job works, as Hydra's run and sweep folders (conf/config.yaml): a run's directory
(rundir.py), a report's folder (report/inputs.py), a sweep's folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vestige.errors import ConfigError
from vestige.report.inputs import report_folder
from vestige.report.listing import listed_folder
from vestige.rundir import run_directory, sweep_directory


def working_directory(tree: dict[str, Any], absolute: bool = False) -> str:
    """A report's folder for task=report, the folder listed for task=list (it writes nothing),
    else the run (or sweep) directory of `run_directory`."""
    if tree.get("task") == "report":
        return str(report_folder(tree))
    if tree.get("task") == "list":
        return str(listed_folder(tree))
    return run_directory(tree, absolute)


def check_directory(path: str, key: str) -> None:
    """A job's folder can be made: every name in it fits the file system's limit, and the deepest
    folder of it that exists already is writable (one line naming `key` otherwise)."""
    target = Path(path).expanduser().absolute()
    for name in target.parts:
        if len(name.encode()) > 255:
            raise ConfigError(
                f"{key} is invalid: the folder name {name[:40]}... has {len(name.encode())} bytes, "
                "more than the 255 a file system allows; shorten it"
            )
    existing = next(p for p in (target, *target.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{key} is invalid: {target} cannot be created, {existing} is not a writable folder; "
            "choose outputs=<a writable folder>"
        )


def register_resolvers() -> None:
    """`${vestige_run_dir:}` (hydra.run.dir) and `${vestige_run_subdir:}` (hydra.sweep.subdir):
    the directory named by the config, see `working_directory`; `${vestige_sweep_dir:}`
    (hydra.sweep.dir): the sweep's own folder, see `rundir.sweep_directory`."""

    def job_directory(root: DictConfig, absolute: bool) -> str:
        if "model" not in root:  # `--cfg hydra --resolve` resolves Hydra's node on its own
            return "<the run directory its config names>"
        task = {key: root[key] for key in root if key != "hydra"}
        tree = OmegaConf.to_container(OmegaConf.create(task), resolve=True)
        return working_directory(tree, absolute)

    if not OmegaConf.has_resolver("vestige_run_dir"):
        OmegaConf.register_new_resolver(
            "vestige_run_dir", lambda *, _root_: job_directory(_root_, False)
        )
        OmegaConf.register_new_resolver(
            "vestige_run_subdir", lambda *, _root_: job_directory(_root_, True)
        )
        OmegaConf.register_new_resolver(
            "vestige_sweep_dir",
            lambda *, _root_: (
                sweep_directory(_root_.outputs, list(_root_.hydra.overrides.task))
                if "model" in _root_
                else "<the sweep folder its overrides name>"
            ),
        )
