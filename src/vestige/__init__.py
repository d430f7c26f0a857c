"""vestige: experiments on how class-selective neurons emerge, matter and recede in training."""

__version__ = "0.1.0"

from vestige.results import Run, Snapshot, Sweep, load_run, load_sweep  # noqa: E402

__all__ = ["Run", "Snapshot", "Sweep", "load_run", "load_sweep", "__version__"]
