#!/usr/bin/env bash
# The second README command: set up .venv if needed, then run the whole test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -m "not integration" -x).
# Tests run in one more worker process than the machine has cores (pytest-xdist), each test's
# torch on one thread: many tests wait on subprocesses, SLURM or the disk, and the others fill
# those waits. A module's tests share one worker (--dist loadscope), so its module-scoped fixtures
# (tiny trainings) run once, not once per worker. VESTIGE_TEST_WORKERS=0 runs them in this one
# process.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec .venv/bin/python -m pytest -n "${VESTIGE_TEST_WORKERS:-$(($(nproc) + 1))}" --dist loadscope "$@"
