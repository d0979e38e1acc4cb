#!/usr/bin/env bash
# Create .venv with Python >= 3.12 (jwst 3.x needs it) and install jwstgal with its test tools.
# Idempotent: does nothing when .venv is already up to date with pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")"

find_python() {
  local c
  for c in "${PYTHON:-}" python3.12 python3.13 python3.14 python3; do
    [ -n "$c" ] || continue
    if "$c" -c 'import sys; sys.exit(not (3, 12) <= sys.version_info[:2] < (3, 15))' 2>/dev/null; then
      echo "$c"; return 0
    fi
  done
  # a pyenv shim that is not on the global version still has the interpreter on disk
  for c in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[234]*/bin/python3; do
    [ -x "$c" ] && { echo "$c"; return 0; }
  done
  return 1
}

stamp=.venv/.jwstgal-installed
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c 'import jwstgal' 2>/dev/null; then
  exit 0
fi
if [ ! -x .venv/bin/python ]; then
  py=$(find_python) || {
    echo "setup.sh: no Python 3.12-3.14 found (jwst 3.x needs >= 3.12). Install one, or set PYTHON=/path/to/python3.12" >&2
    exit 1
  }
  echo "setup.sh: creating .venv with $py ($("$py" --version))"
  "$py" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# setuptools prints an "Editable installation" notice (a generic reminder that folders named like
# the package shadow it) on every editable install; it is information, not a problem of this build
PYTHONWARNINGS="ignore:Editable installation" .venv/bin/python -m pip install --quiet -e ".[test]"
echo "$want" > "$stamp"
echo "setup.sh: .venv ready ($(.venv/bin/python --version); jwst $(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("jwst"))'))"
