"""`hydra/launcher=slurm`: hydra-submitit-launcher's SLURM launcher, plus submit-and-exit.

Hydra only instantiates launchers from the `hydra_plugins` package, so this one lives here; its
settings are in conf/hydra/launcher/slurm.yaml. With `hydra.launcher.wait=false` the sweep is
submitted as one array job, its id printed, and the command returns at once instead of blocking
until every job has ended (the submitit launcher always blocks).
"""

# no `from __future__ import annotations`: Hydra's plugin scan runs this module outside
# sys.modules, where dataclasses cannot resolve string annotations
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
    SlurmLauncher as SubmititSlurmLauncher,
)


@dataclass
class VestigeSlurmConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.vestige_slurm.SlurmLauncher"
    wait: bool = True  # false: print the array job's id and return once it is submitted


ConfigStore.instance().store(
    group="hydra/launcher", name="vestige_slurm_schema", node=VestigeSlurmConf
)


@contextmanager
def _results_not_awaited(submitted: list[Any]) -> Iterator[None]:
    """Make submitit jobs answer `results()` at once (recording each job) while the block runs.

    The submitit launcher submits the array and then waits on every job's `results()` within
    one method; this is the narrowest way to keep its submission and skip its wait.
    """
    from submitit.slurm.slurm import SlurmJob

    def recorded(job: SlurmJob) -> list[JobReturn]:
        submitted.append(job)
        return [JobReturn()]

    waiting = SlurmJob.results
    SlurmJob.results = recorded  # type: ignore[method-assign]
    try:
        yield
    finally:
        SlurmJob.results = waiting  # type: ignore[method-assign]


class SlurmLauncher(SubmititSlurmLauncher):
    def __init__(self, wait: bool = True, **params: Any) -> None:
        super().__init__(**params)
        self.wait = wait

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        if self.wait:
            return super().launch(job_overrides, initial_job_idx)
        submitted: list[Any] = []
        with _results_not_awaited(submitted):
            super().launch(job_overrides, initial_job_idx)
        array = submitted[0].job_id.split("_")[0]
        sweep = Path(str(self.config.hydra.sweep.dir))
        print(f"submitted {len(submitted)} runs as SLURM array job {array}", flush=True)
        print(f"logs: {sweep / '.submitit'}", flush=True)
        print(f"when they end: vestige-run task=collect sweep={sweep}", flush=True)
        return []
