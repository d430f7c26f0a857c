"""The files that make the repository citable and installable agree with each other: the
citation metadata is complete, the license is the one pyproject.toml declares, and the version
and the tested torch are written the same way everywhere."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

import vestige

ROOT = Path(__file__).parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_citation_has_the_fields_cff_requires_and_every_reference_is_complete():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0"
    assert citation["message"].strip() and citation["title"].strip()
    assert citation["authors"] == [{"name": "the vestige authors"}]
    assert str(citation["date-released"]) == "2026-12-01"
    assert len(citation["references"]) == 6
    for reference in citation["references"]:
        assert {"type", "title", "authors", "year"} <= set(reference), reference.get("title")
        assert all(a.get("family-names") or a.get("name") for a in reference["authors"])
        assert isinstance(reference["year"], int)


def test_the_version_is_the_same_in_the_package_its_metadata_citation_and_changelog():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    released = re.findall(r"^## \[(\d[^\]]*)\]", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert PYPROJECT["project"]["version"] == vestige.__version__
    assert citation["version"] == vestige.__version__ == released[0]


def test_the_declared_license_is_the_one_in_the_license_file():
    first_line = (ROOT / "LICENSE").read_text().splitlines()[0]
    assert first_line == f"{PYPROJECT['project']['license']} License"
    assert yaml.safe_load((ROOT / "CITATION.cff").read_text())["license"] == "MIT"


def test_the_pinned_torch_is_accepted_by_the_package_metadata_and_named_in_the_readme():
    lines = (ROOT / "scripts" / "constraints.txt").read_text().splitlines()
    pins = [Requirement(line) for line in lines if line and not line.startswith("#")]
    declared = {r.name: r for r in map(Requirement, PYPROJECT["project"]["dependencies"])}
    assert [pin.name for pin in pins] == ["torch", "torchvision"]
    for pin in pins:
        (exact,) = pin.specifier
        assert exact.operator == "=="
        assert declared[pin.name].specifier.contains(exact.version)
        assert f"`{pin}`" in (ROOT / "README.md").read_text()  # what the first call installs


def test_pre_commit_runs_ruff_check_only_without_fixes_or_the_formatter():
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = {hook["id"]: hook for repo in config["repos"] for hook in repo["hooks"]}
    assert "ruff-check" in hooks and "ruff-format" not in hooks
    assert "--fix" not in hooks["ruff-check"].get("args", [])
    assert {"trailing-whitespace", "end-of-file-fixer", "check-yaml"} <= set(hooks)
