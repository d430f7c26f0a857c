"""The benchmark scripts keep up with the package: each imports what it uses and parses its
arguments (a benchmark nobody can start measures nothing). Their figures are not tested here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).parents[1] / "scripts").glob("bench_*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.stem)
def test_every_benchmark_starts_and_describes_its_options(script):
    result = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:") and "--" in result.stdout


def test_there_are_benchmarks_to_check():
    assert len(SCRIPTS) >= 4
