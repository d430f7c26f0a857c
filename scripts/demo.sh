#!/usr/bin/env bash
# The first README command: set up .venv if needed, then train the default run on the CPU
# (quarter-width ResNet-18 on built-in synthetic data) and print its summary table.
# Extra arguments are passed to vestige-run as Hydra overrides.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
exec .venv/bin/vestige-run "$@"
