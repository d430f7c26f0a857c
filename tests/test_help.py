"""`vestige-run --help` lists what a user can choose, one line each, and hides the schemas and
the groups only experiment presets pick; shell completion offers the same choices."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import run_cli

from vestige.choices import CHOICE_GROUPS
from vestige.config import TASKS
from vestige.tasks.compose import CONF_DIR

SECTION = re.compile(r"^(\w+)=<name>: ")
CHOICE = re.compile(r"^  (\w+) +(\S.*)$")  # a choice without a description is no match


@pytest.fixture(scope="module")
def help_text(tmp_path_factory) -> str:
    result = run_cli(["--help"], tmp_path_factory.mktemp("help"))
    assert result.returncode == 0, result.stderr
    return result.stdout


def listed(help_text: str) -> dict[str, dict[str, str]]:
    """{key: {choice: description}} of each `key=<name>:` section of the help."""
    sections: dict[str, dict[str, str]] = {}
    key = None
    for line in help_text.splitlines():
        if heading := SECTION.match(line):
            key = heading.group(1)
            sections[key] = {}
        elif key and (choice := CHOICE.match(line)):
            sections[key][choice.group(1)] = choice.group(2)
        else:
            key = None
    return sections


def files(group: str) -> set[str]:
    return {path.stem for path in (CONF_DIR / group).glob("*.yaml")}


def test_help_is_vestige_runs_own(help_text):
    assert help_text.startswith("vestige-run:")
    assert "powered by Hydra" not in help_text


def test_help_lists_every_task_and_every_choice_with_one_line_saying_what_it_is(help_text):
    sections = listed(help_text)
    assert set(sections["task"]) == set(TASKS)
    for group in ("experiment", "model", "data", "analysis", "optim", "sched", "regularizer"):
        assert set(sections[group]) == files(group), group
    assert set(sections["scale"]) == {"laptop", "paper"}


def test_help_hides_the_schemas_and_the_groups_presets_pick(help_text):
    sections = listed(help_text)
    assert "_schema" not in help_text
    assert not {"recipe", "recipe_scale"} & set(sections)
    choices = {choice for listed_choices in sections.values() for choice in listed_choices}
    assert not choices & (files("recipe") | files("recipe_scale"))


def test_only_the_internal_groups_are_left_out_of_the_help():
    groups = {path.name for path in CONF_DIR.iterdir() if path.is_dir()}
    assert groups - {group for group, _ in CHOICE_GROUPS} == {"hydra", "recipe", "recipe_scale"}


def test_hydras_own_help_is_still_there(tmp_path: Path):
    result = run_cli(["--hydra-help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--multirun" in result.stdout and "--shell-completion" in result.stdout


def test_hydras_own_config_prints_resolved_without_a_run_to_name(tmp_path: Path):
    """`--cfg hydra --resolve` shows Hydra's node alone: the folders the run's config would name
    are said in words, where they used to be a traceback."""
    result = run_cli(["--cfg", "hydra", "--resolve"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "dir: <the run directory its config names>" in result.stdout
    assert "dir: <the sweep folder its overrides name>" in result.stdout
    assert not (tmp_path / "outputs").exists()


def completions(line: str, cwd: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What bash offers for `line`: the installed completion function asks `-sc query=bash`
    with the shell's command line in COMP_LINE."""
    monkeypatch.setenv("COMP_LINE", line)
    result = run_cli(["-sc", "query=bash"], cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_shell_completion_completes_group_names_and_offers_no_schema(tmp_path, monkeypatch):
    assert "model=" in completions("vestige-run mod", tmp_path, monkeypatch)
    models = completions("vestige-run model=conv", tmp_path, monkeypatch)
    assert "model=convit_ti" in models
    assert models == sorted(f"model={name}" for name in files("model") if name.startswith("conv"))
