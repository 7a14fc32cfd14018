#!/usr/bin/env bash
# Print the path of a Python >= 3.12 interpreter: PATH first, then pyenv's versions.
# 3.12 is preferred (the worker image runs 3.12). Candidates are *run* (pyenv shims on PATH exist but fail unless a version is selected).
set -u
ok() { "$1" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; }
for c in python3.12 python3.13 python3.14 python3 python; do
  p=$(command -v "$c" 2>/dev/null) || continue
  if ok "$p"; then echo "$p"; exit 0; fi
done
root=${PYENV_ROOT:-$HOME/.pyenv}
for p in $(ls -d "$root"/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -V); do
  if ok "$p"; then echo "$p"; exit 0; fi
done
echo "error: no Python >= 3.12 found on PATH or under $root/versions." >&2
echo "Install one (e.g. 'pyenv install 3.12' or your OS package python3.12) and re-run." >&2
exit 1
