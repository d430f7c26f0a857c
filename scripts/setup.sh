#!/usr/bin/env bash
# Create .venv (once) and install vestige with the tested torch and torchvision, pinned in
# scripts/constraints.txt; sourced by demo.sh and test.sh. Re-running is cheap: pip runs again
# only when pyproject.toml, constraints.txt or VESTIGE_TORCH_INDEX has changed.
# VESTIGE_TORCH_INDEX=<index URL> takes torch and torchvision from that pip index instead, e.g.
# https://download.pytorch.org/whl/cpu for PyTorch's CPU-only build (into a new .venv: pip keeps
# a torch that is already installed).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "error: vestige needs Python 3.11 or newer; $python is $("$python" --version 2>&1): set PYTHON=/path/to/python3.11" >&2
  exit 2
fi
if [ ! -x "$root/.venv/bin/python" ]; then
  echo "creating $root/.venv with $("$python" --version)"
  "$python" -m venv "$root/.venv"
fi
constraints="$root/scripts/constraints.txt"
stamp="$root/.venv/.vestige-installed"
wanted="$( { cat "$root/pyproject.toml" "$constraints"; echo "${VESTIGE_TORCH_INDEX:-}"; } | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "installing vestige and its dependencies into .venv ($(grep -v '^#' "$constraints" | xargs))"
  # (some machines' pip.conf names local indexes that may be absent: drop those warnings)
  quiet_pip() { "$root/.venv/bin/python" -m pip install --quiet "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
  quiet_pip --upgrade pip
  if [ -n "${VESTIGE_TORCH_INDEX:-}" ]; then
    quiet_pip -c "$constraints" --index-url "$VESTIGE_TORCH_INDEX" torch torchvision
  fi
  quiet_pip -c "$constraints" -e "$root[test]"
  echo "$wanted" > "$stamp"
fi
