#!/usr/bin/env bash
# The Python package's checks, run from .ci/run: ruff, mypy --strict and
# pytest against the real daemon on every Python from 3.10 to 3.12 found
# here (pyenv's, or one on PATH). Needs `cargo build` done (target/debug).
set -euo pipefail
cd "$(dirname "$0")"
command -v uv >/dev/null 2>&1 || python3 -m pip install -q uv
export UV_PYTHON_DOWNLOADS=never
venvs="${PY_VENVS:-$(cd .. && pwd)/target/py-venvs}"

interpreter() {
  local version=$1 root
  root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
  for candidate in "$root"/versions/"$version".*/bin/python"$version"; do
    [ -x "$candidate" ] && { echo "$candidate"; return; }
  done
  command -v "python$version" 2>/dev/null || uv python find "$version" 2>/dev/null || true
}

tested=0
for version in 3.10 3.11 3.12; do
  python=$(interpreter "$version")
  if [ -z "$python" ]; then
    echo "python $version: no interpreter on this machine, skipped"
    continue
  fi
  venv="$venvs/$version"
  [ -x "$venv/bin/python" ] || uv venv -q --python "$python" "$venv"
  uv pip install -q --python "$venv/bin/python" '.[test,lint]'
  if [ "$version" = 3.12 ]; then
    echo "== ruff, mypy --strict (python $version)"
    "$venv/bin/ruff" check . && "$venv/bin/ruff" format --check .
    "$venv/bin/mypy" --strict src tests
  fi
  echo "== pytest (python $version)"
  "$venv/bin/python" -m pytest -q -p no:cacheprovider tests
  tested=$((tested + 1))
done
[ "$tested" -gt 0 ] || { echo "no Python 3.10-3.12 found" >&2; exit 1; }
