"""TensorBoard: event files in `<log_dir>/<sweep>/<run>` (a single run: `<log_dir>/<run>`), so
that `tensorboard --logdir` on a sweep's folder compares its points, in its HParams view too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from vestige.config import TensorBoardConfig
from vestige.tracking.base import TrackedRun

# the columns of TensorBoard's HParams table, beside each run's settings
COMPARED = ("eval_acc", "eval_loss", "si/mean")


def hparam(value: Any) -> int | float | str | bool:
    return value if isinstance(value, int | float | str | bool) else str(value)


class TensorBoardTracker:
    """A resumed run purges what it logged after the step it resumes from (`purge_step`), so
    the recomputed rows replace the abandoned trajectory's (and whatever was added at those
    steps later: those snapshots are trained again)."""

    overwrites = True

    def __init__(self, cfg: TensorBoardConfig, run: TrackedRun) -> None:
        root = Path(cfg.log_dir).expanduser() if cfg.log_dir else run.outputs / "tensorboard"
        self.folder = (root / run.sweep if run.sweep else root).resolve() / run.name
        self.run = run
        self.writer: Any = None

    def target(self) -> str:
        return str(self.folder)

    def start(self, run_id: str | None, first_step: int | None) -> str:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        purge = None if run_id is None else first_step
        self.writer = SummaryWriter(str(self.folder), purge_step=purge)
        if run_id is None:
            text = OmegaConf.to_yaml(OmegaConf.create(self.run.config))
            self.writer.add_text("config", f"```\n{text}\n```", 0)
            self.writer.add_text("run", f"{self.run.directory} (hash {self.run.run_hash})", 0)
            settings = {key: hparam(value) for key, value in self.run.identity.items()}
            for summary in hparams(settings, dict.fromkeys(COMPARED, 0.0))[:2]:
                self.writer.file_writer.add_summary(summary)
        return str(self.folder)

    def log_row(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()  # a row is logged once it is on disk (tracking.json says so)

    log_values = log_row  # scalars of any step, in any order

    def log_figure(self, step: int, name: str, png: Path) -> None:
        from torchvision.io import ImageReadMode, decode_image

        image = decode_image(str(png), mode=ImageReadMode.RGB)  # (3, H, W) uint8
        self.writer.add_image(name, image, step)
        self.writer.flush()

    def finish(self, status: str) -> None:
        self.writer.add_text("status", status)
        self.writer.close()
