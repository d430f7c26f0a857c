"""What `vestige-run --help` lists: every choice a user has, one line each, read from where each
choice is defined (a task's docstring, a conf file's first comment line), so the list cannot
fall behind the code (conf/hydra/help/vestige.yaml places it)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from vestige.tasks import TASKS
from vestige.tasks.compose import CONF_DIR

# The groups `--help` lists, in this order, and what their choices are. The schemas are stored
# outside the groups (config.py), and recipe / recipe_scale are the experiment presets' to pick
# (docs/architecture.md, "Experiment presets"): neither is listed.
CHOICE_GROUPS = (
    ("experiment", "experiment presets, each at scale=laptop (the default) or scale=paper"),
    ("model", "networks"),
    ("data", "datasets"),
    ("analysis", "analyses of a run's snapshots, for task=analyze"),
    ("optim", "optimisers"),
    ("sched", "learning-rate schedules"),
    ("regularizer", "regularizers of the training loss"),
    ("logger", "experiment trackers every metrics row also goes to (several: logger=[a,b])"),
    ("scale", "scales of an experiment preset"),
)


def first_comment(path: Path) -> str:
    """A conf file's description: its first comment line (a `# @package` line is not one),
    without the comma, semicolon or colon that continues it on the next."""
    for line in path.read_text().splitlines():
        if line.startswith("#") and not line.startswith("# @package"):
            return line.lstrip("#").strip().rstrip(",;:")
    return ""


def described_choices() -> list[tuple[str, str, dict[str, str]]]:
    """(key, what its choices are, {choice: one line}) for `task=` and each of CHOICE_GROUPS:
    a task is described by its docstring's first line, a group's choice by its file."""
    tasks = {name: (task.__doc__ or "").strip().partition("\n")[0] for name, task in TASKS.items()}
    files = {group: sorted(CONF_DIR.glob(f"{group}/*.yaml")) for group, _ in CHOICE_GROUPS}
    groups = [(g, what, {p.stem: first_comment(p) for p in files[g]}) for g, what in CHOICE_GROUPS]
    return [("task", "what a command does (the default: train)", tasks), *groups]


def choices_help() -> str:
    """The list of `vestige-run --help` (conf/hydra/help/vestige.yaml), one line a choice."""
    lines = []
    for key, what, choices in described_choices():
        width = max(map(len, choices))
        lines += [f"{key}=<name>: {what}"]
        lines += [f"  {name.ljust(width)}  {text}" for name, text in choices.items()]
        lines += [""]
    return "\n".join(lines).replace("$", "$$")  # Hydra then fills the template's $NAMES


def register_choices_resolver() -> None:
    """`${vestige_choices:}` in the help template; registered once, when the front door runs."""
    if not OmegaConf.has_resolver("vestige_choices"):
        OmegaConf.register_new_resolver("vestige_choices", choices_help)
