#!/usr/bin/env bash
# The first README command: set up .venv if needed, train the default run on the CPU
# (quarter-width ResNet-18 on built-in synthetic data), print its table, then write its report
# page and print where it is. Extra arguments are passed to both commands as Hydra overrides.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
.venv/bin/vestige-run "$@"
exec .venv/bin/vestige-run task=report "$@"
