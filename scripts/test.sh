#!/usr/bin/env bash
# The second README command: set up .venv if needed, then run the whole test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -m "not integration" -x).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
