#!/usr/bin/env bash
# Create .venv (once) and install vestige with its pinned torch; sourced by demo.sh and test.sh.
# Re-running is cheap: pip runs again only when pyproject.toml has changed.
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
stamp="$root/.venv/.vestige-installed"
wanted="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "installing vestige and its dependencies into .venv (torch==2.14.1, torchvision==0.29.1)"
  # (some machines' pip.conf names local indexes that may be absent: drop those warnings)
  quiet_pip() { "$root/.venv/bin/python" -m pip install --quiet "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
  quiet_pip --upgrade pip
  quiet_pip -e "$root[test]"
  echo "$wanted" > "$stamp"
fi
