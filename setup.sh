#!/usr/bin/env bash
# Create .venv with Python 3.12-3.14 (jwst 3.x needs >= 3.12) holding exactly the locked environment
# (requirements/lock.txt: every package pinned with its hashes) and jwstgal as an editable install.
#
#   bash setup.sh                 install or update .venv from the lock (does nothing when up to date)
#   bash setup.sh --relock        after editing pyproject.toml's requirements: re-resolve them into the
#                                 lock, keeping every pin that still fits, then install
#   bash setup.sh --upgrade-lock  re-resolve the whole lock to the newest versions the requirements
#                                 allow, then install (run the full test suite before committing it)
#
# The installer is uv when one is on PATH, else uv installed into .venv/tools from the pinned, hashed
# requirements/uv.txt; plain pip is the fallback (set JWSTGAL_INSTALLER=pip to force it; slower).
set -euo pipefail
cd "$(dirname "$0")"

LOCK=requirements/lock.txt
UV_LOCK=requirements/uv.txt
# the one command that writes the lock: universal (markers for every platform), with every hash
LOCK_ARGS=(pyproject.toml --extra test --extra cluster --extra docs --universal --python-version 3.12 --generate-hashes
           --no-strip-extras)  # pip's hash mode needs "dask[array]==..." where a package asks for dask[array]

die() { echo "setup.sh: $*" >&2; exit 1; }

mode=install
case "${1:-}" in
  "") ;;
  --relock) mode=relock ;;
  --upgrade-lock) mode=upgrade ;;
  -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "setup.sh: unknown option '$1' (allowed: --relock, --upgrade-lock, --help)" >&2; exit 2 ;;
esac
[ -f "$LOCK" ] || die "$LOCK is missing (a checkout always has it; 'git checkout $LOCK')"

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
want=$(cat pyproject.toml "$LOCK" | sha256sum | cut -c1-16)
if [ "$mode" = install ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
    && .venv/bin/python -c 'import jwstgal' 2>/dev/null; then
  exit 0
fi
start=$SECONDS
if [ ! -x .venv/bin/python ]; then
  py=$(find_python) || die "no Python 3.12-3.14 found (jwst 3.x needs >= 3.12). Install one, or set PYTHON=/path/to/python3.12"
  echo "setup.sh: creating .venv with $py ($("$py" --version))"
  "$py" -m venv .venv
fi

# uv: the one on PATH, else the pinned one (hash-checked) in .venv/tools; empty when pip is to be used
find_uv() {
  [ "${JWSTGAL_INSTALLER:-uv}" = pip ] && return 0
  if command -v uv >/dev/null 2>&1; then command -v uv; return 0; fi
  if [ ! -x .venv/tools/bin/uv ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
        --target .venv/tools -r "$UV_LOCK" >&2 \
      || { echo "setup.sh: could not install uv from $UV_LOCK; falling back to pip (slower)" >&2; return 0; }
  fi
  echo .venv/tools/bin/uv
}
uv=$(find_uv)
if [ "$mode" != install ]; then
  [ -n "$uv" ] || die "--relock needs uv (unset JWSTGAL_INSTALLER=pip, or put uv on PATH)"
  extra=(); [ "$mode" = upgrade ] && extra=(--upgrade)
  echo "setup.sh: resolving pyproject.toml into $LOCK${extra:+ (all packages at their newest)}"
  "$uv" pip compile "${LOCK_ARGS[@]}" "${extra[@]}" --quiet \
      --custom-compile-command "bash setup.sh --relock" -o "$LOCK"
  want=$(cat pyproject.toml "$LOCK" | sha256sum | cut -c1-16)
fi

# setuptools prints an "Editable installation" notice (a generic reminder that folders named like
# the package shadow it) on every editable install; it is information, not a problem of this build
export PYTHONWARNINGS="ignore:Editable installation"
if [ -n "$uv" ]; then
  echo "setup.sh: installing the locked environment with uv ($("$uv" --version))"
  # sync: exactly the lock's packages (a package dropped from the lock leaves .venv too)
  UV_LINK_MODE=${UV_LINK_MODE:-copy} "$uv" pip sync --quiet --python .venv/bin/python --require-hashes "$LOCK"
  # jwstgal itself, built with the locked setuptools (no unpinned build environment)
  UV_LINK_MODE=${UV_LINK_MODE:-copy} "$uv" pip install --quiet --python .venv/bin/python --no-deps \
      --no-build-isolation -e .
else
  echo "setup.sh: installing the locked environment with pip"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes -r "$LOCK"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
fi
# every installed package's requirements are met (a lock edited by hand would show here)
.venv/bin/python -m pip check --disable-pip-version-check >/dev/null \
  || { .venv/bin/python -m pip check; die "the installed environment is inconsistent (see above)"; }
echo "$want" > "$stamp"
echo "setup.sh: .venv ready in $((SECONDS - start)) s ($(.venv/bin/python --version); jwst $(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("jwst"))'))"
